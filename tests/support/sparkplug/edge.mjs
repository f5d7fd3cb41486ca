// A Sparkplug B edge node built on Eclipse Tahu's JavaScript client (sparkplug-client from npm), for the
// interoperability tier (tests/support/sparkplug.py). It runs one scenario and prints what it publishes:
//
//   node edge.mjs MQTT_URL LOGIN PASSWORD GROUP DEVICE MESSAGES
//
// connect (edge node id = client id = LOGIN) -> NBIRTH + DBIRTH -> MESSAGES x DDATA (metrics by alias) -> one DDATA
// after a skipped seq number (a forced gap) -> wait for the host's NCMD "Node Control/Rebirth" -> NBIRTH + DBIRTH
// again -> MESSAGES x DDATA -> DDEATH -> NDEATH (client.stop with publishDeath) -> exit 0.
//
// Lines on stdout: `READY`, `PUBLISHED <json>` ({"kind", "seq", "device", "metrics": [{"name", "ts", "value"}]}),
// `REBIRTH` when the request arrives, `DONE`. Anything going wrong exits non-zero with the reason on stderr.
import sparkplug from "sparkplug-client";

const [url, login, password, group, device, messagesArg] = process.argv.slice(2);
const messages = Number.parseInt(messagesArg ?? "10", 10);
const REBIRTH_TIMEOUT_MS = 30000;
const PAUSE_MS = 20;

const client = sparkplug.newClient({
  serverUrl: url,
  username: login,
  password,
  clientId: login,
  groupId: group,
  edgeNode: login,
  publishDeath: true,
  keepalive: 5,
});

let clock = Date.now() - 60000;
let counter = 1000;
let phase = "start";
// Values change with each message: (tag, ts, value) triples are unique, so the test can compare sets.
function tick() {
  clock += 10;
  counter += 1;
  return clock;
}

function print(kind, payload, dev) {
  const metrics = payload.metrics.map((m) => ({ name: m.name ?? null, alias: m.alias ?? null, ts: m.timestamp ?? payload.timestamp, value: m.value, type: m.type }));
  process.stdout.write(`PUBLISHED ${JSON.stringify({ kind, seq: client.seq - 1, device: dev ?? null, metrics })}\n`);
}

function nodeBirth() {
  const ts = tick();
  const payload = {
    timestamp: ts,
    metrics: [
      { name: "Node Control/Rebirth", type: "Boolean", value: false },
      { name: "Edge/CPU Load", alias: 100, type: "Float", value: (counter % 100) + 0.25, timestamp: ts },
    ],
  };
  client.publishNodeBirth(payload);
  print("NBIRTH", payload);
}

function deviceBirth() {
  const ts = tick();
  const payload = {
    timestamp: ts,
    metrics: [
      { name: "Barrel/Temperature", alias: 1, type: "Double", value: 200 + (counter % 50) + 0.5, timestamp: ts },
      { name: "Cycle Count", alias: 2, type: "Int32", value: counter, timestamp: ts },
      { name: "Running", alias: 3, type: "Boolean", value: true, timestamp: ts },
      { name: "state", alias: 4, type: "String", value: "running", timestamp: ts },
      { name: "Recipe", alias: 5, type: "String", value: "PART-42", timestamp: ts },
      { name: "Offset", alias: 6, type: "Int16", value: -5, timestamp: ts },
      { name: "Pressure", alias: 7, type: "Float", value: 12.5, timestamp: ts,
        properties: { Quality: { type: "Int32", value: 64 } } },
      { name: "Sensor", alias: 8, type: "Double", value: null, timestamp: ts },
    ],
  };
  client.publishDeviceBirth(device, payload);
  print("DBIRTH", payload, device);
}

function deviceData() {
  const ts = tick();
  const payload = {
    timestamp: ts,
    metrics: [
      { alias: 1, type: "Double", value: 200 + (counter % 50) + 0.75, timestamp: ts },
      { alias: 2, type: "Int32", value: counter, timestamp: ts },
      { alias: 3, type: "Boolean", value: counter % 2 === 0, timestamp: ts },
      { alias: 6, type: "Int16", value: -(counter % 30), timestamp: ts },
    ],
  };
  client.publishDeviceData(device, payload);
  print("DDATA", payload, device);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function dataRun() {
  for (let index = 0; index < messages; index += 1) {
    deviceData();
    await sleep(PAUSE_MS);
  }
}

function fail(reason) {
  process.stderr.write(`${reason}\n`);
  process.exit(2);
}

let rebirthRequested = null;
const rebirth = new Promise((resolve) => {
  rebirthRequested = resolve;
});

client.on("error", (error) => fail(`mqtt error: ${error}`));
client.on("ncmd", (payload) => {
  const asked = (payload.metrics ?? []).some((m) => m.name === "Node Control/Rebirth" && m.value === true);
  if (asked && phase === "gap") {
    process.stdout.write("REBIRTH\n");
    nodeBirth();
    deviceBirth();
    rebirthRequested();
  }
});

client.on("birth", async () => {
  if (phase !== "start") {
    return; // a reconnect: the scenario goes on as it is
  }
  phase = "running";
  process.stdout.write("READY\n");
  nodeBirth();
  deviceBirth();
  await sleep(PAUSE_MS);
  await dataRun();
  // The forced gap: one sequence number is never published.
  client.seq += 1;
  phase = "gap";
  deviceData();
  const timer = setTimeout(() => fail("no Rebirth request within the time limit"), REBIRTH_TIMEOUT_MS);
  await rebirth;
  clearTimeout(timer);
  phase = "reborn";
  await sleep(PAUSE_MS);
  await dataRun();
  const ts = tick();
  const death = { timestamp: ts, metrics: [] };
  client.publishDeviceDeath(device, death);
  process.stdout.write(`PUBLISHED ${JSON.stringify({ kind: "DDEATH", seq: client.seq - 1, device, metrics: [] })}\n`);
  await sleep(PAUSE_MS);
  client.stop();
  process.stdout.write(`PUBLISHED ${JSON.stringify({ kind: "NDEATH", seq: null, device: null, metrics: [] })}\n`);
  process.stdout.write("DONE\n");
  setTimeout(() => process.exit(0), 200);
});
