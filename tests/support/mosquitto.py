"""A throwaway Mosquitto for tests: OUR config and logins script, as a plain process on a free port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tests.support.postgres import ServiceUnavailable, free_port

MOSQUITTO_DIR = Path(__file__).resolve().parents[2] / "mosquitto"
CONFIG_FILE = MOSQUITTO_DIR / "mosquitto.conf"
MAKE_LOGINS = MOSQUITTO_DIR / "make-logins.sh"
MAKE_CERTS = MOSQUITTO_DIR / "make-certs.sh"
# The listeners of our config by port: plain, TLS with passwords, TLS with client certificates.
PLAIN_LISTENER, TLS_LISTENER, CERT_LISTENER = "1883", "8883", "8884"
# Where our config expects the certificates; the tests put them into the broker's temporary folder instead.
CERTS_PREFIX = "/mosquitto/config/certs/"
# The names the tests connect to, for the server certificate's subjectAltName (the client checks them).
SERVER_NAMES = "127.0.0.1,localhost"

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
INGESTOR_USER = "ingestor"
API_USER = "shopfloor-api"
# Passwords of at least 12 characters, as make-logins.sh demands. Every other login is a gateway login of the site
# named in `sites` (default: the site with the login's own name); its client id must be the login.
DEFAULT_USERS = {INGESTOR_USER: "ingestor-test-secret", "s1": "s1-test-secret-01", "s2": "s2-test-secret-02"}
# Where Debian's package and the eclipse-mosquitto image put the dynamic security plugin.
PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so")
# Debian puts the broker in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])


def _mosquitto_binary() -> Path:
    found = shutil.which("mosquitto", path=SEARCH_PATH)
    if found is None:
        raise ServiceUnavailable("mosquitto not found: apt-get install -y mosquitto mosquitto-clients")
    return Path(found)


def _dynsec_plugin() -> Path:
    for pattern in PLUGIN_GLOBS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    raise ServiceUnavailable("mosquitto_dynamic_security.so not found: apt-get install -y mosquitto")


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


def _place_listeners(text: str, ports: dict[str, str], certs: Path) -> str:
    """Move each `listener PORT` of our config to `ports[PORT]` and its certificate files into `certs`.

    Every listener named must occur exactly once, and there must be no other, so a listener added to or dropped
    from the config fails the tests until they know about it.
    """
    seen: list[str] = []
    lines = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["listener"]:
            seen.append(words[1])
            line = f"listener {ports[words[1]]}" if words[1] in ports else line
        elif words[:1] in (["cafile"], ["certfile"], ["keyfile"]) and words[1].startswith(CERTS_PREFIX):
            line = f"{words[0]} {certs / words[1].removeprefix(CERTS_PREFIX)}"
        lines.append(line)
    if sorted(seen) != sorted(ports):
        raise ValueError(f"{CONFIG_FILE} must have exactly the listeners {sorted(ports)}, found {seen}")
    return "\n".join(lines) + "\n"


def make_certificates(folder: Path, clients: list[str], *, server_names: str = SERVER_NAMES) -> None:
    """Run OUR make-certs.sh: a CA (kept if there is one), the broker's certificate, one certificate per client."""
    env = {"PATH": SEARCH_PATH, "MQTT_SERVER_NAMES": server_names}
    result = subprocess.run(  # noqa: S603 -- our own script, fixed arguments, no shell
        ["/bin/sh", str(MAKE_CERTS), str(folder), *clients], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceUnavailable(f"make-certs.sh failed ({result.returncode}): {result.stderr.strip()}")
    _chown_to_broker(folder, *folder.iterdir())


def _chown_to_broker(*paths: Path) -> None:
    # Started as root, Mosquitto drops to user `mosquitto` before it opens the password file, the ACL and
    # the persistence folder ("Unable to open pwfile" otherwise). Not root: it runs as us and owns them already.
    if os.geteuid() != 0:
        return
    for path in paths:
        shutil.chown(path, "mosquitto", "mosquitto")


def make_logins_file(
    path: Path, users: dict[str, str], sites: dict[str, str] | None = None, ingestor_groups: Sequence[str] = ()
) -> None:
    """Run OUR make-logins.sh: `ingestor`, `shopfloor-api` (the API's login), and every other user as a gateway
    login of its site (`sites` may add the machines whose commands it takes: `site/m1+m2`)."""
    env = {"PATH": SEARCH_PATH}
    if ingestor_groups:
        env["MQTT_INGESTOR_GROUPS"] = ",".join(ingestor_groups)
    if INGESTOR_USER in users:
        env["MQTT_INGESTOR_PASSWORD"] = users[INGESTOR_USER]
    if API_USER in users:
        env["MQTT_API_PASSWORD"] = users[API_USER]
    sites = sites or {}
    logins = [
        f"{name}@{sites.get(name, name)}:{password}"
        for name, password in users.items()
        if name not in (INGESTOR_USER, API_USER)
    ]
    if logins:
        env["MQTT_GATEWAY_LOGINS"] = ",".join(logins)
    result = subprocess.run(  # noqa: S603 -- our own script, fixed arguments, no shell
        ["/bin/sh", str(MAKE_LOGINS), str(path)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceUnavailable(f"make-logins.sh failed ({result.returncode}): {result.stderr.strip()}")


@dataclass
class MosquittoBroker:
    """A broker process on `host:port`; `users` maps each username to its password.

    `tls_port` is the TLS listener with passwords, `cert_port` the one with client certificates; `certs` holds
    ca.crt and a NAME.crt / NAME.key per user (Common Name = the username), made by our make-certs.sh.
    """

    host: str
    port: int
    users: dict[str, str]
    config_file: Path
    log_file: Path
    executable: Path
    tls_port: int
    cert_port: int
    certs: Path
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
    *,
    users: dict[str, str] | None = None,
    sites: dict[str, str] | None = None,
    ingestor_groups: Sequence[str] = (),
    anonymous: bool = False,
    extra_config: str = "",
) -> Iterator[MosquittoBroker]:
    """Start Mosquitto with our production config (paths, listener and log destination replaced).

    By default the real security applies: the dynamic security plugin with the logins file made by our
    make-logins.sh from `users` (default DEFAULT_USERS). `sites` maps a gateway login to its site (default: its own
    name); `ingestor_groups` names the shared groups the ingestor may join (default `ingestors`).
    `anonymous=True` drops the plugin and allows anonymous clients, for load tests that are about throughput, not
    security. `extra_config` lines are appended.
    Every listener of the config gets a free port (`port`, `tls_port`, `cert_port`); the certificates of the TLS
    listeners are made by our make-certs.sh in the broker's folder, with one client certificate per user.
    The broker is stopped and its folder removed at exit; ServiceUnavailable if it cannot start.
    """
    executable = _mosquitto_binary()
    root = Path(tempfile.mkdtemp(prefix="shopfloor-mqtt-"))
    try:
        config_dir, data_dir, certs_dir = root / "config", root / "data", root / "config" / "certs"
        config_dir.mkdir()
        data_dir.mkdir()
        ports: set[int] = set()
        while len(ports) < 3:  # three distinct ports, or the broker could not bind them all
            ports.add(free_port())
        port, tls_port, cert_port = sorted(ports)
        listeners = {PLAIN_LISTENER: f"{port} {HOST}", TLS_LISTENER: f"{tls_port} {HOST}"}
        listeners[CERT_LISTENER] = f"{cert_port} {HOST}"
        replacements: dict[str, str | None] = {
            "persistence_location": f"{data_dir}/",
            # stdout is block-buffered when redirected; stderr reaches the log file as it is written.
            "log_dest": "stderr",
        }
        if anonymous:
            users = {}
            replacements |= {"allow_anonymous": "true", "plugin": None, "plugin_opt_config_file": None}
        else:
            users = dict(DEFAULT_USERS if users is None else users)
            logins_file = config_dir / "dynamic-security.json"
            make_logins_file(logins_file, users, sites, ingestor_groups)
            replacements |= {"plugin": str(_dynsec_plugin()), "plugin_opt_config_file": str(logins_file)}
        make_certificates(certs_dir, sorted({INGESTOR_USER, *users}))
        config_text = _place_listeners(_replace_options(CONFIG_FILE.read_text(), replacements), listeners, certs_dir)
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
            tls_port=tls_port,
            cert_port=cert_port,
            certs=certs_dir,
        )
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
