"""A real Mosquitto broker for the tests and benchmark/streams.py: 127.0.0.1 only, its own folder.

:class:`Mosquitto` writes a config (one listener on 127.0.0.1 at a free port,
anonymous clients, no persistence unless asked; optionally a second, TLS,
listener with a self-signed certificate from :func:`self_signed`), starts
``mosquitto`` and waits until the ports answer; stop() ends it (SIGTERM),
start() again restarts it on the same port, and leaving the ``with`` block
always stops it. The tests skip, with the reason, when the binary is missing
(``.ci/run`` installs Debian's ``mosquitto``).
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from mobileface.errors import MobileFaceError

BINARY = "mosquitto"
SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def mosquitto_binary() -> str:
    """The broker's path (MobileFaceError with the reason when it is not installed)."""
    path = shutil.which(BINARY, path=SEARCH)
    if path is None:
        raise MobileFaceError("the mosquitto broker is not installed (Debian: apt-get install "
                              "mosquitto)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (openssl; MobileFaceError without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MobileFaceError("openssl is not installed (it makes the TLS test's certificate)")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Mosquitto:
    """One broker in ``root``; ``persistence``: keep retained messages and persistent
    sessions across stop() and start() (saved in ``root`` when it stops); ``tls``:
    (certificate, key) of a second listener, for mqtts:// (:attr:`tls_url`)."""

    def __init__(self, root: str | os.PathLike, persistence: bool = False,
                 tls: tuple[Path, Path] | None = None):
        self.binary = mosquitto_binary()
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.root / "mosquitto.log"
        self.config = self.root / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {self.root}/",
                 # run as whoever runs the tests (as root it would switch to "mosquitto",
                 # who cannot enter a private temporary folder)
                 f"user {pwd.getpwuid(os.getuid()).pw_name}"]
        self.tls_port = None
        if tls is not None:
            self.tls_port = free_port()
            lines += [f"listener {self.tls_port} 127.0.0.1", f"certfile {tls[0]}",
                      f"keyfile {tls[1]}"]
        self.config.write_text("\n".join(lines) + "\n")
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> "Mosquitto":
        """Start it and wait until it accepts connections (the port may linger a moment
        after a stop: a broker that exits at once is started again, within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                with open(self.log, "ab") as log:
                    self._process = subprocess.Popen([self.binary, "-c", str(self.config)],
                                                     stdout=log, stderr=subprocess.STDOUT)
            if self._answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {self.port}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        for port in filter(None, (self.port, self.tls_port)):
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", port)) != 0:
                    return False
        return self.running()

    def stop(self, timeout: float = 10.0) -> None:
        """End it cleanly (SIGTERM: clients see their connection closed); SIGKILL if
        it does not end within ``timeout``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
