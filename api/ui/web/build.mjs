// Bundles src/ into ../static: content-hashed assets (served as immutable) and an index.html that names them;
// copies Swagger UI's files from swagger-ui-dist into ../static/api-docs (served by api/ui/docs.py).
import { copyFile, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const outDir = path.resolve(here, "..", "static");
const assetsDir = path.join(outDir, "assets");
const PUBLIC_PATH = "/ui/assets";
const docsDir = path.join(outDir, "api-docs");
const swaggerDist = path.dirname(createRequire(import.meta.url).resolve("swagger-ui-dist/package.json"));
// name in swagger-ui-dist -> name served; the set ASSETS of api/ui/docs.py lists the names served.
const SWAGGER_FILES = {
  "swagger-ui-bundle.js": "swagger-ui-bundle.js",
  "swagger-ui-bundle.js.LICENSE.txt": "swagger-ui-bundle.js.LICENSE.txt",
  "swagger-ui.css": "swagger-ui.css",
  "favicon-32x32.png": "favicon-32x32.png",
  LICENSE: "LICENSE.txt",
  NOTICE: "NOTICE.txt",
};
const UPLOT_NOTICE =
  "/*! Includes uPlot (MIT License), Copyright (c) 2025 Leon Sorokin, https://github.com/leeoniya/uPlot */";

await rm(outDir, { recursive: true, force: true });
await mkdir(assetsDir, { recursive: true });
await mkdir(docsDir, { recursive: true });

const result = await esbuild.build({
  entryPoints: [path.join(here, "src", "main.js")],
  bundle: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  minify: true,
  sourcemap: "linked",
  entryNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  outdir: assetsDir,
  publicPath: PUBLIC_PATH,
  metafile: true,
  // uPlot's MIT notice is a plain comment, which minifying drops: keep it as a banner.
  banner: { js: UPLOT_NOTICE, css: UPLOT_NOTICE },
  logLevel: "warning",
});

let script;
let stylesheet;
for (const [file, meta] of Object.entries(result.metafile.outputs)) {
  if (!meta.entryPoint) continue;
  script = path.basename(file);
  if (meta.cssBundle) stylesheet = path.basename(meta.cssBundle);
}
if (!script || !stylesheet) throw new Error("esbuild produced no script or no stylesheet");

const template = await readFile(path.join(here, "index.html"), "utf8");
const html = template
  .replace("%SCRIPT%", `${PUBLIC_PATH}/${script}`)
  .replace("%STYLESHEET%", `${PUBLIC_PATH}/${stylesheet}`);
if (/%(SCRIPT|STYLESHEET)%/.test(html)) throw new Error("index.html still holds a placeholder");
await writeFile(path.join(outDir, "index.html"), html);
for (const [from, to] of Object.entries(SWAGGER_FILES)) {
  await copyFile(path.join(swaggerDist, from), path.join(docsDir, to));
}
console.log(`operator view built: ${path.relative(process.cwd(), outDir)} (${script}, ${stylesheet})`);
