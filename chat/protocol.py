"""
The Twisted side of the server: a protocol per connection that turns bytes
into requests for the chat core and delivers its responses.

Framing: the protocol is a L{LineReceiver} kept in raw mode; its bytes go to
a L{chat.wire.StreamDecoder} bounded by C{MAX_LENGTH}, because clients in the
field send JSON objects with nothing after them.

Sending depends on the client's dialect (PROTOCOL.md, section 5):

- A client that ends its requests with a newline reads a stream: responses
  are written as they come, and the reactor batches them.
- A client that sends bare JSON is a legacy client that reads one response
  per C{recv()}: its responses are written one at a time, L{PACING} seconds
  apart, and its history arrives in pieces of at most L{LEGACY_MAX_RESPONSE}
  bytes.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from chat.service import ChatService, IChatClient, Session
from chat.wire import MAX_VALUE_SIZE, StreamDecoder, parse_request

#: Seconds between two responses to a legacy client.
PACING = 0.010

#: The largest response a legacy client can read in one C{recv(4096)}.
LEGACY_MAX_RESPONSE = 4096


@implementer(IChatClient)
class ChatServerProtocol(LineReceiver):
    """
    One client connection.
    """

    log = Logger()
    MAX_LENGTH = MAX_VALUE_SIZE

    factory: "ChatServerFactory"
    session: Session

    def __init__(self) -> None:
        self._decoder: Optional[StreamDecoder] = None
        # A list, not a deque: an empty deque takes 760 bytes, per connection.
        self._queue: List[bytes] = []
        self._pacer: Optional[IDelayedCall] = None
        self._closing = False

    # IChatClient

    @property
    def legacy(self) -> bool:
        """
        Whether this client sends bare JSON and needs paced responses.
        """
        return self._decoder is not None and not self._decoder.newline_seen

    @property
    def max_response_size(self) -> Optional[int]:
        return LEGACY_MAX_RESPONSE if self.legacy else None

    def deliver(self, data: bytes) -> None:
        if self._closing:
            return
        if self._queue or self._pacer is not None or self.legacy:
            # One response per paced write: a batch is split at its newlines
            # (compact JSON has none inside a response).
            if data.count(b"\n") > 1:
                self._queue.extend(line + b"\n" for line in data.split(b"\n")[:-1])
            else:
                self._queue.append(data)
            if self._pacer is None:
                self._pace()
        else:
            self._write(data)

    def _write(self, data: bytes) -> None:
        """
        Write to a TCP transport at once when nothing is buffered, as asyncio
        does. A broadcast writes to every recipient in one turn; left to the
        reactor, each write costs two epoll_ctl calls and a doWrite, twice
        the cost of the send itself. What the socket does not take goes to
        the transport as usual, and so does everything after it.
        """
        transport = self.transport
        if (
            isinstance(transport, tcp.Connection)
            and not transport._tempDataLen
            and not transport.dataBuffer
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = transport.socket.send(data)
            except OSError:
                sent = 0  # the reactor finds out what is wrong
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)

    def disconnect(self) -> None:
        if self._closing:
            return
        if self._queue or self._pacer is not None:
            # Close after the paced responses are out.
            self._queue.append(b"")
            return
        self._closing = True
        self.transport.loseConnection()

    def _pace(self) -> None:
        self._pacer = None
        if not self._queue:
            return
        data = self._queue.pop(0)
        if not data:
            self._queue.clear()
            self._closing = True
            self.transport.loseConnection()
            return
        self._write(data)
        self._pacer = self.factory.clock.callLater(PACING, self._pace)

    # Protocol

    def connectionMade(self) -> None:
        self.setRawMode()
        self._decoder = StreamDecoder(self.MAX_LENGTH)
        peer = self.transport.getPeer()
        if hasattr(self.transport, "setTcpNoDelay"):
            try:
                self.transport.setTcpNoDelay(True)
            except OSError:
                pass
        self.log.info("Connection from {peer}", peer=peer)
        self.session = self.factory.service.connect(self)

    def rawDataReceived(self, data: bytes) -> None:
        assert self._decoder is not None
        for value in self._decoder.feed(data):
            if self._closing:
                return
            self.session.receive(parse_request(value))

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self._queue.clear()
        if self._pacer is not None and self._pacer.active():
            self._pacer.cancel()
        self._pacer = None
        self.log.info("Connection from {peer} closed", peer=self.transport.getPeer())
        self.session.lost()


class ChatServerFactory(Factory):
    """
    Makes a L{ChatServerProtocol} per connection, all feeding one
    L{ChatService}.
    """

    protocol = ChatServerProtocol
    noisy = False

    def __init__(self, service: Optional[ChatService], clock: IReactorTime) -> None:
        self.service = service
        self.clock = clock
