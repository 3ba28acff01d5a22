"""
The interactive front end: a line editor on a terminal.

L{InteractiveFrontEnd} puts the terminal in raw mode, reads keys through
L{KeyboardProtocol} (Twisted's L{insults.ServerProtocol}, which also hands a
bracketed paste over whole) and gives them to L{ChatConsole}, a line editor
in the manner of L{twisted.conch.recvline.HistoricRecvLine} (same key
handler table, input history on Up/Down) that redraws its one input line as
a whole. Unlike C{HistoricRecvLine} it takes non-ASCII input (it keeps
characters, not bytes), scrolls a line wider than the terminal sideways
instead of wrapping it, and does not reset the screen. Responses are printed
above the input line, which is then redrawn, so it is never garbled.

What else it does:

- A paste (bracketed paste mode) goes into the line whole, line breaks
  included (shown as C{↵}), so Enter sends it as one request.
- When the window is resized, the rows the terminal made of the input line
  (terminals that reflow wrap it) are cleared before it is drawn again; a
  cursor position report tells whether the terminal reflowed.
- Page Up / Page Down show earlier lines from the client's own scrollback
  on the terminal's alternate screen; leaving it brings the screen back as
  it was. Ctrl-L repaints the screen from that scrollback; C{/clear}
  scrolls the screen's lines into the terminal's scrollback.
- Lines typed are kept between sessions (L{chat.client.config.InputHistory}).
- With the C{rooms} extension the prompt names the current room
  (C{dev> }) once the user is in a room other than the lobby alone, Tab
  completes room names after C{join} and C{leave}, and Ctrl-X switches to
  the next room joined (a C{join} of a room the user is in makes it
  current without leaving the others). C{/presence [on|off]} shows or
  hides who joins and leaves.
- The terminal is restored however the client ends.
"""

from __future__ import annotations

import atexit
import codecs
import os
import re
import signal
import termios
import unicodedata
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from twisted.conch.insults import insults
from twisted.internet import defer, stdio
from zope.interface import implementer

from chat.client.commands import local_command, presence_setting
from chat.client.config import InputHistory
from chat.client.connection import ChatSession, IChatView
from chat.client.display import STANDARD_REQUESTS, Renderer, interpret, neutralise
from chat.client.streams import FileFlags, flush_and_close

#: Seconds an interactive quit waits for the server to close after logout.
QUIT_LINGER = 1.0

#: Lines kept in the client's own scrollback (Page Up).
SCROLLBACK_LINES = 10000

#: The longest paste taken, in bytes; the rest is dropped.
MAX_PASTE = 1024 * 1024

#: Seconds to wait for the terminal's cursor position report after a resize.
REPORT_TIMEOUT = 0.5

#: How the input line shows a line break (from a paste).
LINE_BREAK = "\u21b5"

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
BRACKETED_PASTE_ON = b"\x1b[?2004h"
BRACKETED_PASTE_OFF = b"\x1b[?2004l"
ALTERNATE_SCREEN_ON = "\x1b[?1049h"
ALTERNATE_SCREEN_OFF = "\x1b[?1049l"

_SGR = re.compile(r"\x1b\[[0-9;]*m")


# Format characters that terminals do show: the soft hyphen and the signs
# that stand before Arabic, Syriac and Kaithi numbers.
_SHOWN_FORMAT = frozenset(
    "\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f\u0890\u0891\u08e2\U000110bd\U000110cd"
)


def char_width(char: str) -> int:
    """
    How many terminal columns a character takes, as C{wcwidth()} counts
    them: none for marks that do not space (combining or not: U+FE0F, the
    emoji variation selector, has combining class 0), for invisible format
    characters (U+200B zero width space, U+200D zero width joiner) and for
    the Hangul vowels and final consonants that join the syllable before
    them; two for wide characters; one for the rest.
    """
    category = unicodedata.category(char)
    if category in ("Mn", "Me") or (category == "Cf" and char not in _SHOWN_FORMAT):
        return 0
    if "\u1160" <= char <= "\u11ff" or "\ud7b0" <= char <= "\ud7ff":
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def reflowed_position(widths: List[int], width: int) -> Tuple[int, int]:
    """
    Where a cursor after cells of these widths, drawn on one row, is once
    a terminal that reflows has wrapped them C{width} columns wide: its
    column and how many rows below the first. A wide character that does
    not fit at the end of a row goes to the next.
    """
    column, row = 0, 0
    for size in widths:
        if column and column + size > width:
            column, row = 0, row + 1
        column += size
    if column >= width:
        column, row = 0, row + 1
    return column, row


