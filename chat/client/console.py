"""
The keyboard and screen side of the client: plain and interactive modes.

Both are views (L{chat.client.IChatView}) for a L{chat.client.ChatClientProtocol}
and read the keyboard with L{twisted.internet.stdio.StandardIO}; no threads.

- L{PlainFrontEnd} (standard input is not a terminal): one request per input
  line, one output line per response (or, with C{--json}, one JSON object per
  line); at the end of input it waits C{--wait} seconds for answers.
- L{InteractiveFrontEnd} (a terminal): the terminal in raw mode, keys parsed
  by L{twisted.conch.insults.insults.ServerProtocol}, and L{ChatConsole}, a
  line editor in the manner of L{twisted.conch.recvline.HistoricRecvLine}
  (same key handler table, input history on Up/Down) that redraws its one
  input line as a whole. Unlike C{HistoricRecvLine} it takes non-ASCII
  input (it keeps characters, not bytes), scrolls a line wider than the
  terminal sideways instead of wrapping it, and does not reset the screen.
  Responses are printed above the input line, which is then redrawn, so it
  is never garbled. The terminal is restored however the client ends.
"""

from __future__ import annotations

import atexit
import codecs
import fcntl
import os
import signal
import termios
import unicodedata
from typing import Any, Callable, Dict, List, Optional

from twisted.conch.insults import insults
from twisted.internet import defer, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from chat.client import (
    STANDARD_REQUESTS,
    ChatClientProtocol,
    IChatView,
    Options,
    Renderer,
    error_line,
    format_json,
    interpret,
    neutralise,
)
from chat.wire import DecodeError

#: Seconds to wait for the last output to reach standard output at the end.
FLUSH_TIMEOUT = 2.0

#: Seconds an interactive quit waits for the server to close after logout.
QUIT_LINGER = 1.0

#: The longest input line taken in plain mode; longer input is cut there.
MAX_INPUT_LINE = 1024 * 1024


def _flush_and_close(
    reactor: Any, io: Optional[stdio.StandardIO], lost: defer.Deferred
) -> defer.Deferred:
    # Let StandardIO write what it holds, then close; do not wait forever
    # for a reader that stopped reading our output.
    if io is None or lost.called:
        return defer.succeed(None)
    io.loseConnection()
    waiting: defer.Deferred = defer.Deferred()
    timer = reactor.callLater(FLUSH_TIMEOUT, lambda: waiting.called or waiting.callback(None))

    def done(_: Any) -> None:
        if timer.active():
            timer.cancel()
        if not waiting.called:
            waiting.callback(None)

    lost.addBoth(done)
    return waiting


class _FileFlags:
    """
    Saves the file status flags of standard input and output, which
    L{StandardIO} makes non-blocking, so the shell gets them back as it left
    them.
    """

    def __init__(self, *fds: int) -> None:
        self._saved: Dict[int, int] = {}
        for fd in fds:
            try:
                self._saved[fd] = fcntl.fcntl(fd, fcntl.F_GETFL)
            except OSError:
                pass

    def restore(self) -> None:
        for fd, flags in self._saved.items():
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
            except OSError:
                pass
        self._saved = {}


# Plain mode


