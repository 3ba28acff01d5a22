"""
The terminal client of the KTN chat protocol: C{python -m chat.client}.

It is a "stupid" client in the standard's sense: it turns what the user types
into requests and shows what the server answers (PROTOCOL.md, section 5,
"What our client sends and accepts").

This module holds everything that does not know about the terminal:

- L{parse_input}: a typed line to C{(request, content)}.
- L{interpret}: one decoded response, from any server in the field, to a list
  of L{Entry} values (history unpacked, letter case and C{msg} forgiven).
- L{neutralise} and L{Renderer}: an L{Entry} to text that is safe to show;
  nothing received from the network can control the terminal.
- L{ChatClientProtocol}: the TCP side. It sends requests (compact JSON and a
  newline, one per write, spaced so that no two share a segment), decodes
  responses with L{chat.wire.StreamDecoder} and hands them to an
  L{IChatView}. It knows nothing of stdio.
- L{Options} and L{main}: the command line, started with C{task.react}.

The keyboard and screen side (plain and interactive modes) is in
L{chat.terminal}.
"""

from __future__ import annotations

import json
import os
import re
import sys
import textwrap
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

from twisted.internet import error as ierror
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import Interface

from chat.wire import DecodeError, StreamDecoder, encode_json, encode_request

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 9998

#: The largest single response the client accepts. Servers send the whole
#: history in one response, so this is far above the server's request bound.
MAX_RESPONSE_SIZE = 64 * 1024 * 1024

#: Seconds between two requests. Most servers in the field read one request
#: per C{recv()}; requests written back to back (a pasted or piped script)
#: would share a TCP segment and crash them.
REQUEST_GAP = 0.05

#: The requests of the standard, for completion at the start of a line.
STANDARD_REQUESTS = ("login", "logout", "msg", "names", "help")

_USERNAME = re.compile(r"[A-Za-z0-9]+")
# Names separated by commas, semicolons or spaces. Each separator is
# required, so that no run of letters can be split two ways (which would
# make a long reply take exponential time to match).
_NAMES_ANSWER = re.compile(r"\s*[A-Za-z0-9]+(?:(?:\s*[,;]\s*|\s+)[A-Za-z0-9]+)*\s*[.]?\s*")

#: What connectionLost gets when the reason is not given.
_CONNECTION_DONE = Failure(ierror.ConnectionDone())


# Input


def parse_input(line: str) -> Optional[Tuple[str, Optional[str]]]:
    """
    Turn one typed line into C{(request, content)}, or None for a blank line.

    The first word is the request, lower-cased; the rest of the line, if any,
    is the content, else C{None}. A leading C{/} is dropped, as many chat
    clients accept C{/names}; neither convenience changes what the standard
    forms (C{login NAME}, C{msg TEXT}, C{names}, C{help}, C{logout}) send.
    """
    text = line.strip()
    if text.startswith("/"):
        text = text[1:].lstrip()
    if not text:
        return None
    parts = text.split(None, 1)
    word = parts[0].lower()
    rest = parts[1] if len(parts) > 1 else None
    return word, rest


# Output: from a decoded value to entries


@dataclass(frozen=True)
class Entry:
    """
    One thing to show, taken from a response.

    @ivar kind: C{"message"}, C{"info"}, C{"error"}, C{"history"} (an empty
        history), C{"malformed"} (data that is not JSON), C{"odd"} (JSON
        that is not an object) or any other response word as received.
    @ivar timestamp: the raw C{timestamp} value, or None.
    @ivar sender: the raw C{sender} value, or None.
    @ivar content: the raw C{content} value.
    @ivar history: whether the entry comes from a C{history} response.
    """

    kind: str
    timestamp: Any = None
    sender: Any = None
    content: Any = None
    history: bool = False


def _field(obj: dict, key: str) -> Any:
    # Keys in any letter case: {"Response": "Info"} is still a response.
    if key in obj:
        return obj[key]
    for name, value in obj.items():
        if isinstance(name, str) and name.strip().lower() == key:
            return value
    return None