def text_rows(text: str, width: int) -> int:
    """
    How many rows of a terminal C{width} columns wide a rendered line takes
    (colour codes take none).
    """
    column, row = reflowed_position([char_width(c) for c in _SGR.sub("", text)], width)
    return max(row + (column > 0), 1)


def _continuation_bytes(lead: int) -> int:
    # How many bytes follow this first byte of a character in UTF-8.
    if 0xC2 <= lead <= 0xDF:
        return 1
    if 0xE0 <= lead <= 0xEF:
        return 2
    if 0xF0 <= lead <= 0xF4:
        return 3
    return 0


def _typeable(char: str) -> bool:
    return neutralise(char) == char


def _held_back(data: bytes, marker: bytes) -> int:
    # How many bytes at the end of data could be the start of marker.
    for size in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:size]):
            return size
    return 0


class KeyboardProtocol(insults.ServerProtocol):
    """
    Twisted's terminal key parser, with one addition: text between the
    bracketed paste markers goes to the terminal protocol's
    C{paste_received} whole, not as keys (so a pasted line break is not
    Enter).
    """

    _pasting = False
    _held = b""
    _paste = b""

    def dataReceived(self, data: bytes) -> None:
        data, self._held = self._held + data, b""
        while data:
            marker = PASTE_END if self._pasting else PASTE_START
            found = data.find(marker)
            if found < 0:
                keep = _held_back(data, marker)
                data, self._held = data[: len(data) - keep], data[len(data) - keep :]
                self._take(data)
                return
            self._take(data[:found])
            data = data[found + len(marker) :]
            if self._pasting:
                text, self._paste = self._paste, b""
                self.terminalProtocol.paste_received(text)
            self._pasting = not self._pasting

    def _take(self, data: bytes) -> None:
        if not data:
            return
        if self._pasting:
            if len(self._paste) < MAX_PASTE:
                self._paste += data[: MAX_PASTE - len(self._paste)]
        else:
            super().dataReceived(data)


