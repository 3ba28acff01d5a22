"""
The client connections the conformance checker makes: blocking sockets that
read the way clients in the field do, with a deadline on every read.

The clients in the field are small blocking Python programs: they send
C{json.dumps(request)} in one write and read each response with one
C{recv(4096)} and one C{json.loads}. A L{Probe} does the same (it reads with
C{recv(4096)} and keeps every read as it came), so the checker sees how the
server's bytes are cut into reads, which is what breaks those clients; a
reactor-driven client would hide that. The checker runs its steps one after
another, so blocking sockets with timeouts are also the simplest way to put
a deadline on every wait.

Whatever the server sends is also decoded as a stream (L{chat.wire.StreamDecoder}),
so the checks see every response even when a server's framing is wrong.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from typing import Any, Callable, List, Optional

from chat.wire import DecodeError, StreamDecoder, encode_json

#: What clients in the field pass to C{recv()}.
READ_SIZE = 4096

#: A connection that receives more than this is given up (a server that
#: floods the checker must not exhaust its memory).
MAX_RECEIVED = 8 * 1024 * 1024

#: Stands for a request whose C{content} key is left out.
MISSING = object()


def cpu_wait() -> Optional[int]:
    """
    Nanoseconds this thread has spent ready to run but waiting for a CPU,
    where the system says (Linux), else None.
    """
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


class ProbeError(Exception):
    """
    A connection did not do what a check needed; the message says what
    happened, in one sentence without a final stop.
    """


class CannotConnect(ProbeError):
    """
    The connection could not be opened.
    """


class NoAnswer(ProbeError):
    """
    Nothing that was waited for arrived before the deadline.
    """


class Closed(ProbeError):
    """
    The server closed the connection.
    """


def describe_socket_error(exc: BaseException) -> str:
    """
    A short phrase for an error from C{socket}.
    """
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, socket.gaierror):
        return "host not found"
    if isinstance(exc, socket.timeout):
        return "timed out"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return text.strip().rstrip(".").lower() or type(exc).__name__


def show(value: Any, limit: int = 160) -> str:
    """
    A response as a short line of text for a report.
    """
    if isinstance(value, DecodeError):
        return f"<not JSON: {value.reason}>"
    try:
        text = encode_json(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    return text


def kind(value: Any) -> Optional[str]:
    """
    The C{response} word of a response, or None if it has none.
    """
    if isinstance(value, dict) and isinstance(value.get("response"), str):
        return value["response"]
    return None


class Probe:
    """
    One client connection to the server under test.

    @param label: how reports name this connection.
    @param framing: C{"bare"} sends each request as bare JSON, with nothing
        after it, as every client in the field does; C{"newline"} ends each
        request with a newline.
    @param timeout: seconds to wait for anything: the connection, an answer,
        the connection to close.
    @param transcript: a list every response received is appended to.

    @ivar responses: every response received, decoded, in order (a
        L{DecodeError} for data that is not JSON).
    @ivar reads: the bytes of every C{recv()}, as they came.
    @ivar waits: for each read, how long (ns) this thread waited for a CPU
        since the read or request before it (None where unknown): two
        responses sent apart can share a read because the checker was late.
    @ivar username: the name this connection logged in with, if it did.
    """

    def __init__(
        self,
        host: str,
        port: int,
        label: str,
        framing: str = "newline",
        timeout: float = 5.0,
        transcript: Optional[List[Any]] = None,
    ) -> None:
        if framing not in ("bare", "newline"):
            raise ValueError(f"unknown framing {framing!r}")
        self.host = host
        self.port = port
        self.label = label
        self.framing = framing
        self.timeout = timeout
        self.transcript = transcript if transcript is not None else []
        self.responses: List[Any] = []
        self.reads: List[bytes] = []
        self.waits: List[Optional[int]] = []
        self._wait_mark = cpu_wait()
        self.username: Optional[str] = None
        self.closed = False
        self._sock: Optional[socket.socket] = None
        self._decoder = StreamDecoder(max_size=MAX_RECEIVED)
        self._received = 0
        self._seen = 0  # how many responses next() and until() have returned

    def __str__(self) -> str:
        framing = "bare JSON" if self.framing == "bare" else "newline-terminated"
        return f"{self.label} ({framing})"

    def connect(self) -> "Probe":
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise CannotConnect(
                f"cannot connect to {self.host} port {self.port}: {describe_socket_error(e)}"
            ) from None
        return self

    # Sending

    def send(self, word: str, content: Any = None) -> None:
        """
        Send one request, C{content} left out if it is L{MISSING}.
        """
        request = {"request": word}
        if content is not MISSING:
            request["content"] = content
        self.send_raw(json.dumps(request).encode("utf-8"))

    def send_raw(self, data: bytes) -> None:
        """
        Send C{data} in one write, with a newline after it if this
        connection is newline-terminated.
        """
        if self.framing == "newline":
            data += b"\n"
        if self.closed or self._sock is None:
            raise Closed(f"the server had closed the connection of {self}")
        self._wait_mark = cpu_wait()
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except socket.timeout:
            raise NoAnswer(
                f"the server did not read a request from {self} within {self.timeout:g} s"
            ) from None
        except OSError:
            self.closed = True
            raise Closed(f"the server had closed the connection of {self}") from None

    # Receiving

    def _receive(self, deadline: float) -> None:
        """
        One C{recv()}, waiting at most until C{deadline}.
        """
        assert self._sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            return
        self._sock.settimeout(left)
        try:
            data = self._sock.recv(READ_SIZE)
        except socket.timeout:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        self.reads.append(data)
        mark, self._wait_mark = self._wait_mark, cpu_wait()
        self.waits.append(
            None if mark is None or self._wait_mark is None else self._wait_mark - mark
        )
        self._received += len(data)
        if self._received > MAX_RECEIVED:
            self.close()
            raise ProbeError(f"the server sent {self} more than {MAX_RECEIVED} bytes")
        for value in self._decoder.feed(data):
            self.responses.append(value)
            self.transcript.append(value)

    def until(self, condition: Callable[[Any], bool], what: str) -> List[Any]:
        """
        Read until a response not yet returned satisfies C{condition}.

        @param what: what is waited for, for the error message.
        @return: the responses not yet returned, up to and including that one.
        @raise NoAnswer: if none arrives within the timeout.
        @raise Closed: if the server closes the connection first.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            for i in range(self._seen, len(self.responses)):
                if condition(self.responses[i]):
                    out = self.responses[self._seen : i + 1]
                    self._seen = i + 1
                    return out
            if self.closed:
                raise Closed(
                    f"the server closed the connection of {self} while it waited for {what}"
                    + self._instead()
                )
            if time.monotonic() >= deadline:
                raise NoAnswer(
                    f"{self} waited {self.timeout:g} s for {what} in vain" + self._instead()
                )
            self._receive(deadline)

    def _instead(self) -> str:
        unread = self.responses[self._seen :]
        if not unread:
            return ""
        shown = "; ".join(show(r) for r in unread[-3:])
        more = f" ({len(unread) - 3} more before)" if len(unread) > 3 else ""
        return f"; received instead{more}: {shown}"

    def next(self, what: str = "answer") -> Any:
        """
        The next response not yet returned, waiting for it if need be.
        """
        return self.until(lambda r: True, what)[0]

    def reply(self, what: str) -> Any:
        """
        The next response that is not a C{message} or C{history}: those can
        come at any time (other users' messages, the rest of a history), the
        others only as answers.
        """
        return self.until(lambda r: kind(r) not in ("message", "history"), what)[-1]

    def answer(self, word: str, content: Any = None, what: Optional[str] = None) -> Any:
        """
        Send a request and return its answer (see L{reply}).
        """
        self.send(word, content)
        return self.reply(what or f"the answer to {word}")

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        """
        Read (keeping what arrives) until the server closes the connection.

        @return: whether it closed within C{timeout} (default: the timeout).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.closed and time.monotonic() < deadline:
            self._receive(deadline)
        return self.closed

    # Closing

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.closed = True

    def abort(self) -> None:
        """
        Close with a TCP reset, as a client that crashes or loses its
        network can.
        """
        if self._sock is not None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def leave(self) -> None:
        """
        Close politely: log out first if logged in, and wait (at most the
        timeout) for the server's answer or close, so that no name stays
        taken and servers that cannot take a client that just drops are
        spared one.
        """
        if self._sock is not None and not self.closed and self.username is not None:
            try:
                self.send("logout", None)
                self.until(lambda r: kind(r) in ("info", "error"), "the answer to logout")
            except ProbeError:
                pass
        self.close()


def responses_per_read(reads: List[bytes]) -> List[int]:
    """
    How many responses each read holds, wholly or in part: what a client
    that does one C{json.loads} per C{recv()} needs to be exactly 1.

    @param reads: consecutive reads starting at the start of a response.
    """
    decoder = StreamDecoder(max_size=MAX_RECEIVED)
    out = []
    for data in reads:
        before = decoder.buffered > 0
        complete = len(decoder.feed(data))
        after = decoder.buffered > 0
        out.append(max(1, complete) if before and after else complete + after)
    return out


_WHITESPACE = re.compile(r"\s*")


def response_sizes(data: bytes) -> List[int]:
    """
    The size in bytes of each JSON value in C{data}, with the newline after
    it if there is one (a client reading C{recv(4096)} needs both in one
    read), up to the first thing that is not JSON.
    """
    text = data.decode("utf-8", "surrogateescape")
    decoder = json.JSONDecoder()
    sizes = []
    pos = _WHITESPACE.match(text).end()
    while pos < len(text):
        try:
            _, end = decoder.raw_decode(text, pos)
        except ValueError:
            break
        if text.startswith("\n", end) or text.startswith("\r\n", end):
            end = text.index("\n", end) + 1
        sizes.append(len(text[pos:end].encode("utf-8", "surrogateescape")))
        pos = _WHITESPACE.match(text, end).end()
    return sizes