def response_word(value: Any) -> Optional[str]:
    """
    The response word of a decoded value, lower-cased, C{msg} read as
    C{message}; None if the value has none.
    """
    if not isinstance(value, dict):
        return None
    word = _field(value, "response")
    if not isinstance(word, str):
        return None
    word = word.strip().lower()
    return "message" if word == "msg" else word


def _decode_nested(value: Any, depth: int = 0) -> Any:
    # History items are often JSON strings, sometimes encoded twice.
    while isinstance(value, str) and depth < 4:
        stripped = value.strip()
        if not stripped or stripped[0] not in '{["':
            return value
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return value
        depth += 1
    return value


def _history_items(content: Any) -> List[Any]:
    content = _decode_nested(content)
    if content is None or content == "":
        return []
    if isinstance(content, list):
        items: List[Any] = []
        for item in content:
            item = _decode_nested(item)
            if isinstance(item, list):
                items.extend(_decode_nested(i) for i in item)
            else:
                items.append(item)
        return items
    return [content]


def interpret(value: Any) -> List[Entry]:
    """
    What to show for one value from the server's stream.

    Accepts every response variant of PROTOCOL.md section 5: any letter case
    in keys and response words, C{msg} for C{message}, history as a list of
    objects, a list of JSON strings or one JSON string. Anything else is
    shown, never dropped.
    """
    if isinstance(value, DecodeError):
        # The decoder's reasons are worded for the server's side.
        reason = value.reason.replace("Request", "Response").replace("request", "response")
        return [Entry("malformed", content=reason)]
    if not isinstance(value, dict):
        return [Entry("odd", content=value)]
    word = response_word(value)
    timestamp = _field(value, "timestamp")
    sender = _field(value, "sender")
    content = _field(value, "content")
    if word is None:
        # No response word: treat an object with content as a message.
        if content is None:
            return [Entry("odd", content=value)]
        word = "message"
    if word != "history":
        return [Entry(word, timestamp, sender, content)]
    items = _history_items(content)
    if not items:
        return [Entry("history", timestamp, sender, None, history=True)]
    entries = []
    for item in items:
        if isinstance(item, dict):
            for entry in interpret(item):
                if entry.kind == "history":
                    # A history inside a history: nothing left to show.
                    continue
                entries.append(
                    Entry(entry.kind, entry.timestamp, entry.sender, entry.content, True)
                )
        else:
            entries.append(Entry("message", None, None, item, history=True))
    return entries


# Output: from entries to safe text

# C0 and C1 controls, DEL, lone surrogates, and the characters that reorder
# or break lines on display (bidi controls, line and paragraph separators).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    code = ord(char)
    if char == "\t":
        return " "
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def neutralise(text: str) -> str:
    """
    Make text from the network safe to write to a terminal.

    Every control character, escape sequence introducer, bidi control and
    line separator is replaced by a visible stand-in (C{ESC} becomes C{^[},
    C{CR} C{^M}, U+009B C{<U+009B>}), so a peer cannot clear the screen, move
    the cursor, set the title or fake a line. A tab becomes a space.
    """
    return _UNSAFE.sub(_escape, text)