@implementer(IHalfCloseableProtocol)
class _PlainInput(Protocol):
    """
    Standard input, line by line, for L{PlainFrontEnd}.
    """

    def __init__(self, front: "PlainFrontEnd") -> None:
        self.front = front
        self._buffer = b""
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_INPUT_LINE:
            lines.append(self._buffer)
            self._buffer = b""
        for line in lines:
            self.front.line_received(line.decode("utf-8", "replace"))

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

    @param formatter: turns one decoded value into the lines to print.
    @param linger: seconds to wait for responses after the input ends.
    """

    def __init__(
        self,
        reactor: Any,
        formatter: Callable[[Any], List[str]],
        linger: float,
        stdin: int = 0,
        stdout: int = 1,
    ) -> None:
        self.reactor = reactor
        self.formatter = formatter
        self.linger = linger
        self._fds = (stdin, stdout)
        self.client: Optional[ChatClientProtocol] = None
        self._input: Optional[_PlainInput] = None
        self._io: Optional[stdio.StandardIO] = None
        self._flags: Optional[_FileFlags] = None
        self._pending: List[bytes] = []

    def received(self, value: Any) -> None:
        for line in self.formatter(value):
            self._write((line + "\n").encode("utf-8", "replace"))

    def _write(self, data: bytes) -> None:
        if self._io is None:
            self._pending.append(data)
        else:
            self._io.write(data)

    def start(self, client: ChatClientProtocol) -> None:
        self.client = client
        self._flags = _FileFlags(*self._fds)
        self._input = _PlainInput(self)
        self._io = stdio.StandardIO(
            self._input, stdin=self._fds[0], stdout=self._fds[1], reactor=self.reactor
        )
        for data in self._pending:
            self._io.write(data)
        self._pending = []

    def line_received(self, line: str) -> None:
        if self.client is not None:
            self.client.send_line(line)

    def input_ended(self) -> None:
        if self.client is not None:
            self.client.quit(self.linger)

    def output_gone(self) -> None:
        if self.client is not None:
            self.client.quit(0)

    def stop(self) -> defer.Deferred:
        if self._input is None:
            return defer.succeed(None)
        d = _flush_and_close(self.reactor, self._io, self._input.lost)

        def restore(result: Any) -> Any:
            if self._flags is not None:
                self._flags.restore()
            return result

        return d.addBoth(restore)


def plain_formatter(renderer: Renderer) -> Callable[[Any], List[str]]:
    """
    Lines for plain mode: every response on one line.
    """

    def lines(value: Any) -> List[str]:
        out: List[str] = []
        for entry in interpret(value):
            out.extend(renderer.lines(entry))
        return out

    return lines


def json_formatter(value: Any) -> List[str]:
    """
    Lines for C{--json}: each value as received, one JSON object per line;
    data that is not JSON is reported on standard error.
    """
    if isinstance(value, DecodeError):
        error_line(f"ignored data from the server that is not JSON ({value.reason})")
        return []
    return [format_json(value)]


# Interactive mode


def char_width(char: str) -> int:
    """
    How many terminal columns a character takes.
    """
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _typeable(char: str) -> bool:
    return neutralise(char) == char


class ChatConsole(insults.TerminalProtocol):
    """
    The input line of the interactive client, with history and completion,
    and the place responses are printed (above the input line).

    @ivar buffer: the characters of the line being typed.
    @ivar cursor: the index in L{buffer} of the cursor.
    """

    prompt = "> "
    terminal: Any = None

    def __init__(self, renderer: Renderer, width: Callable[[], int]) -> None:
        self.renderer = renderer
        self._width = width
        self.buffer: List[str] = []
        self.cursor = 0
        self.history: List[str] = []
        self._history_position = 0
        self._draft: List[str] = []
        self._view = 0
        self._typeover = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.client: Optional[ChatClientProtocol] = None
        self.on_quit: Callable[[], None] = lambda: None
        self.lost: defer.Deferred = defer.Deferred()
        self._closed = False

    # Connection to the terminal

    def connectionMade(self) -> None:
        t = self.terminal
        # As in recvline.RecvLine: a table from key IDs to handlers.
        self.keyHandlers: Dict[Any, Callable[[], None]] = {
            t.LEFT_ARROW: self.handle_LEFT,
            t.RIGHT_ARROW: self.handle_RIGHT,
            t.UP_ARROW: self.handle_UP,
            t.DOWN_ARROW: self.handle_DOWN,
            t.HOME: self.handle_HOME,
            t.END: self.handle_END,
            t.DELETE: self.handle_DELETE,
            t.INSERT: self.handle_INSERT,
            b"\t": self.handle_TAB,
            b"\r": self.handle_RETURN,
            b"\n": self.handle_RETURN,
            b"\x7f": self.handle_BACKSPACE,
            b"\x08": self.handle_BACKSPACE,
            b"\x01": self.handle_HOME,  # Ctrl-A
            b"\x05": self.handle_END,  # Ctrl-E
            b"\x02": self.handle_LEFT,  # Ctrl-B
            b"\x06": self.handle_RIGHT,  # Ctrl-F
            b"\x10": self.handle_UP,  # Ctrl-P
            b"\x0e": self.handle_DOWN,  # Ctrl-N
            b"\x15": self.handle_KILL_START,  # Ctrl-U
            b"\x0b": self.handle_KILL_END,  # Ctrl-K
            b"\x17": self.handle_KILL_WORD,  # Ctrl-W
            b"\x0c": self.handle_REDRAW,  # Ctrl-L
            b"\x03": self.handle_INTERRUPT,  # Ctrl-C
            b"\x04": self.handle_EOF,  # Ctrl-D
        }
        self.draw()

    def connectionLost(self, reason: Any = None) -> None:
        self._closed = True
        if not self.lost.called:
            self.lost.callback(None)
            # The terminal went away (or we closed it): the session is over.
            self.on_quit()

    def terminalSize(self, width: int, height: int) -> None:
        self.draw()

    def unhandledControlSequence(self, seq: bytes) -> None:
        pass

    # Output

    def _write(self, text: str) -> None:
        if not self._closed and self.terminal is not None:
            self.terminal.write(text.encode("utf-8", "replace"))

    def show(self, lines: List[str]) -> None:
        """
        Print lines above the input line, then redraw it.
        """
        if lines:
            # ServerProtocol.write turns each "\n" into "\r\n".
            self._write("\r\x1b[K" + "".join(line + "\n" for line in lines))
            self.draw()

    def draw(self) -> None:
        """
        Redraw the input line, scrolled sideways to keep the cursor in view.
        """
        columns = max(self._width() - 1, 8)
        prompt_width = len(self.prompt)
        room = max(columns - prompt_width, 4)
        widths = [char_width(c) for c in self.buffer]
        if sum(widths) < room:
            self._view = 0
        self._view = min(self._view, self.cursor)
        while self._view < self.cursor and sum(widths[self._view : self.cursor]) >= room:
            self._view += 1
        while self._view > 0 and sum(widths[self._view - 1 :]) < room:
            self._view -= 1
        shown, used = [], 0
        for char, width in zip(self.buffer[self._view :], widths[self._view :]):
            if used + width > room:
                break
            shown.append(char)
            used += width
        to_cursor = prompt_width + sum(widths[self._view : self.cursor])
        move = f"\x1b[{to_cursor}C" if to_cursor else ""
        prompt = self.renderer._paint(self.prompt, "1")
        self._write(f"\r{prompt}{''.join(shown)}\x1b[K\r{move}")

    def notice(self, text: str) -> None:
        self.show([self.renderer.notice(text)])

    def finish(self) -> None:
        """
        Clear the input line, leaving the cursor at the start of an empty
        line for the shell.
        """
        self._write("\r\x1b[K")

    # Keys

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        handler = self.keyHandlers.get(keyID)
        if handler is not None:
            if modifier is None or keyID in (self.terminal.LEFT_ARROW, self.terminal.RIGHT_ARROW):
                handler()
            return
        if modifier is not None or not isinstance(keyID, bytes) or len(keyID) != 1:
            # Alt chords and named keys (b"[F1]") that have no handler.
            return
        if keyID < b" " or keyID == b"\x7f":
            return
        for char in self._utf8.decode(keyID):
            if _typeable(char):
                self.characterReceived(char)

    def characterReceived(self, char: str) -> None:
        if self._typeover and self.cursor < len(self.buffer):
            self.buffer[self.cursor] = char
        else:
            self.buffer.insert(self.cursor, char)
        self.cursor += 1
        self.draw()

    def handle_LEFT(self) -> None:
        if self.cursor > 0:
            self.cursor -= 1
            self.draw()

    def handle_RIGHT(self) -> None:
        if self.cursor < len(self.buffer):
            self.cursor += 1
            self.draw()

    def handle_HOME(self) -> None:
        self.cursor = 0
        self.draw()

    def handle_END(self) -> None:
        self.cursor = len(self.buffer)
        self.draw()

    def handle_BACKSPACE(self) -> None:
        if self.cursor > 0:
            self.cursor -= 1
            del self.buffer[self.cursor]
            self.draw()

    def handle_DELETE(self) -> None:
        if self.cursor < len(self.buffer):
            del self.buffer[self.cursor]
            self.draw()

    def handle_INSERT(self) -> None:
        self._typeover = not self._typeover

    def handle_KILL_START(self) -> None:
        del self.buffer[: self.cursor]
        self.cursor = 0
        self.draw()

    def handle_KILL_END(self) -> None:
        del self.buffer[self.cursor :]
        self.draw()

    def handle_KILL_WORD(self) -> None:
        start = self.cursor
        while start > 0 and self.buffer[start - 1].isspace():
            start -= 1
        while start > 0 and not self.buffer[start - 1].isspace():
            start -= 1
        del self.buffer[start : self.cursor]
        self.cursor = start
        self.draw()

    def handle_REDRAW(self) -> None:
        self._write("\x1b[H\x1b[2J")
        self.draw()

    def handle_INTERRUPT(self) -> None:
        self.on_quit()

    def handle_EOF(self) -> None:
        if self.buffer:
            self.handle_DELETE()
        else:
            self.on_quit()

    def _set_line(self, chars: List[str]) -> None:
        self.buffer = list(chars)
        self.cursor = len(self.buffer)
        self.draw()

    def handle_UP(self) -> None:
        if self._history_position == 0:
            return
        if self._history_position == len(self.history):
            self._draft = list(self.buffer)
        self._history_position -= 1
        self._set_line(list(self.history[self._history_position]))

    def handle_DOWN(self) -> None:
        if self._history_position >= len(self.history):
            return
        self._history_position += 1
        if self._history_position == len(self.history):
            self._set_line(self._draft)
        else:
            self._set_line(list(self.history[self._history_position]))

    def handle_RETURN(self) -> None:
        line = "".join(self.buffer)
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
        self._history_position = len(self.history)
        self._draft = []
        self.buffer = []
        self.cursor = 0
        self._view = 0
        # The line stays in the scrollback, as a shell leaves it.
        self.show([self.renderer._paint(self.prompt + line, "2")] if line.strip() else [])
        if not line.strip():
            self.draw()
        if self.client is not None:
            self.client.send_line(line)

    def handle_TAB(self) -> None:
        start = self.cursor
        while start > 0 and not self.buffer[start - 1].isspace():
            start -= 1
        prefix = "".join(self.buffer[start : self.cursor])
        first_word = not "".join(self.buffer[:start]).strip()
        if first_word:
            slash = "/" if prefix.startswith("/") else ""
            prefix = prefix[len(slash) :]
            candidates = list(STANDARD_REQUESTS)
        else:
            slash = ""
            candidates = sorted(self.client.names if self.client is not None else ())
        matches = [c for c in candidates if c.lower().startswith(prefix.lower())]
        if not matches:
            return
        if len(matches) == 1:
            completion = matches[0] + " "
        else:
            completion = os.path.commonprefix(matches)
            if len(completion) <= len(prefix):
                self.notice(" ".join(matches))
                return
        new = list(slash + completion)
        self.buffer[start : self.cursor] = new
        self.cursor = start + len(new)
        self.draw()


class _TerminalMode:
    """
    Puts a terminal in raw mode (no echo, no line buffering, no signals from
    keys) and restores its settings; restoring twice is harmless.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._saved: Optional[list] = None

    def enter(self) -> None:
        self._saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        iflag, lflag = 0, 3  # indices in termios' attribute list
        mode[iflag] &= ~(
            termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP | termios.IXON
        )
        mode[lflag] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
        # Output processing stays on, so a stray "\n" (a warning on
        # standard error) still starts a new line.
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSAFLUSH, mode)

    def restore(self) -> None:
        if self._saved is not None:
            saved, self._saved = self._saved, None
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass


def _terminal_width(fd: int) -> int:
    try:
        return os.get_terminal_size(fd).columns or 80
    except OSError:
        return 80


@implementer(IChatView)
class InteractiveFrontEnd:
    """
    The interactive client on a terminal.
    """

    def __init__(
        self, reactor: Any, renderer: Renderer, target: str, stdin: int = 0, stdout: int = 1
    ) -> None:
        self.reactor = reactor
        self.renderer = renderer
        self.target = target
        self._fds = (stdin, stdout)
        self._width = _terminal_width(stdout)
        self.console = ChatConsole(renderer, lambda: self._width)
        self._mode = _TerminalMode(stdin)
        self._flags: Optional[_FileFlags] = None
        self._io: Optional[stdio.StandardIO] = None
        self._old_winch: Any = None
        self._restored = False

    def received(self, value: Any) -> None:
        lines: List[str] = []
        for entry in interpret(value):
            lines.extend(self.renderer.lines(entry))
        self.console.show(lines)

    def start(self, client: ChatClientProtocol) -> None:
        self.console.client = client
        self.console.on_quit = lambda: client.quit(QUIT_LINGER, logout=True)
        self._flags = _FileFlags(*self._fds)
        self._mode.enter()
        # Every way out restores the terminal: the normal path (stop), the
        # reactor shutting down (SIGTERM, SIGHUP), and interpreter exit.
        self.reactor.addSystemEventTrigger("after", "shutdown", self.restore)
        atexit.register(self.restore)
        try:
            self._old_winch = signal.signal(signal.SIGWINCH, self._winch)
        except (ValueError, OSError):
            self._old_winch = None
        self._io = stdio.StandardIO(
            insults.ServerProtocol(lambda: self.console),
            stdin=self._fds[0],
            stdout=self._fds[1],
            reactor=self.reactor,
        )
        self.console.notice(
            f"Connected to {neutralise(self.target)}. Type help for the requests, "
            "Tab to complete, Ctrl-D to quit."
        )

    def _winch(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._resized)

    def _resized(self) -> None:
        self._width = _terminal_width(self._fds[1])
        self.console.draw()

    def stop(self) -> defer.Deferred:
        if self._io is None:
            return defer.succeed(None)
        self.console.finish()
        d = _flush_and_close(self.reactor, self._io, self.console.lost)

        def restore(result: Any) -> Any:
            self.restore()
            return result

        return d.addBoth(restore)

    def restore(self) -> None:
        """
        Give the terminal back as it was found.
        """
        if self._restored:
            return
        self._restored = True
        self._mode.restore()
        if self._flags is not None:
            self._flags.restore()
        if self._old_winch is not None:
            try:
                signal.signal(signal.SIGWINCH, self._old_winch)
            except (ValueError, OSError):
                pass


def make_front_end(reactor: Any, options: Options) -> Any:
    """
    The front end the options and the standard streams call for.
    """
    on_terminal = os.isatty(0) and os.isatty(1) and os.environ.get("TERM") != "dumb"
    colour = (
        not options["no-color"]
        and not os.environ.get("NO_COLOR")
        and os.isatty(1)
        and os.environ.get("TERM") != "dumb"
    )
    if options["json"]:
        return PlainFrontEnd(reactor, json_formatter, options["wait"])
    if on_terminal and not options["plain"]:
        return InteractiveFrontEnd(
            reactor, Renderer(colour=colour, multiline=True), options.target()
        )
    return PlainFrontEnd(reactor, plain_formatter(Renderer(colour=colour)), options["wait"])
