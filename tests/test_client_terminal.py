"""
Tests for the interactive line editor, L{chat.terminal.ChatConsole}, driven
through L{insults.ServerProtocol} as the real terminal drives it, with the
output played into Twisted's in-memory terminal emulator to see the screen.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Set

import pyte
from twisted.conch.insults import helper, insults
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from chat.client import cli
from chat.client.cli import Options, make_front_end
from chat.client.commands import parse_input
from chat.client.console import (
    ChatConsole,
    InteractiveFrontEnd,
    KeyboardProtocol,
    char_width,
    text_rows,
)
from chat.client.display import Renderer
from chat.client.plain import PlainFrontEnd, json_formatter, plain_formatter
from chat.wire import DecodeError


class FakeClient:
    """
    Stands in for L{chat.client.ChatClientProtocol}: records typed lines.
    """

    def __init__(self) -> None:
        self.lines: List[str] = []
        self.names: Set[str] = set()
        self.connected = True

    def send_line(self, line: str) -> Any:
        self.lines.append(line)
        return parse_input(line)


class Screen:
    """
    A console wired to a keyboard and a screen in memory.
    """

    def __init__(self, width: int = 80) -> None:
        self.client = FakeClient()
        self.raw = b""
        self.quits = 0
        self.console = ChatConsole(Renderer(multiline=True), lambda: (width, 24))
        self.console.client = self.client  # type: ignore[assignment]

        def quit() -> None:
            self.quits += 1

        self.console.on_quit = quit
        self.keyboard = KeyboardProtocol(lambda: self.console)
        self.output = StringTransport()
        self.keyboard.makeConnection(self.output)
        self.buffer = helper.TerminalBuffer()
        self.buffer.width = width
        self.emulator = insults.ClientProtocol(lambda: self.buffer)
        self.emulator.makeConnection(StringTransport())
        self.flush()

    def flush(self) -> None:
        data = self.output.value()
        self.raw += data
        # Twisted's emulator cannot parse private modes (bracketed paste,
        # the alternate screen); the tests look for those in raw.
        self.emulator.dataReceived(re.sub(rb"\x1b\[\?[0-9;]*[hl]", b"", data))
        self.output.clear()

    def type(self, keys: bytes) -> None:
        self.keyboard.dataReceived(keys)
        self.flush()

    def show(self, *lines: str) -> None:
        self.console.show(list(lines))
        self.flush()

    def lines(self) -> List[str]:
        text = bytes(self.buffer).decode("ascii", "replace")
        rows = text.split("\n")
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def row(self) -> str:
        return bytes(self.buffer).decode("ascii").split("\n")[self.buffer.y]

    @property
    def cursor(self) -> int:
        return self.buffer.x


class ConsoleTests(TestCase):
    """
    The interactive input line.
    """

    def test_message_above_partial_line(self) -> None:
        """
        A message arriving while a line is typed appears above it; the
        partial line and the cursor are as they were, and the finished line
        is sent whole.
        """
        s = Screen()
        s.type(b"msg hello wor")
        s.show("12:00:00 <bob> hi there")
        self.assertEqual(s.lines(), ["12:00:00 <bob> hi there", "> msg hello wor"])
        self.assertEqual(s.cursor, len("> msg hello wor"))
        s.type(b"ld\r")
        self.assertEqual(s.client.lines, ["msg hello world"])
        self.assertEqual(s.lines()[-2:], ["> msg hello world", "> "])

    def test_message_mid_edit(self) -> None:
        """
        With the cursor in the middle of the line, a message does not move
        it, and typing goes on where it was.
        """
        s = Screen()
        s.type(b"msg ac")
        s.type(b"\x1b[D")  # left
        s.show("one", "two")
        self.assertEqual(s.lines(), ["one", "two", "> msg ac"])
        self.assertEqual(s.cursor, len("> msg a"))
        s.type(b"b\r")
        self.assertEqual(s.client.lines, ["msg abc"])

    def test_editing_keys(self) -> None:
        """
        Backspace, Delete, Home/End, Ctrl-A/E/U/K/W edit the line.
        """
        s = Screen()
        s.type(b"msg hellx\x7fo")
        self.assertEqual(s.row(), "> msg hello")
        s.type(b"\x01\x1b[3~\x05X")  # Home, Delete, End, X
        self.assertEqual(s.row(), "> sg helloX")
        s.type(b"\x17")  # Ctrl-W
        self.assertEqual(s.row(), "> sg ")
        s.type(b"\x01\x0b")  # Ctrl-A, Ctrl-K
        self.assertEqual(s.row(), "> ")
        s.type(b"abc\x15")  # Ctrl-U
        self.assertEqual(s.row(), "> ")
        s.type(b"\x1b[2~")  # Insert: typeover
        s.type(b"abc\x01X")
        self.assertEqual(s.row(), "> Xbc")

    def test_input_history(self) -> None:
        """
        Up and Down recall earlier lines and come back to the draft.
        """
        s = Screen()
        s.type(b"msg one\rmsg two\rdraft")
        s.type(b"\x1b[A")
        self.assertEqual(s.row(), "> msg two")
        s.type(b"\x1b[A\x1b[A")
        self.assertEqual(s.row(), "> msg one")
        s.type(b"\x1b[B")
        self.assertEqual(s.row(), "> msg two")
        s.type(b"\x1b[B")
        self.assertEqual(s.row(), "> draft")
        s.type(b"\x10\r")  # Ctrl-P, Enter: send the recalled line again
        self.assertEqual(s.client.lines, ["msg one", "msg two", "msg two"])

    def test_tab_completion(self) -> None:
        """
        Tab completes usernames after the first word and request words at
        the start; with several matches it extends the common part or lists
        them above the line.
        """
        s = Screen()
        s.client.names.update({"alice", "albert", "bob"})
        s.type(b"msg hi b\t")
        self.assertEqual(s.row(), "> msg hi bob ")
        s.type(b"\x15msg al\t")
        self.assertEqual(s.lines()[-2:], ["*** albert alice", "> msg al"])
        s.type(b"i\tx")
        self.assertEqual(s.row(), "> msg alice x")
        s.type(b"\x15na\t")
        self.assertEqual(s.row(), "> names ")
        s.type(b"\x15/lo\t")
        self.assertEqual(s.row(), "> /log")
        s.type(b"\x15zz\t")
        self.assertEqual(s.row(), "> zz")

    def test_long_line_scrolls(self) -> None:
        """
        A line longer than the terminal scrolls sideways instead of
        wrapping, so it never spills onto other lines, and is sent whole.
        """
        s = Screen(width=20)
        text = b"msg " + b"".join(bytes([ord("a") + i % 26]) for i in range(50))
        s.type(text)
        self.assertEqual(len(s.lines()), 1)
        self.assertTrue(s.row().endswith(text[-10:].decode()))
        self.assertLess(s.cursor, 20)
        s.show("news")
        self.assertEqual(len(s.lines()), 2)
        s.type(b"\x01")
        self.assertTrue(s.row().startswith("> msg abc"))
        s.type(b"\r")
        self.assertEqual(s.client.lines, [text.decode()])

    def test_non_ascii_input(self) -> None:
        """
        UTF-8 input is taken as characters (one cursor step each), split
        across reads or not.
        """
        s = Screen()
        data = "msg blåbær 你".encode("utf-8")
        for i in range(len(data)):
            s.keyboard.dataReceived(data[i : i + 1])
        s.type(b"\x7f\x1b[D\x7f\r")
        self.assertEqual(s.client.lines, ["msg blåbæ "])
        self.assertEqual(char_width("你"), 2)
        self.assertEqual(char_width("\u0301"), 0)

    def test_zero_width_characters(self) -> None:
        """
        Characters that take no column on a terminal but are not combining
        marks (zero width space, zero width joiner, the emoji variation
        selector) take none in the input line, so the cursor is drawn where
        the terminal has it, and none in the rows a line is counted to fill.
        (The screen is read through pyte, which places characters as
        terminals do.)
        """
        for char in "\u200b\u200d\ufe0f\u2060\u20dd":
            self.assertEqual(char_width(char), 0, hex(ord(char)))
        self.assertEqual(char_width("\u00ad"), 1)
        self.assertEqual(text_rows("x" * 79 + "\u200b" * 5, 80), 1)
        s = Screen()
        s.type("msg a\u200bb\u200dc\u2764\ufe0f".encode("utf-8"))
        screen = pyte.Screen(80, 24)
        pyte.ByteStream(screen).feed(s.raw)
        self.assertEqual(screen.cursor.x, len("> msg abc\u2764"))

    def test_keys_that_are_not_text(self) -> None:
        """
        Function keys, Alt chords and stray control keys insert nothing.
        """
        s = Screen()
        s.type(b"a\x1bOP\x1b[15~\x1bx\x07\x00\x1b[1;5Cb")
        self.assertEqual(s.row(), "> ab")

    def test_alt_with_non_ascii_key(self) -> None:
        """
        Alt with a non-ASCII key (ESC and the key's UTF-8 bytes, which
        Twisted's key parser splits after the first) inserts nothing, as
        other Alt chords, not a replacement character for the bytes left
        over; the keys after it are typed as usual, split across reads or
        not.
        """
        data = b"a\x1b" + "é".encode() + b"b\x1b" + "你".encode() + "ø".encode()
        data += b"\x1b" + "😀".encode() + b"\x1b\xc3c"
        for size in (1, len(data)):
            s = Screen()
            for i in range(0, len(data), size):
                s.keyboard.dataReceived(data[i : i + size])
            self.assertEqual("".join(s.console.buffer), "abøc", size)

    def test_quit_keys(self) -> None:
        """
        Ctrl-D on an empty line and Ctrl-C quit; Ctrl-D in a line deletes.
        """
        s = Screen()
        s.type(b"ab\x01\x04")
        self.assertEqual((s.row(), s.quits), ("> b", 0))
        s.type(b"\x05\x15\x04")
        self.assertEqual(s.quits, 1)
        s.type(b"abc\x03")
        self.assertEqual(s.quits, 2)

    def test_blank_lines(self) -> None:
        """
        Enter on an empty line leaves no echo and sends nothing visible.
        """
        s = Screen()
        s.type(b"\r\r")
        self.assertEqual(s.lines(), ["> "])

    def test_redraw(self) -> None:
        """
        Ctrl-L paints the screen again from the client's scrollback: garbage
        written over it is gone, the lines shown and the input line stay.
        """
        s = Screen()
        s.show("old")
        s.type(b"xy")
        s.output.write(b"\x1b[1;1Hgarbage\x1b[5;1Hmore garbage")
        s.flush()
        s.type(b"\x0c")
        self.assertEqual(s.lines(), ["old", "> xy"])
        self.assertEqual(s.cursor, len("> xy"))


class FormatterTests(TestCase):
    """
    The plain mode formatters.
    """

    def test_plain_one_line_each(self) -> None:
        """
        Plain mode gives one line per response, one per history item.
        """
        lines, ring = plain_formatter(Renderer())(
            {
                "timestamp": None,
                "sender": "s",
                "response": "history",
                "content": ['{"sender":"a","response":"message","content":"x\\ny"}'],
            }
        )
        self.assertEqual((lines, ring), (["[history] <a> x\\ny"], False))

    def test_json_passes_values(self) -> None:
        """
        --json prints the value as received.
        """
        value = {"timestamp": 1, "sender": "s", "response": "info", "content": None}
        errors: List[str] = []
        self.assertEqual(
            json_formatter(errors.append)(value),
            (['{"timestamp":1,"sender":"s","response":"info","content":null}'], False),
        )
        self.assertEqual(json_formatter(errors.append)(DecodeError("bad", False)), ([], False))
        self.assertEqual(errors, ["ignored data from the server that is not JSON (bad)"])


class FrontEndChoiceTests(TestCase):
    """
    Which mode and whether colours, from the streams and the environment.
    """

    def choose(self, tty: bool, env: dict, *args: str) -> Any:
        home = os.path.abspath(self.mktemp())
        env = dict(env, XDG_CONFIG_HOME=home, XDG_DATA_HOME=home)
        options = Options(env)
        options.parseOptions(list(args))
        self.patch(cli.os, "isatty", lambda fd: tty)
        self.patch(cli.os, "environ", env)
        return make_front_end(None, options)

    def test_terminal(self) -> None:
        """
        On a terminal: interactive, in colour unless NO_COLOR or --no-color.
        """
        front = self.choose(True, {"TERM": "xterm"})
        self.assertIsInstance(front, InteractiveFrontEnd)
        self.assertTrue(front.renderer.colour)
        self.assertFalse(self.choose(True, {"TERM": "xterm", "NO_COLOR": "1"}).renderer.colour)
        self.assertFalse(self.choose(True, {"TERM": "xterm"}, "--no-color").renderer.colour)

    def test_not_a_terminal(self) -> None:
        """
        Not a terminal, a dumb terminal, --plain or --json: plain mode, and
        no colours when output is not a terminal.
        """
        front = self.choose(False, {"TERM": "xterm"})
        self.assertIsInstance(front, PlainFrontEnd)
        [line], _ = front.formatter({"response": "error", "content": "x"})
        self.assertNotIn("\x1b", line)
        self.assertIsInstance(self.choose(True, {"TERM": "dumb"}), PlainFrontEnd)
        self.assertIsInstance(self.choose(True, {"TERM": "xterm"}, "--plain"), PlainFrontEnd)
        json_front = self.choose(True, {}, "--json")
        self.assertEqual(json_front.formatter({"a": 1}), (['{"a":1}'], False))


class ConsoleFeatureTests(TestCase):
    """
    Paste, scrollback, /clear and the bell in the line editor.
    """

    def test_paste_split_anywhere(self) -> None:
        """
        A bracketed paste is one insertion however the bytes are split,
        line breaks kept, tabs as spaces; Enter sends it as one line.
        """
        data = b"msg \x1b[200~one\r\ttwo\r\n\x1b[201~!\r"
        for size in range(1, len(data) + 1):
            s = Screen()
            for i in range(0, len(data), size):
                s.type(data[i : i + size])
            self.assertEqual(s.client.lines, ["msg one\n    two!"], size)

    def test_page_up_and_down(self) -> None:
        """
        Page Up shows earlier lines on the alternate screen with a status
        line; lines arriving meanwhile wait below; Page Down returns and
        shows them. (The screen is read through pyte here: Twisted's
        emulator does not take the alternate screen.)
        """
        s = Screen()
        for i in range(60):
            s.show(f"line {i:02}")
        s.type(b"abc")
        s.type(b"\x1b[5~")
        self.assertIn(b"\x1b[?1049h", s.raw)

        def rows() -> List[str]:
            screen = pyte.Screen(80, 24)
            pyte.ByteStream(screen).feed(s.raw)
            return [row.rstrip() for row in screen.display]

        self.assertEqual(rows()[0], "line 16")
        self.assertEqual(rows()[21], "line 37")
        self.assertEqual(rows()[22], "-- 22 lines below; Page Down to go back --")
        self.assertEqual(rows()[23], "> abc")
        s.show("news")
        self.assertEqual(rows()[21], "line 37")
        self.assertEqual(rows()[22], "-- 23 lines below, 1 new; Page Down to go back --")
        s.type(b"\x1b[6~")
        self.assertEqual(
            rows()[21:], ["line 59", "-- 1 lines below, 1 new; Page Down to go back --", "> abc"]
        )
        s.type(b"\x1b[6~")
        self.assertIn(b"\x1b[?1049l\r\x1b[Knews\r\n", s.raw)
        self.assertTrue(s.raw.endswith(b"\r> abc\x1b[K\r\x1b[5C"), s.raw[-40:])

    def test_clear(self) -> None:
        """
        /clear scrolls the screen's lines away (into the terminal's
        scrollback) and leaves the input line at the top; nothing is sent.
        """
        s = Screen()
        s.show("old one", "old two")
        s.type(b"/clear\r")
        self.assertEqual(s.lines(), ["> "])
        self.assertEqual(s.client.lines, [])

    def test_bell(self) -> None:
        """
        A highlighted line rings the bell only when the bell is on.
        """
        s = Screen()
        s.show("x")
        s.console.show(["y"], ring=True)
        s.console.bell = True
        s.console.show(["z"], ring=False)
        s.flush()
        self.assertNotIn(b"\x07", s.raw)
        s.console.show(["w"], ring=True)
        s.flush()
        self.assertIn(b"\x07", s.raw)

    def test_enter_while_disconnected(self) -> None:
        """
        Enter while the connection is down keeps the line and says why.
        """
        s = Screen()
        s.client.connected = False
        s.type(b"msg wait\r")
        self.assertEqual(s.client.lines, [])
        self.assertEqual(s.row(), "> msg wait")
        s.client.connected = True
        s.type(b"\r")
        self.assertEqual(s.client.lines, ["msg wait"])
