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
from typing import Any, Callable, Dict, List, Optional

from chat.wire import DecodeError, StreamDecoder, encode_request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: How long to wait for a process or a reply before a test fails.
PATIENCE = 15.0


#: The command that runs twistd with this Python, in the foreground and
#: without a pid file (so that several servers can share a directory).
TWISTD = [
    sys.executable,
    "-c",
    "from twisted.scripts.twistd import run; run()",
    "--nodaemon",
    "--pidfile=",
]

#: The line twistd chat logs once it listens; group 1 is a TCP port.
LISTENING = re.compile(r"Listening on (?:IPv4Address\([^)]*port=(\d+)\)|UNIXAddress)")


def child_env(**extra: str) -> Dict[str, str]:
    """
    The environment for a child process that should run this checkout:
    this checkout first on the path, no colours, no inherited terminal
    width, and C{extra}.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["NO_COLOR"] = "1"
    env.pop("COLUMNS", None)
    env.update(extra)
    return env


class ServerProcess:
    """
    A real C{twistd -n chat} process listening on a free loopback port.

    @param directory: the working directory (where the log file goes).
    @param args: extra options for C{twistd chat}.
    @param logfile: a log file for twistd's C{--logfile}; then L{log} reads
        it, and standard output and error go to L{output_path}.
    """

    def __init__(self, directory: str, *args: str, logfile: Optional[str] = None) -> None:
        self.directory = directory
        self.args = args
        self.output_path = os.path.join(directory, f"twistd-{time.monotonic_ns()}.log")
        self.log_path = logfile or self.output_path
        self.logfile = logfile
        self.process: Optional[subprocess.Popen] = None
        self.port: Optional[int] = None

    def start(self) -> "ServerProcess":
        """
        Start the server and wait until it listens; L{port} is its TCP port
        (None on a Unix socket).
        """
        command = [
            *TWISTD,
            *([f"--logfile={self.logfile}"] if self.logfile else []),
            "chat",
            "--port=tcp:0:interface=127.0.0.1",
            *self.args,
        ]
        with open(self.output_path, "wb") as log:
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
            match = LISTENING.search(self.log())
            if match:
                self.port = int(match.group(1)) if match.group(1) else None
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            # twistd has not created its --logfile yet, or it was moved.
            return ""

    def wait_for_log(self, pattern: str) -> "re.Match[str]":
        """
        Wait until the log matches the regular expression C{pattern};
        return the match.
        """
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log())
            if match:
                return match
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in the log within {PATIENCE} s:\n{self.log()}")

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
    A blocking protocol client on a real socket: TCP to C{host} and
    C{port}, or the Unix socket at the path C{unix}.

    @param newline: end each request with a newline (a streaming client)
        rather than sending bare JSON (a legacy client).
    @ivar responses: every response received so far, in order.
    """

    def __init__(
        self,
        port: Optional[int] = None,
        newline: bool = True,
        host: str = "127.0.0.1",
        unix: Optional[str] = None,
    ) -> None:
        if unix is None:
            self.sock = socket.create_connection((host, port), timeout=PATIENCE)
        else:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(PATIENCE)
            self.sock.connect(unix)
        self.newline = newline
        self.decoder = StreamDecoder(max_size=16 * 1024 * 1024)
        self.responses: List[Any] = []
        self.closed = False
        self._read = 0  # how many of the responses read() has returned

    def send(self, word: str, content: Any = None) -> None:
        data = encode_request(word, content)
        self.sock.sendall(data if self.newline else data.rstrip(b"\n"))

    def _receive(self, deadline: float) -> None:
        if self.closed:
            raise AssertionError(f"connection closed; last responses {self.responses[-5:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last responses {self.responses[-5:]}")
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(1 << 16)
        except socket.timeout:
            return
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
        for value in self.decoder.feed(data):
            if isinstance(value, DecodeError):
                raise AssertionError(f"the server sent something not JSON: {value.reason}")
            self.responses.append(value)

    def read_until(self, condition: Callable[[], Any]) -> None:
        """
        Receive until C{condition()} is true.
        """
        deadline = time.monotonic() + PATIENCE
        while not condition():
            self._receive(deadline)

    def read(self, count: int = 1) -> List[Any]:
        """
        Wait for C{count} responses not yet read and return them.
        """
        self.read_until(lambda: len(self.responses) - self._read >= count)
        out = self.responses[self._read : self._read + count]
        self._read += count
        return out

    def read_until_closed(self) -> List[Any]:
        """
        Receive until the server closes the connection; return the
        responses not yet read.
        """
        deadline = time.monotonic() + PATIENCE
        while not self.closed:
            self._receive(deadline)
        out = self.responses[self._read :]
        self._read = len(self.responses)
        return out

    def of(self, response: str) -> List[Any]:
        """
        Every response so far of the kind C{response}.
        """
        return [r for r in self.responses if r["response"] == response]

    def history(self) -> List[Any]:
        """
        The message responses in every history received, decoded.
        """
        return [json.loads(item) for h in self.of("history") for item in h["content"]]

    def messages(self) -> List[Any]:
        """
        Every chat message received so far, in order, decoded: message
        responses and the items of history responses (in which a legacy
        client also gets messages that arrived together).
        """
        out: List[Any] = []
        for r in self.responses:
            if r["response"] == "message":
                out.append(r)
            elif r["response"] == "history":
                out += [json.loads(i) if isinstance(i, str) else i for i in r["content"]]
        return out

    def read_messages(self, count: int) -> List[Any]:
        """
        Receive until at least C{count} chat messages have come; return
        them all.
        """
        self.read_until(lambda: len(self.messages()) >= count)
        self._read = len(self.responses)
        return self.messages()

    def login(self, name: str) -> List[Any]:
        self.send("login", name)
        return self.read(2)

    def close(self) -> None:
        self.sock.close()