def to_text(value: Any) -> str:
    """
    Any JSON value as text: strings as they are, lists of strings joined
    with commas, anything else as compact JSON.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return encode_json(value)


def _parse_time(value: Any) -> Optional[datetime]:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is not None:
                return parsed.astimezone()
            return parsed
    if isinstance(value, (int, float)):
        seconds = float(value)
        if seconds > 1e11:
            # Milliseconds since the epoch (JavaScript's Date.now()).
            seconds /= 1000.0
        try:
            return datetime.fromtimestamp(seconds, timezone.utc).astimezone()
        except (OverflowError, OSError, ValueError):
            return None
    return None


# Colours: Select Graphic Rendition parameters.
_DIM = "2"
_BOLD = "1"
_RED = "31"
_GREEN = "32"
_YELLOW = "33"
_BLUE = "34"
_MAGENTA = "35"
_CYAN = "36"
_SENDER_COLOURS = ("32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96")


class Renderer:
    """
    Turns L{Entry} values into lines of text for a person.

    @param colour: add ANSI colours.
    @param multiline: keep line breaks inside a text (continuation lines are
        indented so they cannot pass for another response); without it every
        entry is exactly one line and a line break shows as C{\\n}.
    @param today: returns the current date; times from another day show their
        date too.
    """

    def __init__(
        self,
        colour: bool = False,
        multiline: bool = False,
        today: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.colour = colour
        self.multiline = multiline
        self._today = today or (lambda: datetime.now().date())

    def _paint(self, text: str, *sgr: str) -> str:
        if not self.colour or not sgr or not text:
            return text
        return f"\x1b[{';'.join(sgr)}m{text}\x1b[0m"

    def time(self, value: Any) -> str:
        """
        A timestamp for display: C{HH:MM:SS} in local time (with the date if
        not today), or the server's text made safe when it is not a time.
        """
        if value is None or value == "":
            return ""
        parsed = _parse_time(value)
        if parsed is None:
            text = neutralise(to_text(value))
            return text if len(text) <= 32 else text[:31] + "…"
        if parsed.date() == self._today():
            return parsed.strftime("%H:%M:%S")
        return parsed.strftime("%Y-%m-%d %H:%M:%S")

    def sender(self, value: Any) -> str:
        text = neutralise(to_text(value)).strip()
        if not text:
            return "<?>"
        colour = _SENDER_COLOURS[sum(text.encode("utf-8")) % len(_SENDER_COLOURS)]
        return self._paint(f"<{text}>", _BOLD, colour)

    def _body(self, value: Any) -> List[str]:
        text = to_text(value).replace("\r\n", "\n")
        lines = text.split("\n")
        if not self.multiline:
            return ["\\n".join(neutralise(line) for line in lines)]
        return [neutralise(line) for line in lines]

    def lines(self, entry: Entry) -> List[str]:
        """
        The lines that show C{entry}.
        """
        parts = []
        stamp = self.time(entry.timestamp)
        if stamp:
            parts.append(self._paint(stamp, _DIM))
        if entry.history:
            parts.append(self._paint("[history]", _MAGENTA))
        kind = entry.kind
        body = self._body(entry.content)
        if kind == "message":
            parts.append(self.sender(entry.sender))
        elif kind == "error":
            parts.append(self._paint("[error]", _BOLD, _RED))
        elif kind == "info":
            parts.append(self._paint("[info]", _CYAN))
        elif kind == "history":
            body = [self._paint("(empty)", _DIM)]
        elif kind == "malformed":
            parts.append(self._paint("[client]", _YELLOW))
            body = [f"ignored data from the server that is not JSON ({entry.content})"]
        elif kind == "odd":
            parts.append(self._paint("[client]", _YELLOW))
            body = [
                "unexpected data from the server: "
                + neutralise(json.dumps(entry.content, ensure_ascii=False))
            ]
        else:
            parts.append(self._paint(f"[{neutralise(kind)}]", _YELLOW))
            if entry.sender not in (None, ""):
                parts.append(self.sender(entry.sender))
        head = " ".join(parts)
        first = f"{head} {body[0]}" if body[0] else head
        # Continuation lines start with a bar under the head, so that a text
        # with line breaks cannot pass for other responses.
        return [first] + [self._paint("  | ", _DIM) + line for line in body[1:]]

    def notice(self, text: str) -> str:
        """
        A line from the client itself (not from the server).
        """
        return self._paint("***", _YELLOW) + " " + text


def format_json(value: Any) -> str:
    """
    One decoded value as one line of JSON for C{--json}: compact, and ASCII
    only, so control characters are escaped and the line is safe to print.
    """
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


# The TCP side


class IChatView(Interface):
    """
    What the client protocol needs of whatever shows the responses.
    """

    def received(value: Any) -> None:
        """
        One value decoded from the server's stream: a JSON value, or a
        L{chat.wire.DecodeError} for data that was not JSON.
        """


@dataclass(frozen=True)
class Ending:
    """
    How a connection ended.

    @ivar expected: the user asked for it (quit, end of input, or a
        C{logout} the server answered by closing).
    @ivar reason: a few words for the user.
    """

    expected: bool
    reason: str


def names_from(content: Any) -> List[str]:
    """
    The usernames in the answer to a C{names} request: a list, or a string
    of names separated by commas or spaces.
    """
    if isinstance(content, list):
        return [n for n in content if isinstance(n, str) and _USERNAME.fullmatch(n)]
    if isinstance(content, str) and _NAMES_ANSWER.fullmatch(content):
        return _USERNAME.findall(content)
    return []


class ChatClientProtocol(Protocol):
    """
    The client's connection to a chat server.

    Requests go out one per write, each compact JSON and a newline, at least
    L{REQUEST_GAP} seconds apart. Responses are decoded as a stream and each
    value is given to the view. L{ended} fires with an L{Ending} when the
    connection is gone.

    @ivar names: usernames seen (senders and C{names} answers), for
        completion.
    """

    def __init__(
        self, view: IChatView, clock: IReactorTime, max_size: int = MAX_RESPONSE_SIZE
    ) -> None:
        self.view = view
        self.clock = clock
        self.decoder = StreamDecoder(max_size)
        self.names: Set[str] = set()
        self.login_sent = False
        self.logout_sent = False
        self.ended: Deferred[Ending] = Deferred()
        # Requests waiting for their turn (REQUEST_GAP); login_sent and
        # logout_sent count those too.
        self._queue: Deque[Tuple[str, bytes]] = deque()
        self._next_send: Optional[IDelayedCall] = None
        self._last_send: Optional[float] = None
        self._names_pending = 0
        self._quit_linger: Optional[float] = None
        self._closer: Optional[IDelayedCall] = None
        self._closing = False
        self._failure: Optional[str] = None
        self._connected = False

    # Sending

    def send_line(self, line: str) -> Optional[Tuple[str, Optional[str]]]:
        """
        Send what the user typed; return the request, or None for a blank
        line.
        """
        request = parse_input(line)
        if request is not None:
            self.send_request(*request)
        return request

    def send_request(self, word: str, content: Any) -> None:
        """
        Queue one request. Nothing is sent once the client is closing.
        """
        if self._closing or self._quit_linger is not None:
            return
        if word == "login":
            self.login_sent = True
        elif word == "logout":
            self.logout_sent = True
        elif word == "names":
            self._names_pending += 1
        self._queue.append((word, encode_request(word, content)))
        if self._next_send is None:
            now = self.clock.seconds()
            if self._last_send is None or now - self._last_send >= REQUEST_GAP - 1e-6:
                self._send_next()
            else:
                self._next_send = self.clock.callLater(
                    REQUEST_GAP - (now - self._last_send), self._send_next
                )

    def _send_next(self) -> None:
        self._next_send = None
        if not self._queue or not self._connected:
            return
        _, data = self._queue.popleft()
        self.transport.write(data)
        self._last_send = self.clock.seconds()
        if self._queue:
            self._next_send = self.clock.callLater(REQUEST_GAP, self._send_next)
        elif self._quit_linger is not None:
            self._start_closer()

    def quit(self, linger: float = 0.0, logout: bool = False) -> None:
        """
        End the session: send what is queued, then close the connection
        C{linger} seconds later (at once if the server closes first).

        @param logout: first send C{logout} if a C{login} went out and no
            C{logout} did, so that a server that cannot take a dropped
            client is not left with one.
        """
        if self._closing or self._quit_linger is not None:
            return
        if logout and self.login_sent and not self.logout_sent:
            self.send_request("logout", None)
        self._quit_linger = linger
        if not self._queue:
            self._start_closer()

    def _start_closer(self) -> None:
        if self._closer is None and self._quit_linger is not None:
            if self._quit_linger <= 0:
                self.close()
            else:
                self._closer = self.clock.callLater(self._quit_linger, self.close)

    def close(self) -> None:
        """
        Close the connection now; the ending is expected.
        """
        self._closer = None
        if self._closing:
            return
        self._closing = True
        if self._connected:
            self.transport.loseConnection()

    # Receiving

    def connectionMade(self) -> None:
        self._connected = True
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:
                pass
        if self._queue and self._next_send is None:
            self._send_next()

    def dataReceived(self, data: bytes) -> None:
        for value in self.decoder.feed(data):
            self._note(value)
            self.view.received(value)
            if isinstance(value, DecodeError) and value.fatal:
                self._failure = "the server sent a response too large to take"
                self._closing = True
                self.transport.loseConnection()
                return

    def _note(self, value: Any) -> None:
        # Remember usernames for completion.
        word = response_word(value)
        if word is None:
            return
        if word == "history":
            for entry in interpret(value):
                self._note_sender(entry)
            return
        content = _field(value, "content")
        if word == "message":
            self._note_sender(Entry(word, sender=_field(value, "sender")))
        elif self._names_pending and word in ("info", "error"):
            self._names_pending -= 1
            if word == "info":
                self.names.update(names_from(content))
        elif word not in ("info", "error") and isinstance(content, list):
            self.names.update(names_from(content))

    def _note_sender(self, entry: Entry) -> None:
        if entry.kind == "message" and isinstance(entry.sender, str):
            if _USERNAME.fullmatch(entry.sender):
                self.names.add(entry.sender)

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._connected = False
        for call in (self._next_send, self._closer):
            if call is not None and call.active():
                call.cancel()
        self._next_send = self._closer = None
        self._queue.clear()
        if self._failure is not None:
            ending = Ending(False, self._failure)
        elif self._closing or self.logout_sent:
            ending = Ending(True, "connection closed")
        elif isinstance(reason, Failure) and not reason.check(ierror.ConnectionDone):
            ending = Ending(False, f"connection lost: {describe_error(reason.value)}")
        else:
            ending = Ending(False, "the server closed the connection")
        self.ended.callback(ending)


# Errors and the command line


def describe_error(exc: BaseException) -> str:
    """
    A short phrase for a connection error.
    """
    if isinstance(exc, ierror.ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, (ierror.DNSLookupError, ierror.UnknownHostError)):
        return "host not found"
    if isinstance(exc, (ierror.TimeoutError, ierror.TCPTimedOutError)):
        return "timed out"
    if isinstance(exc, ierror.NoRouteError):
        return "no route to host"
    if isinstance(exc, ierror.ConnectionLost):
        return "the connection broke"
    if type(exc).__module__.startswith("OpenSSL") and exc.args and isinstance(exc.args[0], list):
        reasons = [str(e[-1]) for e in exc.args[0] if isinstance(e, tuple) and e and e[-1]]
        return "TLS error: " + (", ".join(reasons) or "handshake failed")
    if isinstance(exc, ierror.ConnectError):
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, str) and detail.strip():
            return detail.strip().rstrip(".").lower()
        if isinstance(exc.osError, int):
            return os.strerror(exc.osError).lower()
    text = str(exc).strip().rstrip(".")
    text = re.sub(r"\s+", " ", text)
    return text or type(exc).__name__


def _port(value: str) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError(f"{value} is not a port number (1-65535)")
    return number


class Options(usage.Options):
    synopsis = "Usage: python -m chat.client [options]"
    longdesc = """\
