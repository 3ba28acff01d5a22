"""
Start and watch the servers under test: ours (C{twistd -n chat}) and the
asyncio baseline, each a child process on a fresh port and a fresh database.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Server:
    """
    A server process: C{kind} is C{"chat"} (ours) or C{"asyncio"} (baseline).
    """

    def __init__(self, kind: str, database: Optional[str] = "file", extra=()) -> None:
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
                "chat",
                "-p",
                "tcp:0:interface=127.0.0.1:backlog=1024",
                "-d",
                self.database or ":memory:",
                *extra,
            ]
            pattern = re.compile(r"Listening on IPv4Address\(.*port=(\d+)\)")
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
