"""
Helpers for tests that use real processes and real sockets: a C{twistd -n
chat} server process on an ephemeral loopback port, and a blocking socket
client that speaks the protocol.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any, List, Optional

from chat.wire import StreamDecoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: How long to wait for a process or a reply before a test fails.
PATIENCE = 15.0


def child_env() -> dict:
    """
    The environment for a child process that should run this checkout.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("NO_COLOR", None)
    return env


class ServerProcess:
    """
    A real C{twistd -n chat} process listening on a free loopback port.

    @param directory: the working directory (where the log file goes).
    @param args: extra options for C{twistd chat}.
    """

    def __init__(self, directory: str, *args: str) -> None:
        self.directory = directory
        self.args = args
        self.log_path = os.path.join(directory, f"twistd-{time.monotonic_ns()}.log")
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    def start(self) -> "ServerProcess":
        command = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "--nodaemon",
            "--pidfile=",
            "chat",
            "--port=tcp:0:interface=127.0.0.1",
            *self.args,
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.directory,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            match = re.search(r"Listening on .*port=(\d+)", self.log())
            if match:
                self.port = int(match.group(1))
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """
        Send C{sig} and wait for the process to exit; return its status.
        """
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(PATIENCE)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(PATIENCE)


class SocketClient:
    """
    A blocking protocol client on a real socket.

    @param newline: end each request with a newline (a streaming client)
        rather than sending bare JSON (a legacy client).
    """

    def __init__(self, port: int, newline: bool = True, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=PATIENCE)
        self.newline = newline
        self.decoder = StreamDecoder(max_size=16 * 1024 * 1024)
        self.pending: List[Any] = []
        self.closed = False

    def send(self, word: str, content: Any = None) -> None:
        data = json.dumps({"request": word, "content": content}).encode("utf-8")
        self.sock.sendall(data + (b"\n" if self.newline else b""))

    def read(self, count: int = 1) -> List[Any]:
        """
        Wait for C{count} more responses and return them.
        """
        deadline = time.monotonic() + PATIENCE
        while len(self.pending) < count:
            if self.closed or time.monotonic() > deadline:
                raise AssertionError(f"wanted {count} responses, got {self.pending}")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
            self.pending.extend(self.decoder.feed(data))
        out, self.pending = self.pending[:count], self.pending[count:]
        return out

    def read_until_closed(self) -> List[Any]:
        """
        Read every response until the server closes the connection.
        """
        deadline = time.monotonic() + PATIENCE
        while not self.closed:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not close the connection")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
            self.pending.extend(self.decoder.feed(data))
        out, self.pending = self.pending, []
        return out

    def login(self, name: str) -> List[Any]:
        self.send("login", name)
        return self.read(2)

    def close(self) -> None:
        self.sock.close()