A terminal client for the TTM4100 KTN JSON chat protocol.

Type the requests of the standard: 'login NAME', 'msg TEXT', 'names', 'help',
'logout'. Any other line 'WORD REST' is sent as {"request": WORD, "content":
REST} (content null when there is no REST), so server extensions work too.
Conveniences: a leading '/' is dropped ('/names' sends names); the request
word is lower-cased; blank lines send nothing.

When standard input is a terminal the client is interactive: messages appear
above the line you are typing; Left/Right/Home/End, Ctrl-A/E/U/K/W edit the
line; Up/Down recall earlier lines; Tab completes request words and the
usernames seen; Ctrl-L redraws; Ctrl-D (on an empty line) or Ctrl-C quits,
sending 'logout' first if you logged in. Colours are off when NO_COLOR is set,
with --no-color, or when output is not a terminal.

Otherwise the client is plain and scriptable: one request per input line, one
output line per response; it exits when the server closes the connection or
--wait seconds after the input ends. With --json each response is printed as
received, one JSON object per line.

The exit status is 0 when the session ended as asked (logout, quit, end of
input), 1 when the client could not connect or the connection was lost or
closed by the server unexpectedly, 2 for a usage error."""

    optFlags = [
        ["json", "j", "Print each response as one line of JSON (plain mode)."],
        ["plain", None, "Plain line-in, line-out mode even on a terminal."],
        ["no-color", None, "No colours (also when NO_COLOR is set)."],
    ]
    optParameters = [
        ["host", "H", None, f"Server host name or address [default: {DEFAULT_HOST}]"],
        ["port", "p", None, f"Server TCP port [default: {DEFAULT_PORT}]", _port],
        [
            "connect",
            "c",
            None,
            "A Twisted client endpoint description instead of --host/--port, "
            "e.g. tcp:host=localhost:port=9998, "
            "tls:example.org:9999 or unix:path=/tmp/chat.sock",
        ],
        [
            "wait",
            "w",
            1.0,
            "Plain mode: seconds to wait for responses after the input ends.",
            float,
        ],
    ]

    def getUsage(self, width: Optional[int] = None) -> str:
        # usage.Options joins the description into one paragraph; keep ours.
        longdesc, self.longdesc = self.longdesc, ""
        try:
            text = super().getUsage(width).rstrip()
        finally:
            self.longdesc = longdesc
        paragraphs = [
            textwrap.fill(" ".join(p.split()), width or 79) for p in longdesc.split("\n\n")
        ]
        return text + "\n\n" + "\n\n".join(paragraphs) + "\n"

    def postOptions(self) -> None:
        if self["connect"] and (self["host"] is not None or self["port"] is not None):
            raise usage.UsageError("give either --connect or --host/--port, not both")
        if self["host"] is None:
            self["host"] = DEFAULT_HOST
        if self["port"] is None:
            self["port"] = DEFAULT_PORT
        if self["wait"] < 0:
            raise usage.UsageError("--wait must not be negative")

    def target(self) -> str:
        """
        Where the client connects, for messages.
        """
        if self["connect"]:
            return self["connect"]
        return f"{self['host']} port {self['port']}"


def make_endpoint(reactor: Any, options: Options) -> Any:
    """
    The client endpoint the options describe.

    @raise usage.UsageError: for an endpoint description that cannot be used.
    """
    from twisted.internet import endpoints

    if options["connect"]:
        kind = options["connect"].split(":", 1)[0].strip().lower()
        if kind in ("tls", "ssl"):
            try:
                import OpenSSL  # noqa: F401
                import service_identity  # noqa: F401
            except ImportError:
                raise usage.UsageError(
                    "--connect: TLS needs pyOpenSSL and service_identity: "
                    "pip install 'twisted[tls]' (or this project's [tls] extra)"
                ) from None
        try:
            return endpoints.clientFromString(reactor, options["connect"])
        except (ValueError, KeyError, TypeError, NotImplementedError, ImportError) as e:
            raise usage.UsageError(f"--connect: not a client endpoint description ({e})") from e
    return endpoints.HostnameEndpoint(reactor, options["host"], options["port"])


def error_line(text: str) -> None:
    """
    Write one error line on standard error.
    """
    sys.stderr.write(f"chat: {text}\n")
    sys.stderr.flush()


async def main(reactor: Any, *argv: str) -> None:
    """
    Run the client; C{task.react} entry point.
    """
    from twisted.internet.endpoints import connectProtocol

    from chat import terminal

    options = Options()
    try:
        options.parseOptions(list(argv))
        endpoint = make_endpoint(reactor, options)
    except usage.UsageError as e:
        error_line(f"{e}\n{options.getSynopsis()}\n(--help for the options)".rstrip())
        raise SystemExit(2) from None
    front = terminal.make_front_end(reactor, options)
    client = ChatClientProtocol(front, reactor)
    try:
        await connectProtocol(endpoint, client)
    except Exception as e:
        error_line(f"cannot connect to {options.target()}: {describe_error(e)}")
        raise SystemExit(1) from None
    # Stopped by a signal (SIGTERM): close as if the user quit.
    reactor.addSystemEventTrigger("before", "shutdown", client.close)
    try:
        front.start(client)
        ending = await client.ended
    finally:
        await front.stop()
    if not ending.expected:
        error_line(ending.reason)
        raise SystemExit(1)


def run(argv: Optional[List[str]] = None) -> None:
    """
    The command line: C{python -m chat.client [options]}.
    """
    from twisted.internet import task

    task.react(main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    # Run the copy imported as chat.client, not this __main__ module, so that
    # chat.terminal and this code share one set of classes.
    from chat.client import run as _run

    _run()
