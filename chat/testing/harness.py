"""
An in-memory harness that connects clients to a real chat server (the real
core on a L{MemoryStore}, the real TCP protocol and factory) over
L{twisted.test.iosim}, with a fake clock: no sockets, no waiting, the same
bytes as on a network. As treq's C{testing} module does for HTTP, it lets a
test of anything that speaks this protocol (our client, a bot, another
transport) run against the server without rebuilding the setup.

    harness = ChatHarness()
    alice = harness.connect()            # a RecordingClient; or pass your own protocol
    alice.send("login", "alice")
    harness.settle()
    assert alice.take()[0]["response"] == "info"
"""

from __future__ import annotations

import json
from typing import Any, Callable, List, Optional, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import IOPump, connectedServerAndClient

from chat.core.limits import Limits
from chat.core.service import ChatService
from chat.storage import MemoryStore
from chat.transports.connection import ConnectionLimits
from chat.transports.tcp import ChatServerFactory
from chat.wire import StreamDecoder, encode_request

P = TypeVar("P", bound=IProtocol)


class RecordingClient(Protocol):
    """
    A minimal client: writes requests as told (bare JSON, as the field's
    clients do, or with a newline), and decodes what comes back.

    @ivar received: the responses (or L{DecodeError}s) not yet taken.
    """

    def __init__(self, newline: bool = True) -> None:
        self.newline = newline
        self.decoder = StreamDecoder()
        self.received: List[Any] = []
        self.writes: List[bytes] = []  # what arrived, one entry per delivery
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.writes.append(data)
        self.received.extend(self.decoder.feed(data))

    def connectionLost(self, reason: object = None) -> None:
        self.closed = True

    def send(self, word: str, content: Any = None) -> None:
        data = encode_request(word, content)
        self.transport.write(data if self.newline else data.rstrip(b"\n"))

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def take(self) -> List[Any]:
        """
        The responses received since the last call.
        """
        out, self.received = self.received, []
        return out


class ChatHarness:
    """
    A chat server in memory, and the clients connected to it.

    @ivar clock: the fake clock of the server (and of every connection).
    @ivar service: the chat core; C{factory}: its TCP factory.
    """

    def __init__(
        self,
        limits: Optional[Limits] = None,
        connection_limits: Optional[ConnectionLimits] = None,
        history_format: str = "string",
        history_limit: int = 500,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore(self.clock)
        self.service = ChatService(
            self.store, self.clock, history_format, limits, history_limit
        )  # fmt: skip
        self.factory = ChatServerFactory(self.service, self.clock, connection_limits)
        self.pumps: List[IOPump] = []

    def connect(
        self,
        client: Optional[Callable[[], P]] = None,
        newline: bool = True,
        host: str = "127.0.0.1",
    ) -> Any:
        """
        Connect a client (made by C{client}, or a L{RecordingClient}) from
        C{host}; return the client protocol.
        """
        make = client if client is not None else (lambda: RecordingClient(newline))
        address = IPv4Address("TCP", host, 40000 + len(self.pumps))
        protocol, _, pump = connectedServerAndClient(
            lambda: self.factory.buildProtocol(address),
            make,
            clock=self.clock,
            greet=False,
        )
        self.pumps.append(pump)
        return protocol

    def settle(self, seconds: float = 1.0, step: float = 0.005) -> None:
        """
        Move bytes both ways and time forward, C{seconds} in C{step}s, so
        that everything sent (paced responses too) has arrived.
        """
        for _ in range(int(seconds / step)):
            for pump in self.pumps:
                pump.pump()
            self.clock.advance(step)
        for pump in self.pumps:
            pump.pump()


def responses(data: bytes) -> List[Any]:
    """
    The responses in some received bytes (one per line).
    """
    return [json.loads(line) for line in data.splitlines() if line.strip()]
