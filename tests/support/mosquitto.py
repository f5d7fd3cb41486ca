"""A throwaway Mosquitto for tests: OUR config, ACL and password script, as a plain process on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.postgres import ServiceUnavailable, free_port

MOSQUITTO_DIR = Path(__file__).resolve().parents[2] / "mosquitto"
CONFIG_FILE = MOSQUITTO_DIR / "mosquitto.conf"
ACL_FILE = MOSQUITTO_DIR / "acl"
MAKE_PASSWD = MOSQUITTO_DIR / "make-passwd.sh"

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
INGESTOR_USER = "ingestor"
# Passwords of at least 12 characters, as make-passwd.sh demands.
DEFAULT_USERS = {INGESTOR_USER: "ingestor-test-secret", "s1": "s1-test-secret-01", "s2": "s2-test-secret-02"}
# Debian puts the broker in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _mosquitto_binary() -> Path:
    found = shutil.which("mosquitto", path=SEARCH_PATH)
    if found is None:
        raise ServiceUnavailable("mosquitto not found: apt-get install -y mosquitto mosquitto-clients")
    return Path(found)


def _replace_options(text: str, replacements: dict[str, str | None]) -> str:
    """Replace whole `option value` lines of a mosquitto.conf; None drops the option.

    Every option named must occur exactly once, so a renamed or duplicated line in our config fails the
    tests instead of silently testing something else.
    """
    seen = dict.fromkeys(replacements, 0)
    lines = []
    for line in text.splitlines():
        option = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if option in replacements:
            seen[option] += 1
            value = replacements[option]
            if value is not None:
                lines.append(f"{option} {value}")
            continue
        lines.append(line)
    wrong = {option: count for option, count in seen.items() if count != 1}
    if wrong:
        raise ValueError(f"{CONFIG_FILE} must set each of these options exactly once: {wrong}")
    return "\n".join(lines) + "\n"


def _chown_to_broker(*paths: Path) -> None:
    # Started as root, Mosquitto drops to user `mosquitto` before it opens the password file, the ACL and
    # the persistence folder ("Unable to open pwfile" otherwise). Not root: it runs as us and owns them already.
    if os.geteuid() != 0:
        return
    for path in paths:
        shutil.chown(path, "mosquitto", "mosquitto")


def make_password_file(path: Path, users: dict[str, str]) -> None:
    """Run OUR make-passwd.sh, passing `ingestor` and every site user through its environment variables."""
    env = {"PATH": SEARCH_PATH}
    if INGESTOR_USER in users:
        env["MQTT_INGESTOR_PASSWORD"] = users[INGESTOR_USER]
    sites = [f"{name}:{password}" for name, password in users.items() if name != INGESTOR_USER]
    if sites:
        env["MQTT_SITE_PASSWORDS"] = ",".join(sites)
    result = subprocess.run(  # noqa: S603 -- our own script, fixed arguments, no shell
        ["/bin/sh", str(MAKE_PASSWD), str(path)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceUnavailable(f"make-passwd.sh failed ({result.returncode}): {result.stderr.strip()}")


@dataclass
class MosquittoBroker:
    """A broker process on `host:port`; `users` maps each username to its password."""

    host: str
    port: int
    users: dict[str, str]
    config_file: Path
    log_file: Path
    executable: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_handle: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """Everything the broker logged so far (across restarts)."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> None:
        """Start the broker (same config, port and persistence folder as before) and wait until it listens."""
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self._log_handle = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(  # noqa: S603 -- fixed binary and our own config, no shell
                [str(self.executable), "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
            )
        except OSError as error:
            self._close_log()
            raise ServiceUnavailable(f"mosquitto could not be started: {error}") from None
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._accepts_connections():
            if self._process.poll() is not None:
                code = self._process.returncode
                self._close_log()
                raise ServiceUnavailable(f"mosquitto exited with status {code} at start:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceUnavailable(
                    f"mosquitto did not listen on {self.host}:{self.port} within {START_TIMEOUT_S} s:\n"
                    f"{self.log()[-3000:]}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its persistence file on the way out) and wait for the exit."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._close_log()

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None


@contextlib.contextmanager
def running_mosquitto(
    *, users: dict[str, str] | None = None, anonymous: bool = False, extra_config: str = ""
) -> Iterator[MosquittoBroker]:
    """Start Mosquitto with our production config (paths, listener and log destination replaced).

    By default the real security applies: our ACL and a password file made by our make-passwd.sh from
    `users` (default DEFAULT_USERS). `anonymous=True` drops password file and ACL and allows anonymous
    clients, for load tests that are about throughput, not security. `extra_config` lines are appended.
    The broker is stopped and its folder removed at exit; ServiceUnavailable if it cannot start.
    """
    executable = _mosquitto_binary()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-mqtt-"))
    try:
        config_dir, data_dir = root / "config", root / "data"
        config_dir.mkdir()
        data_dir.mkdir()
        port = free_port()
        replacements: dict[str, str | None] = {
            "listener": f"{port} {HOST}",
            "persistence_location": f"{data_dir}/",
            # stdout is block-buffered when redirected; stderr reaches the log file as it is written.
            "log_dest": "stderr",
        }
        if anonymous:
            users = {}
            replacements |= {"allow_anonymous": "true", "password_file": None, "acl_file": None}
        else:
            users = dict(DEFAULT_USERS if users is None else users)
            password_file, acl_file = config_dir / "passwd", config_dir / "acl"
            make_password_file(password_file, users)
            shutil.copyfile(ACL_FILE, acl_file)
            replacements |= {"password_file": str(password_file), "acl_file": str(acl_file)}
        config_text = _replace_options(CONFIG_FILE.read_text(), replacements)
        config_file = config_dir / "mosquitto.conf"
        config_file.write_text(config_text + extra_config + ("\n" if extra_config else ""))
        _chown_to_broker(root, *root.rglob("*"))
        broker = MosquittoBroker(
            host=HOST,
            port=port,
            users=users,
            config_file=config_file,
            log_file=root / "mosquitto.log",
            executable=executable,
        )
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
