"""
Connection storms from outside (issue 8, items 4 and 5), against a server
on its default options (history in memory), run from the checkout given as
argument, so that an older release can be measured the same way:

    .venv/bin/python -m bench.storm .               # this checkout
    .venv/bin/python -m bench.storm /tmp/chat-old   # e.g. a worktree of e72665a

1. 1,000 clients connect and log in at once (from 10 loopback addresses,
   100 each, the per-address limit): login time p50 and max.
2. 5,000 connections that never log in (50 addresses x 100) fill the
   server; then 20 real logins from another address: how many are served.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, List, Tuple

LISTENING = re.compile(rb"Listening on IPv4Address\([^)]*port=(\d+)")


def start(root: str, log_path: str) -> Tuple[subprocess.Popen, int]:
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    command += ["-n", "--pidfile=", "chat", "-p", "tcp:0:interface=127.0.0.1", "-d", ":memory:"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            env=dict(os.environ, PYTHONPATH=root),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.path.dirname(log_path),
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with open(log_path, "rb") as log:
            match = LISTENING.search(log.read())
        if match:
            return proc, int(match.group(1))
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the server did not listen; see {log_path}")


async def login(port: int, name: str, source: str) -> Tuple[float, str, Any]:
    start_time = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(json.dumps({"request": "login", "content": name}).encode() + b"\n")
    line = await asyncio.wait_for(reader.readline(), 30)
    return time.monotonic() - start_time, json.loads(line)["content"], writer


async def storm(port: int) -> None:
    logins = [login(port, f"u{i}", f"127.0.1.{i % 10 + 1}") for i in range(1000)]
    results = await asyncio.gather(*logins)
    times = sorted(t for t, _, _ in results)
    served = sum("Login successful" in content for _, content, _ in results)
    print(
        f"1000 at once: {served} logged in, login time"
        f" p50 {statistics.median(times):.3f} s, max {times[-1]:.3f} s"
    )
    for _, _, writer in results:
        writer.close()
    await asyncio.sleep(1)
    idle: List[Any] = []
    for address in range(50):
        for _ in range(100):
            source = f"127.0.2.{address + 1}"
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            idle.append(writer)
    await asyncio.sleep(1)
    answers = []
    for i in range(20):
        _, content, writer = await login(port, f"real{i}", "127.0.3.1")
        answers.append(content)
        writer.close()
    served = sum("Login successful" in content for content in answers)
    print(f"with 5000 idle: {served} of 20 real logins served; the last: {answers[-1]!r}")
    for writer in idle:
        writer.close()


def main() -> None:
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else ".")
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1:] * 2)
    log_path = os.path.join(tempfile.mkdtemp(prefix="bench-storm-"), "server.log")
    proc, port = start(root, log_path)
    try:
        asyncio.run(storm(port))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
