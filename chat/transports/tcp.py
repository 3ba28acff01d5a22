"""
The Twisted side of the server: a protocol per connection that turns bytes
into requests for the chat core and delivers its responses.

Framing: the protocol is a L{LineReceiver} kept in raw mode; its bytes go to
a L{chat.wire.StreamDecoder} bounded by L{ConnectionLimits.max_request_size},
because clients in the field send JSON objects with nothing after them.

Sending depends on the client's dialect (PROTOCOL.md, section 5):

- A client that ends its requests with a newline reads a stream: responses
  are written as they come, and the reactor batches them.
- A client that sends bare JSON is a legacy client that reads one response
  per C{recv()}: its responses are written one at a time, L{PACING} seconds
  apart, and its history arrives in pieces of at most L{LEGACY_MAX_RESPONSE}
  bytes.

Protection (see L{ConnectionLimits}): connections are counted in total and
per source address; a connection that does not log in in time is closed;
TCP keepalive finds dead peers; and a client that does not read what it is
sent is dropped. For the last, the protocol registers a push producer with
its transport: while Twisted's write buffer is full, responses wait in the
protocol's own queue (the same queue that paces a legacy client), and when
that queue holds more than C{max_send_queue} bytes the connection is
aborted, as C{loseConnection()} would wait forever for a peer that does not
read.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Dict, List, Optional

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from chat.core.interfaces import IChatClient, IFlowControlledClient
from chat.core.rules import SERVER_NAME
from chat.core.service import ChatService
from chat.core.session import Session
from chat.wire import (
    MAX_VALUE_SIZE,
    StreamDecoder,
    encode_response,
    format_timestamp,
    parse_request,
)

#: Seconds between two responses to a legacy client.
PACING = 0.010

#: The largest response a legacy client can read in one C{recv(4096)}.
LEGACY_MAX_RESPONSE = 4096


def split_responses(data: bytes) -> List[bytes]:
    """
    The single responses in C{data}, each with its newline (compact JSON has
    no newline inside a response).
    """
    if data.count(b"\n") <= 1:
        return [data]
    return [line + b"\n" for line in data.split(b"\n")[:-1]]


@dataclass(frozen=True)
class ConnectionLimits:
    """
    Bounds on connections, enforced by the protocol and its factory.

    @ivar max_request_size: the largest request, in bytes (characters once
        decoded); a larger one gets an C{error} and the connection is closed.
    @ivar max_connections: connections open at once; 0 for no limit.
    @ivar max_connections_per_address: connections open at once from one
        source address; 0 for no limit.
    @ivar login_timeout: seconds a connection may stay without logging in;
        0 for no limit.
    @ivar max_send_queue: bytes that may wait for a client that does not read
        fast enough (beyond Twisted's own write buffer and not counting the
        history sent at login); past it the connection is aborted.
    @ivar keepalive_idle: seconds of silence before TCP keepalive probes
        start; 0 turns keepalive off.
    @ivar keepalive_interval: seconds between two keepalive probes.
    @ivar keepalive_count: unanswered probes after which the peer is dead.
    @ivar close_timeout: seconds a closing connection may take to send what
        it still has before it is aborted.
    """

    max_request_size: int = MAX_VALUE_SIZE
    max_connections: int = 5000
    max_connections_per_address: int = 100
    login_timeout: float = 60.0
    max_send_queue: int = 256 * 1024
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 3
    close_timeout: float = 10.0


@implementer(IPushProducer)
class _SendWindow:
    """
    Told by the transport when its write buffer is full and when it has
    drained. (The protocol itself cannot be the producer: L{LineReceiver}'s
    own pauseProducing pauses reading.)
    """

    def __init__(self, protocol: "ChatServerProtocol") -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol._set_write_paused(True)

    def resumeProducing(self) -> None:
        self._protocol._set_write_paused(False)

    def stopProducing(self) -> None:
        pass


@implementer(IChatClient, IFlowControlledClient)
class ChatServerProtocol(LineReceiver, TimeoutMixin):
    """
    One client connection.
    """

    log = Logger()
    MAX_LENGTH = MAX_VALUE_SIZE

    factory: "ChatServerFactory"

    def __init__(self) -> None:
        # None until the connection is admitted, and for good if it is not.
        self.session: Optional[Session] = None
        self._decoder: Optional[StreamDecoder] = None
        # A list, not a deque: an empty deque takes 760 bytes, per connection.
        self._queue: List[bytes] = []
        self._queued = 0  # bytes in _queue
        self._burst = 0  # bytes in _queue exempt from the limit
        self._pacer: Optional[IDelayedCall] = None
        self._closer: Optional[IDelayedCall] = None
        self._legacy = True
        self._write_paused = False
        self._ending = False  # disconnect() was called: deliver nothing more
        self._closing = False  # the transport is being closed
        self._direct = False  # deliver() may write straight to the transport
        self._producer: Optional[_SendWindow] = None
        self._admitted: Optional[str] = None
        self._limits = ConnectionLimits()
        # Set here what LineReceiver sets at the first bytes received: set
        # that late, after other connections were made, they cost each
        # instance a dictionary of its own (1.5 KiB instead of 0.3).
        self._buffer = b""
        self._busyReceiving = False

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
        if self._direct:
            self._write(data)
        elif not self._ending:
            # Queued one response at a time, so that a legacy client gets
            # one per paced write and the send-queue limit is checked per
            # response.
            for response in self.factory.responses_in(data):
                self._enqueue(response)

    def deliver_burst(self, responses: List[bytes]) -> None:
        for data in responses:
            if self._direct:
                self._write(data)
            elif not self._ending:
                self._enqueue(data, burst=True)

    def _write(self, data: bytes) -> None:
        """
        Write to a TCP transport at once when nothing is buffered, as asyncio
        does. A broadcast writes to every recipient in one turn; left to the
        reactor, each write costs two epoll_ctl calls and a doWrite, twice
        the cost of the send itself. What the socket does not take goes to
        the transport as usual, and so does everything after it.
        """
        transport = self.transport
        sent = 0
        # These are Twisted's own buffer attributes (not public API): read
        # with defaults that fall back to transport.write if they ever change.
        if (
            isinstance(transport, tcp.Connection)
            and not getattr(transport, "_tempDataLen", 1)
            and not getattr(transport, "dataBuffer", b"?")
            and transport.connected
            and not transport.disconnecting
        ):
            try:
                sent = transport.socket.send(data)
            except OSError:
                sent = 0  # the reactor finds out what is wrong
            if sent == len(data):
                return
        # Give the transport what is left one response at a time, so that
        # once its buffer is full (and it pauses us) the rest waits in our
        # queue, where the send-queue limit counts each response.
        if sent:
            responses = split_responses(data[sent:])
        else:
            responses = self.factory.responses_in(data)
        for i, response in enumerate(responses):
            if self._write_paused:
                for rest in responses[i:]:
                    self._enqueue(rest)
                return
            transport.write(response)

    def disconnect(self) -> None:
        if self._ending:
            return
        self._ending = True
        self._direct = False
        self._start_closer()
        if self._queue or self._pacer is not None:
            # Close after the queued responses are out.
            self._queue.append(b"")
            return
        self._close()

    # IFlowControlledClient

    def pause_reading(self) -> None:
        if not self._closing:
            self.transport.pauseProducing()

    def resume_reading(self) -> None:
        if not self._closing:
            self.transport.resumeProducing()

    # Sending

    def _update_direct(self) -> None:
        self._direct = not (
            self._legacy
            or self._write_paused
            or self._ending
            or self._queue
            or self._pacer is not None
        )

    def _set_write_paused(self, paused: bool) -> None:
        self._write_paused = paused
        if paused:
            self._direct = False
        else:
            self._pump()

    def _enqueue(self, data: bytes, burst: bool = False) -> None:
        if self._closing:
            return
        self._direct = False
        self._queue.append(data)
        self._queued += len(data)
        if burst:
            self._burst += len(data)
        elif self._queued - self._burst > self._limits.max_send_queue:
            self._drop_slow_consumer()
            return
        self._pump()

    def _pump(self) -> None:
        """
        Write what may be written now: everything while the transport takes
        it, or for a legacy client one response, then the next after
        L{PACING}.
        """
        if self._pacer is not None or self._closing:
            return
        queue = self._queue
        while queue and not self._write_paused:
            data = queue.pop(0)
            self._queued -= len(data)
            if self._burst:
                self._burst = max(0, self._burst - len(data))
            if not data:
                queue.clear()
                self._queued = self._burst = 0
                self._close()
                return
            self._write(data)
            if self._legacy:
                self._pacer = self.factory.clock.callLater(PACING, self._pace)
                return
        self._update_direct()

    def _pace(self) -> None:
        self._pacer = None
        self._pump()

    def _drop_slow_consumer(self) -> None:
        self.log.warn(
            "Dropping {peer}: it is not reading ({size} bytes waiting, limit {limit})",
            peer=self.transport.getPeer(),
            size=self._queued - self._burst,
            limit=self._limits.max_send_queue,
        )
        self._abort()

    def _close(self) -> None:
        """
        Close the connection once the transport has sent what it holds.
        """
        if self._closing:
            return
        self._closing = True
        self._direct = False
        self._unregister()
        self.transport.loseConnection()
        self._start_closer()

    def _abort(self) -> None:
        """
        Close the connection at once, dropping what is not sent.
        """
        self._closing = self._ending = True
        self._direct = False
        self._queue.clear()
        self._queued = self._burst = 0
        self._unregister()
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    def _unregister(self) -> None:
        if self._producer is not None:
            self._producer = None
            self.transport.unregisterProducer()

    def _start_closer(self) -> None:
        # A peer that does not read would keep a closing connection open
        # forever.
        if self._closer is None and self._limits.close_timeout > 0:
            self._closer = self.factory.clock.callLater(self._limits.close_timeout, self._abort)

    # Protocol

    def connectionMade(self) -> None:
        self.setRawMode()
        factory = self.factory
        self._limits = limits = factory.limits
        self.MAX_LENGTH = limits.max_request_size
        self._decoder = StreamDecoder(self.MAX_LENGTH)
        self.callLater = factory.clock.callLater  # for TimeoutMixin
        peer = self.transport.getPeer()
        refusal = factory.admit(self)
        if refusal is not None:
            self.log.warn("Refusing {peer}: {reason}", peer=peer, reason=refusal)
            self._ending = True
            self.transport.write(
                encode_response(
                    format_timestamp(factory.clock.seconds()), SERVER_NAME, "error", refusal
                )
            )
            self._close()
            return
        if hasattr(self.transport, "setTcpNoDelay"):
            try:
                self.transport.setTcpNoDelay(True)
            except OSError:
                pass
        self._set_keepalive()
        if hasattr(self.transport, "registerProducer"):
            self._producer = _SendWindow(self)
            self.transport.registerProducer(self._producer, True)
        if limits.login_timeout > 0:
            self.setTimeout(limits.login_timeout)
        self.log.info("Connection from {peer}", peer=peer)
        self.session = factory.service.connect(self)

    def _set_keepalive(self) -> None:
        limits = self._limits
        if limits.keepalive_idle <= 0 or not hasattr(self.transport, "setTcpKeepAlive"):
            return
        try:
            self.transport.setTcpKeepAlive(True)
            sock = self.transport.getHandle()
        except (OSError, AttributeError):
            return
        options = [
            ("TCP_KEEPIDLE", limits.keepalive_idle),
            ("TCP_KEEPINTVL", limits.keepalive_interval),
            ("TCP_KEEPCNT", limits.keepalive_count),
            # Also give up on a peer that does not acknowledge what was sent
            # (keepalive probes only run on an idle connection).
            (
                "TCP_USER_TIMEOUT",
                1000 * (limits.keepalive_idle + limits.keepalive_interval * limits.keepalive_count),
            ),
        ]
        for name, value in options:
            option = getattr(socket, name, None)
            if option is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
                except (OSError, AttributeError):
                    pass

    def rawDataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        session = self.session
        if session is None or decoder is None or self._ending:
            return  # refused, or closing: nothing more is read
        values = decoder.feed(data)
        if self._legacy and decoder.newline_seen:
            self._legacy = False
            self._update_direct()
        for value in values:
            if self._ending:
                return
            session.receive(parse_request(value))
        if session.username is not None:
            if self.timeOut is not None:
                self.setTimeout(None)
            self.factory.logged_in(self)

    def timeoutConnection(self) -> None:
        self._close_unlogged(
            "No login from {peer} in time",
            f"No login within {self._limits.login_timeout:g} seconds; closing",
        )

    def make_room(self) -> None:
        """
        Close this connection, which has not logged in, to let a newcomer in
        while the server is full (the factory counts it gone at once).
        """
        self._close_unlogged(
            "Closing {peer}, which has not logged in, to make room",
            "Server full: connections that do not log in are closed to make room; "
            "log in right after connecting",
        )

    def _close_unlogged(self, log_format: str, reason: str) -> None:
        session = self.session
        if session is None or session.username is not None or self._ending:
            return
        self.log.info(log_format, peer=self.transport.getPeer())
        session.error(reason)
        self.disconnect()

    def connectionLost(self, reason=None) -> None:
        self._closing = self._ending = True
        self._direct = False
        self._queue.clear()
        self._queued = self._burst = 0
        for call in (self._pacer, self._closer):
            if call is not None and call.active():
                call.cancel()
        self._pacer = self._closer = None
        self._producer = None
        self.setTimeout(None)
        if self._admitted is not None:
            self.factory.release(self)
        if self.session is not None:
            self.log.info("Connection from {peer} closed", peer=self.transport.getPeer())
            self.session.lost()


class ChatServerFactory(Factory):
    """
    Makes a L{ChatServerProtocol} per connection, all feeding one
    L{ChatService}, and counts the connections against L{ConnectionLimits}.
    """

    protocol = ChatServerProtocol
    noisy = False
    limits = ConnectionLimits()

    def __init__(
        self,
        service: Optional[ChatService],
        clock: IReactorTime,
        limits: Optional[ConnectionLimits] = None,
    ) -> None:
        self.service = service
        self.clock = clock
        if limits is not None:
            self.limits = limits
        self.connections = 0
        self.by_address: Dict[str, int] = {}
        # Admitted connections not known to have logged in, oldest first.
        self._unlogged: Dict[ChatServerProtocol, None] = {}
        self._batch: Optional[bytes] = None
        self._batch_responses: List[bytes] = []

    def responses_in(self, data: bytes) -> List[bytes]:
        """
        The single responses in a delivery. A broadcast batch goes to every
        recipient as the same object, so it is split once, and the queues
        of all recipients share the pieces.
        """
        if data is self._batch:
            return self._batch_responses
        responses = split_responses(data)
        if len(responses) > 1:
            # Only batches are kept: a single response passing through must
            # not push out the batch that other recipients still share.
            self._batch, self._batch_responses = data, responses
        return responses

    def admit(self, protocol: ChatServerProtocol) -> Optional[str]:
        """
        Count a new connection, or say why it is refused.

        A connection that has not logged in never keeps a newcomer out: past
        a limit, the oldest such connection (from the same address, for the
        per-address limit) is closed to make room. Only logged-in users
        fill the server.
        """
        limits = self.limits
        address = str(getattr(protocol.transport.getPeer(), "host", ""))
        if limits.max_connections and self.connections >= limits.max_connections:
            if not self._make_room(None):
                return "Server full: too many connections; try again later"
        if address and limits.max_connections_per_address:
            if self.by_address.get(address, 0) >= limits.max_connections_per_address:
                if not self._make_room(address):
                    return (
                        "Too many connections from your address "
                        f"(limit {limits.max_connections_per_address})"
                    )
        self.connections += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        protocol._admitted = address
        self._unlogged[protocol] = None
        return None

    def _make_room(self, address: Optional[str]) -> bool:
        """
        Close the oldest admitted connection that has not logged in (from
        C{address}, if given); return whether there was one.
        """
        for protocol in list(self._unlogged):
            session = protocol.session
            if session is not None and session.username is not None:
                del self._unlogged[protocol]  # logged in since: not a candidate
                continue
            if address is None or protocol._admitted == address:
                self.release(protocol)
                protocol.make_room()
                return True
        return False

    def logged_in(self, protocol: ChatServerProtocol) -> None:
        """
        C{protocol} has logged in: it is no longer closed to make room.
        """
        self._unlogged.pop(protocol, None)

    def release(self, protocol: ChatServerProtocol) -> None:
        address = protocol._admitted
        if address is None:
            return
        protocol._admitted = None
        self._unlogged.pop(protocol, None)
        self.connections -= 1
        count = self.by_address.get(address, 0) - 1
        if count > 0:
            self.by_address[address] = count
        else:
            self.by_address.pop(address, None)
