"""requirements.txt (for plants that install with pip) is exactly what uv exports from uv.lock today."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def export_command() -> list[str]:
    """`uv` plus the arguments the Makefile's `requirements` target uses."""
    uv = os.environ.get("UV") or shutil.which("uv")
    assert uv, "uv is not on PATH: run `make install`"
    match = re.search(r"^REQUIREMENTS_EXPORT = (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile has no REQUIREMENTS_EXPORT"
    return [uv, *match.group(1).split()]


def test_requirements_txt_matches_the_lock_file() -> None:
    exported = subprocess.run(  # noqa: S603 -- uv with the Makefile's fixed arguments
        export_command(), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert exported.returncode == 0, exported.stderr
    written = (ROOT / "requirements.txt").read_text()
    assert written == exported.stdout, "requirements.txt is out of date: run `make requirements`"
    assert "--hash=sha256:" in written  # pip installs it with --require-hashes
