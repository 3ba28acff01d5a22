"""
Start and watch the servers under test: ours (C{twistd -n chat}) and the
asyncio baseline, each a child process on a fresh port and a fresh database.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


NGIRCD_CONF = """\
[Global]
Name = bench.example
Info = chat benchmark
Listen = 127.0.0.1
Ports = {port}
MotdPhrase = bench
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 0
MaxNickLength = 30
MaxPenaltyTime = 0
PingTimeout = 3600
PongTimeout = 3600
[Options]
DNS = no
Ident = no
PAM = no
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ngircd() -> Optional[str]:
    """
    The ngIRCd binary, if installed (Debian: apt-get install ngircd).
    """
    return shutil.which("ngircd") or (
        "/usr/sbin/ngircd" if os.path.exists("/usr/sbin/ngircd") else None
    )


class Server:
    """
    A server process: C{kind} is C{"chat"} (ours), C{"asyncio"} (baseline)
    or C{"ircd"} (ngIRCd, a C IRC server: penalties off, no DNS or ident
    lookups, no per-address connection limit).
    """

    def __init__(
        self, kind: str, database: Optional[str] = "file", extra=(), bench_defaults: bool = True
    ) -> None:
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix=f"bench-{kind}-")
        self.database = os.path.join(self.dir, "chat.sqlite3") if database == "file" else database
        self.log_path = os.path.join(self.dir, "server.log")
        env = dict(os.environ, PYTHONPATH=ROOT)
        if kind == "chat":
            twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
            cmd = [
                twistd,
                "-n",
                "--pidfile=",
                # twistd's own options, e.g. to profile our server:
                # CHAT_TWISTD_ARGS="--profile=F --profiler=cprofile --savestats".
                *os.environ.get("CHAT_TWISTD_ARGS", "").split(),
                "chat",
                "-p",
                "tcp:0:interface=127.0.0.1:backlog=1024",
                "-d",
                self.database or ":memory:",
                *extra,
            ]
            if bench_defaults:
                # The load is many fast clients from few addresses: flood
                # control and the connection limits off, as for a benchmark.
                cmd += ["--flood-rate=0", "--max-connections=0", "--max-connections-per-address=0"]
            # More options for our server, to compare a feature's cost, e.g.
            # CHAT_BENCH_ARGS="--metrics tcp:0:interface=127.0.0.1".
            cmd += os.environ.get("CHAT_BENCH_ARGS", "").split()
            pattern = re.compile(r"Listening on IPv4Address\(.*port=(\d+)\)")
        elif kind == "ircd":
            port = _free_port()
            conf = os.path.join(self.dir, "ngircd.conf")
            with open(conf, "w") as f:
                f.write(NGIRCD_CONF.format(port=port))
            cmd = [ngircd() or "ngircd", "-n", "-f", conf]
            pattern = None
        else:
            cmd = [sys.executable, "-m", "bench.baseline_server", "--port", "0", *extra]
            if self.database:
                cmd += ["--database", self.database]
            pattern = re.compile(r"listening on (\d+)")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.dir
        )
        self.pid = self.proc.pid
        self.port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pattern is None:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    self.port = port
                    break
                except OSError:
                    pass
            else:
                with open(self.log_path, "rb") as f:
                    m = pattern.search(f.read().decode("utf-8", "replace"))
                if m:
                    self.port = int(m.group(1))
                    break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if not self.port:
            self.stop()
            raise RuntimeError(f"{kind} server did not start; see {self.log_path}")

    def cpu(self) -> float:
        """
        CPU seconds (user + system) the server has used so far.
        """
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def rss(self) -> int:
        """
        Resident memory in bytes.
        """
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def memory(self) -> Dict[str, int]:
        """
        Current (VmRSS) and peak (VmHWM) resident memory, in KiB.
        """
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS", "VmHWM")):
                    key, value = line.split(":")
                    out[key] = int(value.split()[0])
        return out

    def log_text(self) -> str:
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_limit(self) -> int:
        """
        The server process's soft limit on open files.
        """
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        raise RuntimeError("no open-files limit")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
