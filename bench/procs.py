"""What the benchmarks share: CPU time and peak memory from /proc, py-spy profiles, the machine they ran on."""

from __future__ import annotations

import http.client
import os
import platform
import shutil
import signal
import subprocess
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchFailure(RuntimeError):
    """The run could not measure what it should (a process died, readings never arrived)."""


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of a process so far (plus that of its children that exited, if asked)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of proc(5)
    used = int(fields[11]) + int(fields[12])
    if reaped_children:
        used += int(fields[13]) + int(fields[14])
    return used / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise BenchFailure(f"no VmHWM for pid {pid}")


def start_py_spy(pid: int, output: Path, duration_s: float, *, bench: str) -> subprocess.Popen[bytes]:
    """Sample a process with py-spy (run the bench under `uv run --with py-spy`) into collapsed stacks."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise BenchFailure(f"--py-spy needs py-spy on PATH: uv run --with py-spy python -m {bench} …")
    command = [binary, "record", "--pid", str(pid), "--format", "raw", "--rate", "200", "--nonblocking"]
    command += ["--duration", str(int(duration_s)), "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: S603 -- fixed tool, no shell


def stop_py_spy(profiler: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write what it sampled and exit."""
    if profiler.poll() is None:
        profiler.send_signal(signal.SIGINT)
    try:
        profiler.wait(timeout=60)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()


def machine_facts() -> dict[str, str]:
    """The cores (with the CPU model) and the Python a run measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.machine(),
    )
    return {"cores": f"{os.cpu_count()} ({cpu})", "Python": platform.python_version()}


def mosquitto_version(executable: Path) -> str:
    """What `mosquitto -h` says of its version."""
    banner = subprocess.run(  # noqa: S603 -- the broker binary the benchmark started
        [str(executable), "-h"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    return banner[0].removeprefix("mosquitto version ") if banner else "?"


def scrape_metrics(host: str, port: int) -> dict[str, float]:
    """A process's Prometheus metrics, as a scraper sees them: sample name (with labels) -> value."""
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        body = connection.getresponse().read().decode()
    finally:
        connection.close()
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def terminate(process: subprocess.Popen[bytes], name: str, timeout_s: float) -> int:
    """SIGTERM, then its exit status; killed, and BenchFailure, when it does not stop within `timeout_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise BenchFailure(f"{name} did not stop within {timeout_s} s of SIGTERM") from None
