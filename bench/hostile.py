"""
Figures for issue 4 (hostile load): run real C{twistd -n chat} servers on
loopback and measure

1. memory: the server's RSS with N logged-in clients that never read while
   another client broadcasts megabytes of messages, with the send-queue
   limit (the default) and, for comparison, with the limit out of reach;
2. latency: the round trip of a probe client's message (sent until its own
   echo arrives) with idle company, then while one client floods the
   server, with flood control on (the default) and off.

Usage: python bench/hostile.py [--stalled N] [--messages M] [--quick]

Every loop is bounded in count and time, and only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import sys
import time
from typing import List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.servers import Server  # noqa: E402
from chat.wire import StreamDecoder, encode_request  # noqa: E402


def start_server(*args: str) -> Server:
    """
    Our server with its protections as configured, limits per address off
    (every client here comes from 127.0.0.1), history in memory.
    """
    return Server(
        "chat",
        database=None,
        extra=("--max-connections-per-address=0", *args),
        bench_defaults=False,
    )


def dropped(server: Server) -> int:
    """
    How many slow consumers the server has dropped so far.
    """
    return server.log_text().count("it is not reading")


class Client:
    def __init__(self, port: int, rcvbuf: Optional[int] = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.decoder = StreamDecoder(max_size=1 << 24)
        self.outgoing = bytearray()
        self.closed = False
        self.on_response = None

    def send(self, word: str, content=None) -> None:
        self.outgoing += encode_request(word, content)

    def flush(self) -> None:
        try:
            while self.outgoing:
                sent = self.sock.send(self.outgoing)
                del self.outgoing[:sent]
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True

    def read(self) -> None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        for value in self.decoder.feed(data):
            if self.on_response is not None:
                self.on_response(value)


class Loop:
    """
    A tiny select loop over the reading clients.
    """

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: List[Client] = []

    def add(self, client: Client) -> None:
        self.clients.append(client)
        self.selector.register(client.sock, selectors.EVENT_READ, client)

    def run(self, until, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for client in self.clients:
                if client.outgoing:
                    client.flush()
            if until():
                return True
            for key, _ in self.selector.select(0.005):
                key.data.read()
        return until()


def login(loop: Loop, port: int, name: str, rcvbuf: Optional[int] = None, read=True) -> Client:
    client = Client(port, rcvbuf)
    got = []
    client.on_response = lambda r: got.append(r)
    client.send("login", name)
    if read:
        loop.add(client)
        loop.run(
            lambda: any(r.get("response") == "history" for r in got if isinstance(r, dict)), 10
        )
    else:
        client.flush()
        time.sleep(0.002)
    client.on_response = None
    return client


def memory_run(stalled: int, messages: int, queue: Optional[int]) -> dict:
    args = ["--flood-rate=0"]
    if queue is not None:
        args.append(f"--max-send-queue={queue}")
    server = start_server(*args)
    try:
        loop = Loop()
        base = server.memory()["VmRSS"]
        sender = login(loop, server.port, "sender")
        reader = login(loop, server.port, "reader")
        sinks = [
            login(loop, server.port, f"stalled{i}", rcvbuf=4096, read=False) for i in range(stalled)
        ]
        time.sleep(0.5)
        after_login = server.memory()["VmRSS"]
        seen = [0]

        def count(r):
            if isinstance(r, dict) and r.get("response") == "message":
                seen[0] += 1

        reader.on_response = count
        sender.on_response = None
        text = "x" * 1000
        peak = 0
        checkpoints = {}
        start = time.monotonic()
        for batch in range(0, messages, 50):
            for _ in range(50):
                sender.send("msg", text)
            loop.run(lambda want=batch + 50: seen[0] >= want, 30)
            rss = server.memory()["VmRSS"]
            peak = max(peak, rss)
            if (batch + 50) % (messages // 4) == 0:
                checkpoints[batch + 50] = rss
        elapsed = time.monotonic() - start
        time.sleep(0.3)
        mem = server.memory()
        return {
            "rss_start_kib": base,
            "rss_logged_in_kib": after_login,
            "rss_checkpoints_kib": checkpoints,
            "rss_peak_sampled_kib": max(peak, mem["VmRSS"]),
            "rss_hwm_kib": mem["VmHWM"],
            "dropped": dropped(server),
            "delivered_to_reader": seen[0],
            "seconds": round(elapsed, 2),
            "sinks": len(sinks),
        }
    finally:
        server.stop()


def latency_run(
    flood: Optional[str],
    company: int,
    probes: int,
    flood_rate: Optional[str] = None,
) -> dict:
    args = [f"--flood-rate={flood_rate}"] if flood_rate is not None else []
    server = start_server(*args)
    try:
        loop = Loop()
        others = [login(loop, server.port, f"idle{i}") for i in range(company)]
        for c in others:
            c.on_response = None
        probe = login(loop, server.port, "probe")
        flooder = login(loop, server.port, "flooder") if flood else None
        time.sleep(2.1)  # let the login bursts' tokens come back
        flood_sent = [0]

        def feed_flood():
            if flooder is not None and len(flooder.outgoing) < 65536:
                for _ in range(200):
                    if flood == "msg":
                        flooder.send("msg", "flood " + "f" * 100)
                    else:
                        flooder.send("names")
                flood_sent[0] += 200

        echoed: List[str] = []

        def on_probe(r):
            if (
                isinstance(r, dict)
                and r.get("response") == "message"
                and r.get("sender") == "probe"
            ):
                echoed.append(r["content"])

        probe.on_response = on_probe
        if flooder is not None:
            flooder.on_response = None
        times = []
        lost = 0
        feed_flood()
        loop.run(lambda: False, 0.5)  # the flood gets going
        for i in range(probes):
            feed_flood()
            tag = f"probe {i}"
            t0 = time.perf_counter()
            probe.send("msg", tag)
            if loop.run(lambda tag=tag: tag in echoed, 10):
                times.append((time.perf_counter() - t0) * 1000)
            else:
                lost += 1
            # The probe is a well-behaved client: under 10 requests a second.
            loop.run(lambda: False, max(0.0, t0 + 0.11 - time.perf_counter()))
            feed_flood()
        times.sort()
        return {
            "p50_ms": round(statistics.median(times), 2) if times else None,
            "p99_ms": round(times[max(0, int(len(times) * 0.99) - 1)], 2) if times else None,
            "max_ms": round(times[-1], 2) if times else None,
            "probes": len(times),
            "probe_timeouts": lost,
            "flood_requests_queued_by_client": flood_sent[0],
            "flooder_disconnected": bool(flooder and flooder.closed),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--messages", type=int, default=12000)
    parser.add_argument("--company", type=int, default=20)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.stalled, args.messages, args.probes = 20, 200, 50
    out = print
    out(f"# bench/hostile.py  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    out("# command: python bench/hostile.py " + " ".join(sys.argv[1:]))
    out(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, server and clients on one host")
    out()
    out(f"## Memory: {args.stalled} stalled readers (never read, 4 KiB receive buffer),")
    out(
        f"## {args.messages} messages of 1000 characters broadcast to them "
        f"(~{args.messages * 1.08 / 1024:.1f} MiB each)"
    )
    final = {}
    configs = [
        ("control: no stalled readers (growth is the in-memory history)", 0, None),
        ("stalled readers, --max-send-queue=262144 (default)", args.stalled, None),
        (
            "stalled readers, limit out of reach (--max-send-queue=1000000000)",
            args.stalled,
            10**9,
        ),
    ]
    for label, stalled, queue in configs:
        r = memory_run(stalled, args.messages, queue)
        final[label] = r["rss_checkpoints_kib"][args.messages]
        out(f"{label}:")
        out(
            f"  RSS at start {r['rss_start_kib'] / 1024:.1f} MiB, "
            f"after logins {r['rss_logged_in_kib'] / 1024:.1f} MiB, "
            f"peak {r['rss_hwm_kib'] / 1024:.1f} MiB"
        )
        out(
            "  RSS after "
            + ", ".join(
                f"{n} messages {kib / 1024:.1f} MiB" for n, kib in r["rss_checkpoints_kib"].items()
            )
        )
        out(
            f"  stalled readers dropped: {r['dropped']}/{r['sinks']}; "
            f"reading client got {r['delivered_to_reader']}/{args.messages} "
            f"in {r['seconds']} s"
        )
    control = final[configs[0][0]]
    out(
        f"held for the {args.stalled} stalled readers at the end (RSS above the control): "
        f"default limit {(final[configs[1][0]] - control) / 1024:.1f} MiB, "
        f"no limit {(final[configs[2][0]] - control) / 1024:.1f} MiB (and growing with "
        "every message)"
    )
    bound = args.stalled * (262144 + 65536) / 2**20
    out(
        f"(bound from the limits while they are connected: {args.stalled} x (256 KiB queue "
        f"+ 64 KiB Twisted buffer) = {bound:.0f} MiB, at most; broadcast bytes are shared "
        "between recipients, so less in practice; kernel socket buffers come on top and "
        "are not RSS)"
    )
    out()
    out(
        f"## Latency: round trip of a probe's message (send -> own echo), "
        f"{args.company} idle clients, {args.probes} probes"
    )
    runs = [
        ("baseline, no flood", None, None),
        ("one client flooding msg, flood control on (default 10/s, burst 20)", "msg", None),
        ("one client flooding names, flood control on", "names", None),
        ("one client flooding msg, flood control off (--flood-rate=0)", "msg", "0"),
    ]
    for label, flood, rate in runs:
        r = latency_run(flood, args.company, args.probes, rate)
        out(f"{label}:")
        out(
            f"  p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, max {r['max_ms']} ms "
            f"({r['probes']} probes, {r['probe_timeouts']} timeouts)"
            + (
                f"; flooder queued {r['flood_requests_queued_by_client']} requests, "
                f"disconnected: {r['flooder_disconnected']}"
                if flood
                else ""
            )
        )


if __name__ == "__main__":
    main()