class ChatConsole(insults.TerminalProtocol):
    """
    The input line of the interactive client, with history and completion,
    and the place responses are printed (above the input line).

    @param size: returns the terminal's C{(columns, rows)}.
    @ivar buffer: the characters of the line being typed.
    @ivar cursor: the index in L{buffer} of the cursor.
    @ivar scrollback: every line shown, for Page Up and Ctrl-L.
    @ivar on_line: called with each line entered, to keep it in the history
        file.
    """

    terminal: Any = None

    def __init__(
        self,
        renderer: Renderer,
        size: Callable[[], Tuple[int, int]],
        history: Optional[List[str]] = None,
        clock: Any = None,
    ) -> None:
        self.renderer = renderer
        self._size = size
        self.clock = clock
        self.buffer: List[str] = []
        self.cursor = 0
        self.history: List[str] = list(history or [])
        self._history_position = len(self.history)
        self._draft: List[str] = []
        self._view = 0
        self._typeover = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        # Bytes still to drop of the non-ASCII key of an Alt chord.
        self._alt_rest = 0
        self.client: Optional[ChatSession] = None
        self.on_quit: Callable[[], None] = lambda: None
        self.on_line: Callable[[str], None] = lambda line: None
        self.bell = False
        self.lost: defer.Deferred = defer.Deferred()
        self._closed = False
        self.scrollback: Deque[str] = deque(maxlen=SCROLLBACK_LINES)
        # Scrollback view: lines hidden below the view (None: not viewing),
        # and lines that arrived while viewing.
        self._below: Optional[int] = None
        self._unseen = 0
        # The widths of the cells before the cursor in the last draw.
        self._drawn: List[int] = []
        self._resizing = False

    @property
    def prompt(self) -> str:
        """
        C{"> "}, or the current room's name (C{"dev> "}) when the server
        sends rooms and the user is in a room other than the lobby alone.
        """
        rooms = self.renderer.rooms
        named = rooms.prompt() if rooms is not None else None
        return neutralise(named) if named else "> "

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
            t.PGUP: self.handle_PGUP,
            t.PGDN: self.handle_PGDN,
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
            b"\x18": self.handle_NEXT_ROOM,  # Ctrl-X
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

    def show(self, lines: List[str], ring: bool = False) -> None:
        """
        Print lines above the input line, then redraw it; with C{ring} and
        L{bell} on, ring the terminal bell.
        """
        if not lines:
            return
        self.scrollback.extend(lines)
        if ring and self.bell:
            self._write("\a")
        if self._below is not None:
            # Keep the view where it is; the lines wait below it.
            self._below += len(lines)
            self._unseen += len(lines)
            self._draw_view()
            return
        # ServerProtocol.write turns each "\n" into "\r\n".
        self._write("\r\x1b[K" + "".join(line + "\n" for line in lines))
        self.draw()

    def draw(self) -> None:
        """
        Redraw the input line, scrolled sideways to keep the cursor in view.
        """
        columns = max(self._size()[0] - 1, 8)
        prompt = self.prompt
        if len(prompt) > columns - 4:
            # A long room name on a narrow terminal: keep the prompt's end,
            # so that the line still fits one row.
            prompt = "\u2026" + prompt[len(prompt) - (columns - 5) :]
        prompt_width = len(prompt)
        room = max(columns - prompt_width, 4)
        shown_chars = [LINE_BREAK if c == "\n" else c for c in self.buffer]
        widths = [char_width(c) for c in shown_chars]
        if sum(widths) < room:
            self._view = 0
        self._view = min(self._view, self.cursor)
        while self._view < self.cursor and sum(widths[self._view : self.cursor]) >= room:
            self._view += 1
        while self._view > 0 and sum(widths[self._view - 1 :]) < room:
            self._view -= 1
        shown, used = [], 0
        for char, width in zip(shown_chars[self._view :], widths[self._view :]):
            if used + width > room:
                break
            shown.append(char)
            used += width
        to_cursor = prompt_width + sum(widths[self._view : self.cursor])
        move = f"\x1b[{to_cursor}C" if to_cursor else ""
        prompt = self.renderer._paint(prompt, "1")
        self._drawn = [1] * prompt_width + widths[self._view : self.cursor]
        self._write(f"\r{prompt}{''.join(shown)}\x1b[K\r{move}")

    def notice(self, text: str) -> None:
        self.show([self.renderer.notice(text)])

    def finish(self) -> None:
        """
        Clear the input line, leaving the cursor at the start of an empty
        line for the shell.
        """
        if self._below is not None:
            self._write(ALTERNATE_SCREEN_OFF)
            self._below = None
        self._write("\r\x1b[K")

    def _last_rows(self, rows: int, end: Optional[int] = None) -> List[str]:
        # The last lines of the scrollback (before index end) that fill at
        # most `rows` rows of the terminal.
        width = max(self._size()[0], 1)
        lines = list(self.scrollback)[:end] if end is not None else list(self.scrollback)
        picked: List[str] = []
        for line in reversed(lines):
            need = text_rows(line, width)
            if need > rows:
                break
            rows -= need
            picked.append(line)
        return picked[::-1]

    def repaint(self) -> None:
        """
        Paint the screen again from the client's scrollback (Ctrl-L): the
        latest lines, then the input line. Nothing is cleared into the
        terminal's scrollback, and nothing is lost from it.
        """
        if self._below is not None:
            self._draw_view()
            return
        lines = self._last_rows(self._size()[1] - 1)
        self._write("\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
        self.draw()

    def clear_screen(self) -> None:
        """
        C{/clear}: scroll every line on the screen into the terminal's
        scrollback and start again at the top.
        """
        height = self._size()[1]
        self._write(f"\r\x1b[K\x1b[{height};1H" + "\n" * height + "\x1b[H")
        self.draw()

    def resized(self) -> None:
        """
        The window changed size. A terminal that reflows has wrapped the
        input line (drawn one row wide for the old width) over several rows
        with the cursor on one of them: go up to the line's first row and
        clear from there before drawing it again. Whether it reflowed is
        told by the cursor's column, asked with a position report; one that
        does not answer is taken not to have.
        """
        if self._below is not None:
            self._draw_view()
            return
        if self._resizing:
            return
        width = self._size()[0]
        column = sum(self._drawn)
        if column < width or self.terminal is None or self.clock is None:
            self._write("\r\x1b[J")
            self.draw()
            return
        self._resizing = True
        report = self.terminal.reportCursorPosition()
        report.addTimeout(REPORT_TIMEOUT, self.clock, onTimeoutCancel=lambda *_: None)
        expected, below = reflowed_position(self._drawn, width)

        def reflowed(position: Any) -> None:
            self._resizing = False
            rows_up = 0
            if position is not None and position[0] == expected:
                # Rows above the top of the screen (a terminal may move
                # them into its scrollback) are out of reach.
                rows_up = min(below, position[1])
            self._write(f"\x1b[{rows_up}A\r\x1b[J" if rows_up else "\r\x1b[J")
            self.draw()
            if self._size()[0] != width:
                self.resized()

        report.addCallback(reflowed)

    # Scrollback view

    def _page(self) -> int:
        return max(self._size()[1] - 2, 1)

    def _draw_view(self) -> None:
        width, height = self._size()
        below = self._below or 0
        end = len(self.scrollback) - below
        lines = self._last_rows(height - 2, end)
        new = f", {self._unseen} new" if self._unseen else ""
        status = f"-- {below} lines below{new}; Page Down to go back --"
        self._write(
            "\x1b[H\x1b[2J"
            + "".join(line + "\n" for line in lines)
            + f"\x1b[{height - 1};1H"
            + self.renderer._paint(status[: max(width - 1, 1)], "7")
            + f"\x1b[{height};1H"
        )
        self.draw()

    def handle_PGUP(self) -> None:
        page = self._page()
        if self._below is None:
            if not self.scrollback:
                return
            self._write(ALTERNATE_SCREEN_ON)
            self._below = 0
            self._unseen = 0
        self._below = min(self._below + page, max(len(self.scrollback) - 1, 0))
        self._draw_view()

    def handle_PGDN(self) -> None:
        if self._below is None:
            return
        self._below -= self._page()
        if self._below > 0:
            self._draw_view()
        else:
            self.leave_view()

    def leave_view(self) -> None:
        """
        Back from the scrollback view to the screen as it was, with the
        lines that arrived meanwhile printed below it.
        """
        if self._below is None:
            return
        unseen = list(self.scrollback)[len(self.scrollback) - self._unseen :]
        self._below = None
        self._unseen = 0
        self._write(ALTERNATE_SCREEN_OFF + "\r\x1b[K" + "".join(line + "\n" for line in unseen))
        self.draw()

    # Keys

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if self._alt_rest:
            if modifier is None and isinstance(keyID, bytes) and b"\x80" <= keyID <= b"\xbf":
                self._alt_rest -= 1
                return
            self._alt_rest = 0
        handler = self.keyHandlers.get(keyID)
        if handler is not None:
            if modifier is None or keyID in (self.terminal.LEFT_ARROW, self.terminal.RIGHT_ARROW):
                handler()
            return
        if modifier is not None or not isinstance(keyID, bytes) or len(keyID) != 1:
            # Alt chords and named keys (b"[F1]") that have no handler.
            if modifier is not None and isinstance(keyID, bytes) and len(keyID) == 1:
                # Alt with a non-ASCII key: the parser gave the first byte
                # of its UTF-8 with Alt, and gives the rest as keys.
                self._alt_rest = _continuation_bytes(keyID[0])
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

    def paste_received(self, data: bytes) -> None:
        """
        A bracketed paste: its text goes into the line at the cursor, line
        breaks kept (a trailing one dropped), tabs as spaces, other control
        characters dropped. Nothing is sent until Enter.
        """
        text = data.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        text = text.rstrip("\n").replace("\t", "    ")
        chars = [c for c in text if c == "\n" or _typeable(c)]
        self.buffer[self.cursor : self.cursor] = chars
        self.cursor += len(chars)
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
        self.repaint()

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
        self.leave_view()
        command = local_command(line)
        if command is None and line.strip() and self.client is not None:
            if not self.client.connected:
                self.notice("Not connected: the line is kept; Enter sends it once connected.")
                return
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            self.on_line(line)
        self._history_position = len(self.history)
        self._draft = []
        self.buffer = []
        self.cursor = 0
        self._view = 0
        if command == "quit":
            self.draw()
            self.on_quit()
            return
        if command == "clear":
            self.clear_screen()
            return
        if command == "presence":
            self.draw()
            self.set_presence(line)
            return
        if not line.strip():
            self.draw()
            return
        # The line stays in the scrollback, as a shell leaves it.
        first, *more = line.split("\n")
        echo = [self.prompt + first] + ["  | " + part for part in more]
        self.show([self.renderer._paint(text, "2") for text in echo])
        if self.client is not None:
            self.client.send_line(line)

    def set_presence(self, line: str) -> None:
        """
        C{/presence [on|off]}: show or hide who joins and leaves.
        """
        rooms = self.renderer.rooms
        setting = presence_setting(line, rooms is not None and rooms.presence_shown)
        if setting is None:
            self.notice("Type /presence on or /presence off.")
        elif self.client is not None and hasattr(self.client, "set_presence"):
            self.notice(self.client.set_presence(setting))

    def handle_NEXT_ROOM(self) -> None:
        """
        Ctrl-X: make the next room joined the current one (a C{join} of a
        room the user is in switches to it without leaving any).
        """
        if self.client is not None and not self.client.connected:
            # The rooms of the lost connection are joined again only once
            # the session has reconnected and logged in again.
            self.notice("Not connected: Ctrl-X switches rooms once reconnected.")
            return
        rooms = self.renderer.rooms
        room = rooms.next_room() if rooms is not None and rooms.rooms_on else None
        if room is None:
            self.notice("No other room to switch to: /join ROOM joins one.")
        elif self.client is not None:
            self.client.send_request("join", room)

    def _request_words(self) -> List[str]:
        words = list(STANDARD_REQUESTS)
        rooms = self.renderer.rooms
        if rooms is not None and rooms.rooms_on:
            words += ["join", "leave", "rooms"]
        if rooms is not None and "private" in rooms.extensions:
            words.append("pm")
        return words

    def handle_TAB(self) -> None:
        start = self.cursor
        while start > 0 and not self.buffer[start - 1].isspace():
            start -= 1
        prefix = "".join(self.buffer[start : self.cursor])
        before = "".join(self.buffer[:start]).split()
        rooms = self.renderer.rooms
        if not before:
            slash = "/" if prefix.startswith("/") else ""
            prefix = prefix[len(slash) :]
            candidates = self._request_words()
        elif (
            len(before) == 1
            and before[0].lstrip("/").lower() in ("join", "leave")
            and rooms is not None
        ):
            slash = ""
            candidates = rooms.names()
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


class TerminalMode:
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


def _terminal_size(fd: int) -> Tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.columns or 80, size.lines or 24
    except OSError:
        return 80, 24


@implementer(IChatView)
class InteractiveFrontEnd:
    """
    The interactive client on a terminal.

    @param history: the input history file, or None to keep none.
    @param bell: ring the terminal bell for highlighted lines.
    """

    def __init__(
        self,
        reactor: Any,
        renderer: Renderer,
        target: str,
        history: Optional[InputHistory] = None,
        bell: bool = False,
        stdin: int = 0,
        stdout: int = 1,
    ) -> None:
        self.reactor = reactor
        self.renderer = renderer
        self.target = target
        self.history = history
        self._fds = (stdin, stdout)
        self._size = _terminal_size(stdout)
        self.console = ChatConsole(
            renderer,
            lambda: self._size,
            history=history.load() if history is not None else None,
            clock=reactor,
        )
        self.console.bell = bell
        if history is not None:
            self.console.on_line = history.add
        self._mode = TerminalMode(stdin)
        self._flags: Optional[FileFlags] = None
        self._io: Optional[stdio.StandardIO] = None
        self._old_winch: Any = None
        self._old_hup: Any = None
        self._restored = False
        # Messages shown, each as often as it was, so that the history sent
        # again after a reconnect does not show them twice (and a message
        # said three times is shown three times).
        self._seen: Counter = Counter()
        self._seen_order: Deque[Tuple[str, str, str]] = deque()

    def _hangup(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._stop_reactor)

    def _stop_reactor(self) -> None:
        if self.reactor.running:
            self.reactor.stop()

    def _fresh(self, entry: Any, again: Counter) -> bool:
        """
        Whether to show C{entry}: not if it is an item of a history that
        was shown already (C{again} counts such items in this response).
        """
        if entry.kind != "message" or entry.timestamp in (None, "") or entry.peer is not None:
            # A private history comes only when the user asks (/pm USER):
            # all of it is shown.
            return True
        key = (repr(entry.timestamp), repr(entry.sender), repr(entry.content))
        if entry.history:
            again[key] += 1
            if again[key] <= self._seen[key]:
                return False
        self._seen[key] += 1
        self._seen_order.append(key)
        if len(self._seen_order) > SCROLLBACK_LINES:
            old = self._seen_order.popleft()
            self._seen[old] -= 1
            if not self._seen[old]:
                del self._seen[old]
        return True

    def received(self, value: Any) -> None:
        lines: List[str] = []
        ring = False
        again: Counter = Counter()
        for entry in interpret(value):
            if self._fresh(entry, again):
                lines.extend(self.renderer.lines(entry))
                ring = ring or self.renderer.highlighted(entry)
        self.console.show(lines, ring)

    def notice(self, text: str) -> None:
        self.console.notice(neutralise(text))

    def start(self, session: ChatSession) -> None:
        self.console.client = session
        self.console.on_quit = lambda: session.quit(QUIT_LINGER, logout=True)
        self._flags = FileFlags(*self._fds)
        self._mode.enter()
        # Every way out restores the terminal: the normal path (stop), the
        # reactor shutting down (SIGTERM, SIGHUP), and interpreter exit.
        self.reactor.addSystemEventTrigger("after", "shutdown", self.restore)
        atexit.register(self.restore)
        try:
            self._old_winch = signal.signal(signal.SIGWINCH, self._winch)
        except (ValueError, OSError):
            self._old_winch = None
        try:
            # The terminal closed: log out and stop, as on SIGTERM (left to
            # its default, the signal would end the process with neither).
            self._old_hup = signal.signal(signal.SIGHUP, self._hangup)
        except (ValueError, OSError):
            self._old_hup = None
        self._io = stdio.StandardIO(
            KeyboardProtocol(lambda: self.console),
            stdin=self._fds[0],
            stdout=self._fds[1],
            reactor=self.reactor,
        )
        # Start at the bottom row, where the input line stays (what was on
        # the screen scrolls up, into the terminal's scrollback): a terminal
        # that reflows on a resize then keeps the line's rows on the screen.
        self._io.write(BRACKETED_PASTE_ON + b"\n" * max(self._size[1] - 1, 0))
        self.console.notice(
            f"Connected to {neutralise(self.target)}. Type help for the requests, "
            "Tab to complete, Ctrl-D to quit."
        )
        if self.history is not None and self.history.problem:
            self.console.notice(self.history.problem)

    def _winch(self, signum: int, frame: Any) -> None:
        self.reactor.callFromThread(self._resized)

    def _resized(self) -> None:
        self._size = _terminal_size(self._fds[1])
        self.console.resized()

    def stop(self) -> defer.Deferred:
        if self._io is None:
            return defer.succeed(None)
        self.console.finish()
        return flush_and_close(self.reactor, self._io, self.console.lost, self.restore)

    def restore(self) -> None:
        """
        Give the terminal back as it was found.
        """
        if self._restored:
            return
        self._restored = True
        try:
            os.write(self._fds[1], BRACKETED_PASTE_OFF)
        except OSError:
            pass
        self._mode.restore()
        if self._flags is not None:
            self._flags.restore()
        for signum, old in ((signal.SIGWINCH, self._old_winch), (signal.SIGHUP, self._old_hup)):
            if old is not None:
                try:
                    signal.signal(signum, old)
                except (ValueError, OSError):
                    pass
