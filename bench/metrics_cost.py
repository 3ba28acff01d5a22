"""
What serving Prometheus metrics costs per delivery, measured in one
process so that the figure does not drown in the machine's noise:

    .venv/bin/python -m bench.metrics_cost [--recipients 1000] [--messages 300] [--runs 7]

The real core and TCP protocol deliver broadcasts to N recipients over
Twisted's real TCP connection class on sockets that take everything (the
direct write path, the hot one), once as C{twistd chat} runs without
C{--metrics}, once as it runs with it (the store timed, the core's counters
registered, and a scrape of the registry every C{--scrape-every} messages:
by default once a run, about every 0.1 s of the server's CPU time, still
far more often than Prometheus's usual 15 s). Runs alternate; it prints
the CPU time per delivery of each, their medians and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from prometheus_client import generate_latest
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor

from chat.core.service import ChatService
from chat.server.metrics import Metrics
from chat.storage import MemoryStore
from chat.transports.connection import ConnectionLimits
from chat.transports.tcp import ChatServerFactory
from chat.wire import encode_request


class _Socket:
    def send(self, data: bytes) -> int:
        return len(data)

    def fileno(self) -> int:
        return 99

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: object) -> None:
        pass


class _Connection(tcp.Connection):
    def __init__(self, protocol: object) -> None:
        super().__init__(_Socket(), protocol, MemoryReactor())
        self.connected = True

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 1)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 2)


def run(recipients: int, messages: int, metrics: bool, scrape_every: int = 1000) -> float:
    """
    CPU seconds per delivery for C{messages} broadcasts to C{recipients}.
    """
    clock = Clock()
    clock.advance(1.7e9)
    store = MemoryStore(clock)
    registry = None
    if metrics:
        m = Metrics()
        store = m.timed(store)
        registry = m.registry
    chat = ChatService(store, clock)
    if metrics:
        m.watch(chat)
    limits = ConnectionLimits(max_connections=0, max_connections_per_address=0)
    factory = ChatServerFactory(chat, clock, limits)
    protocols = []
    for i in range(recipients):
        protocol = factory.buildProtocol(None)
        transport = _Connection(protocol)
        protocol.makeConnection(transport)
        protocol.dataReceived(encode_request("login", f"u{i}"))
        clock.advance(0)
        transport.dataBuffer, transport._tempDataBuffer, transport._tempDataLen = b"", [], 0
        protocols.append(protocol)
    sender = protocols[0]
    start = time.process_time()
    for i in range(messages):
        sender.dataReceived(encode_request("msg", f"T{i} " + "x" * 48))
        clock.advance(0)
        if registry is not None and i % scrape_every == 0:
            generate_latest(registry)
    return (time.process_time() - start) / (messages * recipients)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--scrape-every", type=int, default=1000, help="messages")
    args = parser.parse_args()
    plain, metered = [], []
    for i in range(args.runs):
        # Alternate which goes first, and start each from a collected heap,
        # so that neither gets the other's garbage.
        for metrics in (False, True) if i % 2 else (True, False):
            gc.collect()
            figure = run(args.recipients, args.messages, metrics, args.scrape_every)
            (metered if metrics else plain).append(figure)
    for name, values in (("without --metrics", plain), ("with --metrics", metered)):
        us = [v * 1e6 for v in values]
        print(f"{name:18} CPU/delivery median {statistics.median(us):.4f} us"
              f" [{min(us):.4f}..{max(us):.4f}]")  # fmt: skip
    ratio = statistics.median(metered) / statistics.median(plain)
    print(f"with/without: {ratio:.3f} (best runs: {min(metered) / min(plain):.3f})")


if __name__ == "__main__":
    main()
