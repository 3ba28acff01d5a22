"""
The TCP transport: a protocol per connection that turns bytes into
requests for the chat core, and the core's events into the standard's
responses.

Framing: bytes go to a L{chat.wire.StreamDecoder} bounded by
L{ConnectionLimits.max_request_size}, because clients in the field send
JSON objects with nothing after them.

Sending depends on the client's dialect (PROTOCOL.md, section 5; the
encodings are in L{chat.transports.encoding}):

- A client that ends its requests with a newline reads a stream: responses
  are written as they come. A broadcast is written straight to the socket
  when Twisted's buffer for it is empty (see L{ChatServerProtocol.send}).
- A client that sends bare JSON is a legacy client that reads one response
  per C{recv()}: its responses are written one at a time, L{PACING} seconds
  apart, each small enough for its read; chat messages that wait at once go
  as one C{history} response, so it keeps up with a busy chat.

Protection (see L{ConnectionLimits}): connections are admitted by an
L{Admission}; a connection that does not log in in time is closed; TCP
keepalive finds dead peers; and a client that does not read what it is sent
is dropped. For the last, the protocol registers a push producer with its
transport: while Twisted's write buffer is full, responses wait in the
protocol's L{SendQueue} (the same queue that paces a legacy client), and
when that holds more than C{max_send_queue} bytes the connection is
aborted, as C{loseConnection()} would wait forever for a peer that does not
read.
"""

from __future__ import annotations

import os
import socket
from typing import Any, List, Optional

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from chat.core.events import Broadcast, Capabilities, ChatMessage, HistoryWindow, Notice
from chat.core.interfaces import IChatClient, IFlowControlledClient
from chat.core.service import ChatService
from chat.core.session import Session
from chat.transports import encoding
from chat.transports.connection import (
    Admission,
    ConnectionLimits,
    LoginDeadline,
    SendQueue,
    entry_size,
)
from chat.wire import StreamDecoder, parse_request

__all__ = ["PACING", "ChatServerFactory", "ChatServerProtocol", "ConnectionLimits"]

# A module's logger, not the descriptor that binds one to each connection:
# an event naming a connection as its source would keep it alive as long as
# any observer keeps the event.
_log = Logger(namespace=__name__)

#: Seconds between two responses to a legacy client.
PACING = 0.010

#: A response larger than this (a long history) waits in the send queue as
#: views of this size into its bytes, which every login shares, and goes to
#: Twisted's buffer (a copy of its own) a view at a time, as the client
#: reads: Twisted's default buffer size, past which it pauses its producer.
CHUNK = 64 * 1024


class _Close:
    """
    Stands in a send queue for "close the connection here".
    """

    line = b""


_CLOSE = _Close()


def _chunked(entries: List[Any]) -> List[Any]:
    """
    C{entries}, with each response larger than L{CHUNK} bytes as views into
    it of at most that size.
    """
    if all(type(entry) is not bytes or len(entry) <= CHUNK for entry in entries):
        return entries
    out: List[Any] = []
    for entry in entries:
        if type(entry) is bytes and len(entry) > CHUNK:
            view = memoryview(entry)
            out += [view[i : i + CHUNK] for i in range(0, len(entry), CHUNK)]
        else:
            out.append(entry)
    return out


def describe_peer(transport: Any) -> str:
    """
    Who is at the other end, for the log: an address and port, or for a
    Unix socket (whose clients have no address) the socket's path.
    """
    peer = transport.getPeer()
    if isinstance(peer, UNIXAddress) and not peer.name:
        try:
            name = getattr(transport.getHost(), "name", None)
        except (AttributeError, OSError):
            # Twisted's Unix transport asks its socket, which is gone once
            # the connection has closed.
            name = None
        if not name:
            return "a client of a Unix socket"
        return f"a client of the Unix socket {os.fsdecode(name)}"
    if isinstance(peer, (IPv4Address, IPv6Address)):
        return f"{peer.host} port {peer.port}"
    return str(peer)


