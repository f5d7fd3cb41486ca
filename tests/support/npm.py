"""Node.js tools the test tiers run (the TimescaleDB WASM server, node-opcua): found, and installed with `npm ci`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.postgres import ServiceUnavailable

INSTALL_TIMEOUT_S = 600.0


def node_tool(name: str, tier: str) -> str:
    """The path of `node` or `npm`; ServiceUnavailable (the tier fails, never skips) when it is missing."""
    found = shutil.which(name)
    if found is None:
        raise ServiceUnavailable(f"{name} not found: the {tier} tier needs Node.js 20+ with npm")
    return found


def installed(folder: Path) -> bool:
    """Whether `npm ci` completed in `folder` after its lock file last changed.

    npm writes node_modules/.package-lock.json last, so a half-finished install does not count; a lock file changed
    since (a version bump) means installing again.
    """
    marker = folder / "node_modules" / ".package-lock.json"
    lock = folder / "package-lock.json"
    return marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime


def npm_ci(folder: Path, tier: str) -> None:
    """Install the pinned packages of `folder` (`npm ci`) unless they are installed already."""
    if installed(folder):
        return
    npm = node_tool("npm", tier)
    try:
        result = subprocess.run(  # noqa: S603 -- fixed arguments, no shell
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=folder,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(f"npm ci in {folder} took longer than {INSTALL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise ServiceUnavailable(f"npm ci in {folder} failed ({result.returncode}):\n{output}")
