"""
The scriptable front end: standard input line by line, one output line per
response.

Each input line is one request (or C{/quit}; C{/presence on|off} shows or
hides presence lines from then on, silently; C{/clear} does nothing here).
When the input ends, the client waits until every request it wrote has had
its answer and the server has then been quiet for C{--wait} seconds, however
long the answers take to arrive (a history of 100,000 messages is never cut
off); if answers are still missing after C{--timeout} seconds of quiet, it
gives up and the exit status says so.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet import defer, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from chat.client.commands import local_command, presence_setting
from chat.client.connection import ChatSession, IChatView
from chat.client.display import Renderer, format_json
from chat.client.streams import FileFlags, flush_and_close
from chat.wire import DecodeError

#: The longest input line taken in plain mode; longer input is cut there.
MAX_INPUT_LINE = 1024 * 1024

#: The terminal bell.
BELL = b"\x07"


@implementer(IHalfCloseableProtocol)
class _PlainInput(Protocol):
    """
    Standard input, line by line, for L{PlainFrontEnd}.
    """

    def __init__(self, front: "PlainFrontEnd") -> None:
        self.front = front
        self._buffer = b""
        self._cutting = False  # dropping the rest of a line that was cut
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self._cutting:
            end = data.find(b"\n")
            if end < 0:
                return
            data = data[end + 1 :]
            self._cutting = False
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_INPUT_LINE:
            # Cut, and the rest of that line dropped: never taken for a line
            # (a request) of its own.
            lines.append(self._buffer)
            self._buffer = b""
            self._cutting = True
        for line in lines:
            self.front.line_received(line[:MAX_INPUT_LINE].decode("utf-8", "replace"))

    def readConnectionLost(self) -> None:
        if self._buffer:
            line, self._buffer = self._buffer, b""
            self.front.line_received(line.decode("utf-8", "replace"))
        self.front.input_ended()

    def writeConnectionLost(self) -> None:
        # Nobody reads our output any more (as with "| head -1").
        self.front.output_gone()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback(None)


@implementer(IChatView)
class PlainFrontEnd:
    """
    Line in, line out: the scriptable mode.

    @param formatter: turns one decoded value into the lines to print, and
        whether it should ring the bell.
    @param quiet: seconds of quiet from the server to wait for once the
        input has ended and every request is answered (C{--wait}).
    @param patience: the same while answers are missing (C{--timeout}).
    @param bell: ring the terminal bell for highlighted lines.
    @param error: writes one line on standard error.
    """

    def __init__(
        self,
        reactor: Any,
        formatter: Callable[[Any], Any],
        quiet: float,
        patience: float,
        bell: bool = False,
        error: Callable[[str], None] = lambda text: None,
        stdin: int = 0,
        stdout: int = 1,
    ) -> None:
        self.reactor = reactor
        self.formatter = formatter
        self.quiet = quiet
        self.patience = patience
        self.bell = bell
        self.error = error
        self._fds = (stdin, stdout)
        self.session: Optional[ChatSession] = None
        self._input: Optional[_PlainInput] = None
        self._io: Optional[stdio.StandardIO] = None
        self._flags: Optional[FileFlags] = None
        self._pending: List[bytes] = []
        self._done = False

    def received(self, value: Any) -> None:
        lines, ring = self.formatter(value)
        data = "".join(line + "\n" for line in lines).encode("utf-8", "replace")
        self._write(BELL + data if ring and self.bell else data)

    def notice(self, text: str) -> None:
        self.error(text)

    def _write(self, data: bytes) -> None:
        if self._io is None:
            self._pending.append(data)
        else:
            self._io.write(data)

    def start(self, session: ChatSession) -> None:
        self.session = session
        self._flags = FileFlags(*self._fds)
        self._input = _PlainInput(self)
        self._io = stdio.StandardIO(
            self._input, stdin=self._fds[0], stdout=self._fds[1], reactor=self.reactor
        )
        for data in self._pending:
            self._io.write(data)
        self._pending = []

    def line_received(self, line: str) -> None:
        if self.session is None or self._done:
            return
        command = local_command(line)
        if command == "quit":
            self._done = True
            self.session.quit_when_quiet(self.quiet, self.patience, logout=True)
        elif command == "presence":
            setting = presence_setting(line, self.session.rooms.presence_shown)
            if setting is None:
                self.error("/presence takes on or off")
            else:
                self.session.set_presence(setting)
        elif command is None:
            self.session.send_line(line)

    def input_ended(self) -> None:
        if self.session is not None and not self._done:
            self._done = True
            self.session.quit_when_quiet(self.quiet, self.patience)

    def output_gone(self) -> None:
        if self.session is not None:
            self._done = True
            self.session.quit(0)

    def stop(self) -> defer.Deferred:
        if self._input is None:
            return defer.succeed(None)
        flags = self._flags
        return flush_and_close(
            self.reactor, self._io, self._input.lost, flags.restore if flags else lambda: None
        )


def plain_formatter(renderer: Renderer) -> Callable[[Any], Any]:
    """
    Lines for plain mode: every response on one line (one per history
    item).
    """
    return renderer.render


def json_formatter(error: Callable[[str], None]) -> Callable[[Any], Any]:
    """
    Lines for C{--json}: each value as received, one JSON object per line;
    data that is not JSON is reported through C{error} (standard error).
    """

    def lines(value: Any) -> Any:
        if isinstance(value, DecodeError):
            error(f"ignored data from the server that is not JSON ({value.reason})")
            return [], False
        return [format_json(value)], False

    return lines