@implementer(IPushProducer)
class _SendWindow:
    """
    Told by the transport when its write buffer is full and when it has
    drained. (The protocol itself cannot be the producer: its own
    pauseProducing would pause reading.)
    """

    __slots__ = ("_protocol",)  # one per connection

    def __init__(self, protocol: "ChatServerProtocol") -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        self._protocol._set_write_paused(True)

    def resumeProducing(self) -> None:
        self._protocol._set_write_paused(False)

    def stopProducing(self) -> None:
        pass


@implementer(IChatClient, IFlowControlledClient, IHalfCloseableProtocol)
class ChatServerProtocol(Protocol, LoginDeadline):
    """
    One client connection.
    """

    factory: "ChatServerFactory"

    def __init__(self) -> None:
        # None until the connection is admitted, and for good if it is not.
        self.session: Optional[Session] = None
        self.admitted: Optional[str] = None  # the address it is counted under
        self._decoder: Optional[StreamDecoder] = None
        self._queue = SendQueue()
        self._pacer: Optional[IDelayedCall] = None
        self._closer: Optional[IDelayedCall] = None
        self._legacy = True
        self._write_paused = False
        self._ending = False  # disconnect() was called: send nothing more
        self._closing = False  # the transport is being closed
        self._direct = False  # a broadcast may be written straight to the socket
        self._producer: Optional[_SendWindow] = None
        self._limits = ConnectionLimits()
        self._dropped = False  # the server cut the connection
        # The extensions the client was granted: how events are encoded.
        self._caps = encoding.STANDARD

    # IChatClient

    @property
    def legacy(self) -> bool:
        """
        Whether this client sends bare JSON and needs paced responses.
        """
        return self._legacy

    @property
    def history_budget(self) -> Optional[int]:
        return encoding.LEGACY_HISTORY_BYTES if self._legacy else None

    @property
    def logged_in(self) -> bool:
        return self.session is not None and self.session.username is not None

    def send(self, event: Any) -> None:
        if self._direct and type(event) is Broadcast:
            # The hot path: a broadcast to a stream client whose transport
            # holds nothing. Send it on the TCP socket at once, as asyncio
            # does: a broadcast writes to every recipient in one turn, and
            # left to the reactor each write costs two epoll_ctl calls and a
            # doWrite, twice the cost of the send itself. The guards read
            # Twisted's own buffer attributes (not public API), with
            # defaults that fall back to transport.write if they ever
            # change; tests/test_direct_write.py fails if a guard or a byte
            # goes missing.
            data = event.data if not self._caps else encoding.broadcast_data(event, self._caps)
            transport = self.transport
            sent = 0
            if (
                not getattr(transport, "_tempDataLen", 1)
                and not getattr(transport, "dataBuffer", b"?")
                and isinstance(transport, tcp.Connection)
                and transport.connected
                and not transport.disconnecting
            ):
                try:
                    sent = transport.socket.send(data)
                except OSError:
                    sent = 0  # the reactor finds out what is wrong
                if sent == len(data):
                    return
            self._write_rest(event, sent)
            return
        if self._ending:
            return
        if type(event) is Capabilities:
            self._caps = event.granted  # for this answer and all that follow
        history_format = self.factory.service.history_format
        if self._legacy:
            entries = encoding.legacy(event, history_format, self._caps)
        else:
            entries = encoding.stream(event, history_format, self._caps)
        if not entries:
            return
        self._enqueue(entries, burst=type(event) is HistoryWindow and event.login)

    def _write_now(self, data: bytes) -> None:
        """
        Write one response: on the socket itself when Twisted's buffer is
        empty (the guards of L{send}'s broadcast path), else, or what the
        socket did not take, through the transport. Left to the reactor,
        each write would cost two epoll_ctl calls and a doWrite besides the
        send (a legacy client's responses go one every L{PACING}); and an
        idle connection whose login answer went through Twisted's buffer
        keeps a dictionary of attributes of about 800 bytes (the buffer's
        two attributes that Python's shared-key instance layout has no room
        for).
        """
        transport = self.transport
        if (
            not getattr(transport, "_tempDataLen", 1)
            and not getattr(transport, "dataBuffer", b"?")
            and isinstance(transport, tcp.Connection)
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
        transport.write(data if type(data) is bytes else bytes(data))

    def _write_rest(self, event: Broadcast, sent: int) -> None:
        """
        What the socket did not take of a broadcast goes to the transport
        (and, once it pauses us, to our queue) message by message, from the
        first byte not sent.
        """
        rest: List[bytes] = []
        offset = 0
        for line in encoding.broadcast_lines(event, self._caps):
            end = offset + len(line)
            if end > sent:
                rest.append(line if offset >= sent else line[sent - offset :])
            offset = end
        for i, piece in enumerate(rest):
            if self._write_paused:
                self._enqueue(rest[i:])
                return
            self.transport.write(piece)

    def disconnect(self) -> None:
        if self._ending:
            return
        self._ending = True
        self._direct = False
        self._start_closer()
        if self._queue:
            # Close after the queued responses are out. (The pace is kept
            # between two responses; a close is none, and waits for none.)
            self._queue.push([_CLOSE])
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

    def _enqueue(self, entries: List[Any], burst: bool = False) -> None:
        if self._closing:
            return
        # A stream client that has nothing waiting takes these at once: an
        # answer larger than the limit (a page of long messages) is no sign
        # that it does not read.
        idle = not (self._legacy or self._write_paused or self._queue or self._pacer is not None)
        self._direct = False
        if not self._legacy:
            entries = _chunked(entries)
        queue = self._queue
        limit = self._limits.max_send_queue
        if burst or idle or queue.counted + sum(map(entry_size, entries)) <= limit:
            queue.push(entries, burst)
        elif self._legacy and not self._write_paused:
            # A legacy client that takes everything it is sent, but the chat
            # goes faster than one response per PACING can carry (messages
            # too long to combine): it reads, so it is not dropped. The
            # oldest messages waiting make room, down to 3/4 of the limit, and
            # it is told how many it missed (they are in the history).
            queue.push(entries)
            skipped = queue.skip(ChatMessage, limit * 3 // 4, self._skipped_notice)
            if queue.counted > limit:
                self._drop_slow_consumer()
                return
            if skipped:
                self.factory.service.stats.skipped += skipped
                _log.info(
                    "Skipped {count} messages for {peer}: it reads one response per "
                    "{pacing} s, slower than the chat",
                    count=skipped,
                    peer=describe_peer(self.transport),
                    pacing=PACING,
                )
        else:
            # Response by response: the client is dropped at the first one
            # past the limit, so it never holds more than the limit and one
            # response.
            for entry in entries:
                queue.push([entry])
                if queue.counted > limit:
                    self._drop_slow_consumer()
                    return
        self._pump()

    def _skipped_notice(self, count: int) -> bytes:
        return encoding.info(
            self.factory.service.now(),
            f"{count} messages skipped: they came faster than they can be sent to this "
            "client one by one (they are kept in the chat's history)",
        )

    def _pump(self) -> None:
        """
        Write what may be written now: everything while the transport takes
        it, or for a legacy client one response, then the next after
        L{PACING}.
        """
        if self._pacer is not None or self._closing:
            return
        queue = self._queue
        legacy = self._legacy
        while queue and not self._write_paused:
            entry = queue.peek()
            if type(entry) is ChatMessage:
                data = self._legacy_messages()
            elif entry is _CLOSE:
                queue.clear()
                self._close()
                return
            else:
                queue.pop()
                data = entry
            self._write_now(data)
            if legacy:
                self._pacer = self.factory.clock.callLater(PACING, self._pace)
                return
        self._update_direct()

    def _legacy_messages(self) -> bytes:
        """
        Take the chat messages at the head of the queue that fit in one
        legacy response: one alone as a C{message} response, several as one
        C{history} response.
        """
        queue = self._queue
        waiting = []
        for i in range(min(len(queue), 64)):
            entry = queue.peek(i)
            if type(entry) is not ChatMessage:
                break
            waiting.append(entry)
        service = self.factory.service
        count, data = encoding.legacy_batch(waiting, service.history_format, service.now())
        queue.pop(count)
        return data

    def _pace(self) -> None:
        self._pacer = None
        self._pump()

    def describe(self) -> str:
        return describe_peer(self.transport)

    def _drop_slow_consumer(self) -> None:
        self._dropped = True
        self.factory.service.stats.dropped["not_reading"] += 1
        _log.warn(
            "Dropping {peer}: it is not reading ({size} bytes waiting, limit {limit})",
            peer=describe_peer(self.transport),
            size=self._queue.counted,
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
        factory = self.factory
        self._limits = limits = factory.limits
        self._decoder = StreamDecoder(limits.max_request_size)
        peer = describe_peer(self.transport)
        address = self.transport.getPeer()
        refusal = factory.admission.admit(self, str(getattr(address, "host", "")))
        if refusal is not None:
            _log.warn("Refusing {peer}: {reason}", peer=peer, reason=refusal)
            self._ending = True
            self.transport.write(Notice("error", refusal, factory.service.now()).encode())
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
        self.start_login_deadline(limits.login_timeout, factory.clock)
        _log.info("Connection from {peer}", peer=peer)
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
            # (keepalive probes only run on an idle connection). In
            # milliseconds, a C int: longer settings get the longest, as
            # setsockopt raises TypeError for a larger number.
            (
                "TCP_USER_TIMEOUT",
                min(
                    1000
                    * (limits.keepalive_idle + limits.keepalive_interval * limits.keepalive_count),
                    2**31 - 1,
                ),
            ),
        ]
        for name, value in options:
            option = getattr(socket, name, None)
            if option is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, option, value)
                except (OSError, AttributeError):
                    pass

    def dataReceived(self, data: bytes) -> None:
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
            self.logged_in_now(self.factory.admission)

    def readConnectionLost(self) -> None:
        # The peer shut down its sending side (SHUT_WR) after its last
        # request and reads on: its answers go out, then it is closed.
        # (Without this, Twisted would close at once and drop them.)
        session = self.session
        if session is not None and not self._ending:
            session.input_ended()

    def writeConnectionLost(self) -> None:
        pass  # (the server never shuts down only its sending side)

    def connectionLost(self, reason: object = None) -> None:
        self._closing = self._ending = True
        self._direct = False
        self._queue.clear()
        for call in (self._pacer, self._closer):
            if call is not None and call.active():
                call.cancel()
        self._pacer = self._closer = None
        self._unregister()
        self.setTimeout(None)
        self.factory.admission.release(self)
        session = self.session
        if session is not None:
            _log.info("Connection from {peer} closed", peer=describe_peer(self.transport))
            # The session refers to this protocol: drop the way back, so that
            # both are freed at once, with no cycle for the garbage collector
            # (which an idle server never runs).
            self.session = None
            session.lost(self._dropped)


class ChatServerFactory(Factory):
    """
    Makes a L{ChatServerProtocol} per connection, all feeding one
    L{ChatService}, admitted by one L{Admission} (which another transport's
    factory may share, so that the limits count all connections).
    """

    protocol = ChatServerProtocol
    noisy = False

    def __init__(
        self,
        service: ChatService,
        clock: IReactorTime,
        limits: Optional[ConnectionLimits] = None,
        admission: Optional[Admission] = None,
    ) -> None:
        self.service = service
        self.clock = clock
        if admission is None:
            admission = Admission(limits if limits is not None else ConnectionLimits())
        self.admission = admission

    @property
    def limits(self) -> ConnectionLimits:
        return self.admission.limits

    @property
    def connections(self) -> int:
        return self.admission.connections
