"""
Tests for L{chat.client}: typed lines to requests, responses to safe text,
and the client protocol over a L{StringTransport} with a fake clock.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date
from typing import Any, Dict, List

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import error as ierror
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from chat.client.cli import Options
from chat.client.commands import local_command, parse_input
from chat.client.config import InputHistory, config_path, history_path
from chat.client.connection import REQUEST_GAP, ChatClientProtocol, IChatView, describe_error
from chat.client.display import Renderer, format_json, interpret, names_from, neutralise
from chat.wire import DecodeError, StreamDecoder

TS = "2026-11-24T12:00:00Z"

#: An environment in which the client finds no config file.
NO_FILES = {"XDG_CONFIG_HOME": "/nonexistent/chat-test", "XDG_DATA_HOME": "/nonexistent/chat-test"}


def response(kind: str, content: Any, sender: str = "server", ts: Any = TS) -> dict:
    return {"timestamp": ts, "sender": sender, "response": kind, "content": content}


class ParseInputTests(TestCase):
    """
    What each typed line sends.
    """

    def test_standard_forms(self) -> None:
        """
        The standard's forms send the request word and the rest of the line,
        or null when there is none.
        """
        self.assertEqual(parse_input("login alice"), ("login", "alice"))
        self.assertEqual(parse_input("msg hello there"), ("msg", "hello there"))
        self.assertEqual(parse_input("names"), ("names", None))
        self.assertEqual(parse_input("help"), ("help", None))
        self.assertEqual(parse_input("logout"), ("logout", None))

    def test_passthrough(self) -> None:
        """
        Any other word is sent as the request, so server extensions work.
        """
        self.assertEqual(parse_input("join #room 2"), ("join", "#room 2"))
        self.assertEqual(parse_input("whoami"), ("whoami", None))

    def test_message_spacing_kept(self) -> None:
        """
        Spacing inside the content is kept; only the ends of the line and
        the separator after the word go.
        """
        self.assertEqual(parse_input("msg  a   b \r\n"), ("msg", "a   b"))

    def test_conveniences(self) -> None:
        """
        A leading slash is dropped and the word is lower-cased; blank lines
        send nothing.
        """
        self.assertEqual(parse_input("/names"), ("names", None))
        self.assertEqual(parse_input("/msg /shrug"), ("msg", "/shrug"))
        self.assertEqual(parse_input("Login Alice"), ("login", "Alice"))
        self.assertIsNone(parse_input(""))
        self.assertIsNone(parse_input("   "))
        self.assertIsNone(parse_input("/"))


class NeutraliseTests(TestCase):
    """
    Text from the network cannot control the terminal.
    """

    def test_escape_sequences(self) -> None:
        """
        ESC, CSI (8-bit), BEL and other controls become visible stand-ins,
        so clearing the screen, moving the cursor or setting the title fail.
        """
        attacks = [
            "\x1b[2J\x1b[H",  # clear screen, home
            "\x1b]0;pwned\x07",  # set title
            "\x9b2J",  # 8-bit CSI
            "\x1bc",  # reset
            "a\rfake line",  # overwrite the line
            "\x08\x08\x08",  # backspaces
            "\x00\x7f",
        ]
        for text in attacks:
            out = neutralise(text)
            self.assertFalse(any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out), out)
        self.assertEqual(neutralise("\x1b[2J"), "^[[2J")
        self.assertEqual(neutralise("a\rb"), "a^Mb")
        self.assertEqual(neutralise("\x9b"), "<U+009B>")

    def test_line_and_direction_controls(self) -> None:
        """
        Newlines, Unicode line separators, bidi overrides and lone
        surrogates are made visible too; ordinary text is untouched.
        """
        self.assertEqual(neutralise("a\nb"), "a^Jb")
        self.assertEqual(neutralise("a\u2028b"), "a<U+2028>b")
        self.assertEqual(neutralise("\u202eevil"), "<U+202E>evil")
        self.assertEqual(neutralise("\udc80"), "<U+DC80>")
        self.assertEqual(neutralise("hei på deg, 你好 😀"), "hei på deg, 你好 😀")

    @given(st.text())
    def test_any_text(self, text: str) -> None:
        """
        For any text at all, the result has no control character, DEL,
        C1 control, bidi control, line separator or lone surrogate, and
        can be written as UTF-8.
        """
        out = neutralise(text)
        for char in out:
            code = ord(char)
            self.assertFalse(code < 0x20 or 0x7F <= code <= 0x9F, repr(out))
            self.assertNotIn(
                char,
                "\u061c\u200e\u200f\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
            )
            self.assertFalse(0xD800 <= code <= 0xDFFF)
        out.encode("utf-8")

    def test_rendered_lines_are_safe(self) -> None:
        """
        Every field of every kind of response is neutralised when rendered,
        and a message cannot fake a second line.
        """
        evil = "x\x1b[2J\r\n12:00:00 <admin> fake"
        values = [
            response("message", evil, sender=evil, ts=evil),
            response("info", evil),
            response("error", evil),
            response(evil, evil, sender=evil),
            response("history", [json.dumps(response("message", evil, sender=evil))]),
            [evil],
        ]
        for colour in (False, True):
            renderer = Renderer(colour=colour, multiline=True)
            for value in values:
                for entry in interpret(value):
                    lines = renderer.lines(entry)
                    for line in lines:
                        cleaned = line.replace("\x1b[0m", "")
                        self.assertNotIn("\r", line)
                        self.assertNotIn("\n", line)
                        # The only ESC are our own colour codes.
                        self.assertNotIn("\x1b[2J", cleaned)
                    for line in lines[1:]:
                        self.assertTrue(line.replace("\x1b[2m", "").startswith("  | "))


class InterpretTests(TestCase):
    """
    Every response variant of PROTOCOL.md section 5 is understood.
    """

    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["timestamp", "sender", "response", "content", "x"])
                    | st.text(max_size=3),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=12,
        )
    )
    def test_anything_renders(self, value: Any) -> None:
        """
        Whatever JSON a server sends, as a response or inside a history,
        renders to safe lines without an exception.
        """
        for candidate in (
            value,
            response("history", value),
            response("history", json.dumps(value)),
            response("message", value, value, value),
        ):
            for colour in (False, True):
                renderer = Renderer(colour=colour, multiline=colour)
                for entry in interpret(candidate):
                    for line in renderer.lines(entry):
                        bare = re.sub("\x1b\\[[0-9;]*m", "", line)
                        self.assertEqual(neutralise(bare), bare)

    def render(self, value: Any) -> List[str]:
        renderer = Renderer(today=lambda: date(2026, 11, 24))
        return [line for entry in interpret(value) for line in renderer.lines(entry)]

    def test_history_string_nested_too_deep(self) -> None:
        """
        A history given as a JSON string nested deeper than the parser can
        go is shown as text, not a crash.
        """
        nested = "[" * 100000 + "]" * 100000
        lines = self.render(response("history", nested))
        self.assertTrue(lines)
        self.assertIn("[[[", "".join(lines))

    def test_standard_responses(self) -> None:
        """
        Messages show time, sender and text; info and error are labelled.
        """
        self.assertEqual(
            self.render(response("message", "hi", "alice", "2026-11-24T12:00:00+00:00")),
            [self.local("12:00:00") + " <alice> hi"],
        )
        self.assertTrue(
            self.render(response("info", "Login successful"))[0].endswith(
                " [info] Login successful"
            )
        )
        self.assertTrue(
            self.render(response("error", "Username taken"))[0].endswith("[error] Username taken")
        )

    def local(self, hhmmss: str) -> str:
        # The renderer shows local time; work out what 12:00 UTC is here.
        return Renderer(today=lambda: date(2026, 11, 24)).time(f"2026-11-24T{hhmmss}Z")

    def test_any_case_and_msg(self) -> None:
        """
        Response words (and keys) in any letter case, and C{msg} for
        C{message}.
        """
        for word in ("MESSAGE", "Message", "msg", "MSG", " message "):
            [entry] = interpret(response(word, "hi", "bob"))
            self.assertEqual(entry.kind, "message")
        [entry] = interpret({"Timestamp": TS, "SENDER": "bob", "Response": "Info", "Content": "x"})
        self.assertEqual((entry.kind, entry.sender, entry.content), ("info", "bob", "x"))

    def history_variants(self) -> List[Any]:
        m1 = response("message", "first", "alice")
        m2 = response("message", "second", "bob")
        return [
            response("history", [m1, m2]),
            response("history", [json.dumps(m1), json.dumps(m2)]),
            response("history", json.dumps([m1, m2])),
            response("history", json.dumps([json.dumps(m1), json.dumps(m2)])),
            response("HISTORY", [json.dumps(json.dumps(m1)), m2]),
        ]

    def test_history_variants(self) -> None:
        """
        History as a list of objects, a list of JSON strings, one JSON
        string, or strings encoded twice: all give the same messages in
        order, marked as history.
        """
        for value in self.history_variants():
            entries = interpret(value)
            self.assertEqual(
                [(e.kind, e.sender, e.content, e.history) for e in entries],
                [("message", "alice", "first", True), ("message", "bob", "second", True)],
                value,
            )
            lines = self.render(value)
            self.assertIn("[history] <alice> first", lines[0])
            self.assertIn("[history] <bob> second", lines[1])

    def test_several_history_responses(self) -> None:
        """
        A history split over several responses shows in order.
        """
        a = response("history", [json.dumps(response("message", "1", "a"))])
        b = response("history", [json.dumps(response("message", "2", "b"))])
        self.assertEqual([e.content for e in interpret(a) + interpret(b)], ["1", "2"])

    def test_empty_history(self) -> None:
        """
        An empty history (a list, an empty string, null or "[]") says so.
        """
        for content in ([], "", None, "[]"):
            lines = self.render(response("history", content))
            self.assertEqual(len(lines), 1)
            self.assertIn("[history] (empty)", lines[0])

    def test_history_odd_items(self) -> None:
        """
        History items that are plain text or not messages are shown too.
        """
        entries = interpret(response("history", ["just text", response("info", "old info"), 42]))
        self.assertEqual(
            [(e.kind, e.content) for e in entries],
            [("message", "just text"), ("info", "old info"), ("message", 42)],
        )
        lines = self.render(response("history", ["just text"]))
        self.assertIn("[history] <?> just text", lines[0])

    def test_replayed_messages(self) -> None:
        """
        Old messages replayed as C{message} responses show as messages.
        """
        lines = self.render(response("message", "old", "carol", "2020-01-02T03:04:05Z"))
        self.assertIn("<carol> old", lines[0])
        self.assertTrue(lines[0].startswith("2020-01-0"))

    def test_numeric_timestamps(self) -> None:
        """
        Timestamps as seconds or milliseconds since the epoch, as numeric
        strings, as free text, or missing, all render.
        """
        renderer = Renderer(today=lambda: date(2026, 11, 24))
        seconds = 1700000000
        self.assertEqual(renderer.time(seconds), renderer.time(seconds * 1000))
        self.assertEqual(renderer.time(seconds), renderer.time(str(seconds)))
        self.assertRegex(renderer.time(seconds), r"^2023-11-1[45] \d\d:\d\d:\d\d$")
        self.assertEqual(renderer.time("yesterday-ish"), "yesterday-ish")
        self.assertEqual(renderer.time(None), "")
        self.assertEqual(renderer.time(True), "true")
        lines = self.render(response("message", "hi", "x", ts=None))
        self.assertEqual(lines, ["<x> hi"])

    def test_timestamps_out_of_range(self) -> None:
        """
        A timestamp that is a time but cannot be shown in local time (the
        first or last day Python knows, in a zone that takes it past the
        edge; a number too large for a float) is shown as the server's
        text, not a crash that drops the connection.
        """
        renderer = Renderer(today=lambda: date(2026, 11, 24))
        for value in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            self.assertEqual(renderer.time(value), value)
        self.assertEqual(renderer.time(10**30), str(10**30))
        lines = self.render(response("message", "hi", "x", ts="0001-01-01T00:00:00+14:00"))
        self.assertEqual(lines, ["0001-01-01T00:00:00+14:00 <x> hi"])

    def test_odd_senders(self) -> None:
        """
        An empty, missing or non-string sender is shown, not a crash.
        """
        self.assertIn("<?> hi", self.render(response("message", "hi", ""))[0])
        self.assertIn("<?> hi", self.render({"response": "message", "content": "hi"})[0])
        self.assertIn("<42> hi", self.render(response("message", "hi", 42))[0])  # type: ignore[arg-type]

    def test_unknown_and_malformed(self) -> None:
        """
        Unknown response types, non-objects and undecodable data are shown.
        """
        self.assertIn("[whisper] <bob> psst", self.render(response("whisper", "psst", "bob"))[0])
        self.assertIn("unexpected data from the server: [1, 2]", self.render([1, 2])[0])
        self.assertIn("not JSON (Malformed JSON)", self.render(DecodeError("Malformed JSON"))[0])
        self.assertIn(
            "(Invalid UTF-8 in response)", self.render(DecodeError("Invalid UTF-8 in request"))[0]
        )
        self.assertIn('{"foo": 1}', self.render({"foo": 1})[0])
        self.assertIn("<?> text only", self.render({"content": "text only"})[0])

    def test_content_shapes(self) -> None:
        """
        Names as a list are joined; other JSON content is shown as JSON;
        line breaks stay on one line in plain mode and become indented
        continuation lines in interactive mode.
        """
        self.assertTrue(self.render(response("info", ["alice", "bob"]))[0].endswith("alice, bob"))
        self.assertTrue(self.render(response("info", {"a": 1}))[0].endswith('{"a":1}'))
        self.assertTrue(self.render(response("info", "a\nb"))[0].endswith("a\\nb"))
        multi = Renderer(multiline=True)
        [entry] = interpret(response("info", "a\r\nb"))
        self.assertEqual(multi.lines(entry)[1:], ["  | b"])

    def test_colour(self) -> None:
        """
        With colour on, errors are red and the text is unchanged; with it
        off there are no escape codes at all.
        """
        [entry] = interpret(response("error", "bad"))
        self.assertIn("\x1b[1;31m[error]\x1b[0m", Renderer(colour=True).lines(entry)[0])
        for value in [response(k, "x", "bob") for k in ("message", "info", "error", "zz")]:
            for entry in interpret(value):
                self.assertNotIn("\x1b", Renderer(colour=False).lines(entry)[0])

    def test_json_output(self) -> None:
        """
        --json prints each value on one ASCII line, controls escaped.
        """
        line = format_json(response("message", "hæ\x1b[2J\u2028", "a"))
        self.assertNotIn("\n", line)
        self.assertTrue(line.isascii())
        self.assertEqual(json.loads(line)["content"], "hæ\x1b[2J\u2028")

    def test_json_output_non_finite(self) -> None:
        """
        --json writes JSON even for the numbers JSON cannot write, which a
        server's NaN, Infinity or 1e400 decode to: as null, as
        JavaScript's JSON.stringify does; a string that says NaN stays.
        """
        data = b'{"timestamp":1e400,"response":"info","content":[NaN,-Infinity,"NaN",1.5]}\n'
        [value] = StreamDecoder().feed(data)

        def refuse(constant: str) -> Any:
            raise ValueError(f"{constant} is not JSON")

        self.assertEqual(
            json.loads(format_json(value), parse_constant=refuse),
            {"timestamp": None, "response": "info", "content": [None, None, "NaN", 1.5]},
        )

    def test_names_from(self) -> None:
        """
        The answer to C{names} gives the usernames, as a list or a string.
        """
        self.assertEqual(names_from("alice, bob"), ["alice", "bob"])
        self.assertEqual(names_from(["alice", "bob", "no way"]), ["alice", "bob"])
        self.assertEqual(names_from("Error: something went wrong!"), [])
        self.assertEqual(names_from("alice bob;carol"), ["alice", "bob", "carol"])
        # A long reply that is not names is refused quickly (no
        # catastrophic backtracking).
        self.assertEqual(names_from("a" * 5000 + "!"), [])
        # Nor quadratic: 200,000 spaces before the end took minutes.
        self.assertEqual(names_from("alice" + " " * 200_000 + "!"), [])
        self.assertEqual(names_from("alice, bob. "), ["alice", "bob"])


@implementer(IChatView)
class RecordingView:
    def __init__(self) -> None:
        self.values: List[Any] = []

    def received(self, value: Any) -> None:
        self.values.append(value)

    def notice(self, text: str) -> None:
        self.values.append(("notice", text))


class ConnectedTestCase(TestCase):
    """
    Sets up a L{ChatClientProtocol} on a L{StringTransport} with a fake
    clock, its endings recorded.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.view = RecordingView()
        self.proto = ChatClientProtocol(self.view, self.clock)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.endings: List[Any] = []
        self.proto.ended.addCallback(self.endings.append)


class ProtocolTests(ConnectedTestCase):
    """
    L{ChatClientProtocol} over a L{StringTransport}.
    """

    def sent(self) -> List[bytes]:
        data = self.transport.value()
        self.transport.clear()
        return data.splitlines(keepends=True)

    def test_each_line_sends(self) -> None:
        """
        Each typed line sends one compact JSON request ending in a newline,
        with null content for argument-less requests.
        """
        cases = [
            ("login alice", b'{"request":"login","content":"alice"}\n'),
            ("msg hei på deg", '{"request":"msg","content":"hei på deg"}\n'.encode("utf-8")),
            ("names", b'{"request":"names","content":null}\n'),
            ("help", b'{"request":"help","content":null}\n'),
            ("logout", b'{"request":"logout","content":null}\n'),
            ("/kick bob now", b'{"request":"kick","content":"bob now"}\n'),
            ('msg say "hi"\\', b'{"request":"msg","content":"say \\"hi\\"\\\\"}\n'),
        ]
        for line, expected in cases:
            self.clock.advance(REQUEST_GAP)
            self.proto.send_line(line)
            self.assertEqual(self.sent(), [expected])
        self.proto.send_line("   ")
        self.clock.advance(REQUEST_GAP)
        self.assertEqual(self.sent(), [])

    def test_one_request_per_write(self) -> None:
        """
        Requests typed (or piped) together go out one per write, spaced by
        REQUEST_GAP, so a server reading one request per recv() sees them
        one by one.
        """
        for line in ["login bot", "msg hi", "names", "logout"]:
            self.proto.send_line(line)
        self.assertEqual(len(self.sent()), 1)
        for _ in range(3):
            self.clock.advance(REQUEST_GAP * 0.4)
            self.assertEqual(self.sent(), [])
            self.clock.advance(REQUEST_GAP * 0.6 + 1e-9)
            self.assertEqual(len(self.sent()), 1)
        self.clock.advance(1)
        self.assertEqual(self.sent(), [])
        self.assertTrue(self.proto.logout_sent)

    def test_stream_decoding_at_every_chunking(self) -> None:
        """
        Responses bare, newline-terminated, pretty-printed or several per
        segment are decoded the same, split at every byte.
        """
        values = [
            response("info", "Login successful"),
            response("history", [json.dumps(response("message", "x", "a"))]),
            response("message", 'hæ {}[]"\\', "a"),
        ]
        streams = [
            b"".join(json.dumps(v).encode() for v in values),
            b"".join(json.dumps(v).encode() + b"\n" for v in values),
            b"".join(json.dumps(v, indent=2).encode() + b"\r\n" for v in values),
            b"".join(json.dumps(v, ensure_ascii=False).encode() + b" \t" for v in values),
        ]
        for stream in streams:
            for size in range(1, len(stream) + 1):
                view = RecordingView()
                proto = ChatClientProtocol(view, Clock())
                proto.makeConnection(StringTransport())
                for i in range(0, len(stream), size):
                    proto.dataReceived(stream[i : i + size])
                self.assertEqual(view.values, values, (stream, size))

    def test_names_are_learned(self) -> None:
        """
        Senders of messages and history items and the answer to C{names}
        are remembered for completion; other info is not mistaken for names.
        """
        self.proto.dataReceived(json.dumps(response("info", "Login successful")).encode())
        self.proto.dataReceived(json.dumps(response("message", "hi", "alice")).encode())
        self.proto.dataReceived(
            json.dumps(
                response("history", [json.dumps(response("message", "x", "carol"))])
            ).encode()
        )
        self.proto.send_line("names")
        self.proto.dataReceived(json.dumps(response("info", "alice, bob, dave")).encode())
        self.proto.dataReceived(json.dumps(response("info", "xyz")).encode())
        self.assertEqual(self.proto.names, {"alice", "bob", "carol", "dave"})

    def test_broadcast_info_is_not_the_names_answer(self) -> None:
        """
        An C{info} broadcast (another user's notice) that arrives while the
        answer to C{names} is due gives Tab completion none of its words;
        the answer that follows it (it names the user, who is logged in)
        gives its names.
        """
        self.proto.send_line("login alice")
        self.proto.dataReceived(json.dumps(response("info", "Login successful")).encode())
        self.proto.dataReceived(json.dumps(response("history", [])).encode())
        self.clock.advance(REQUEST_GAP)
        self.proto.send_line("names")
        self.proto.dataReceived(json.dumps(response("info", "bob has joined the chat")).encode())
        self.proto.dataReceived(json.dumps(response("info", "alice, bob")).encode())
        self.assertEqual(self.proto.names, {"alice", "bob"})

    def test_server_closes_after_logout(self) -> None:
        """
        The server closing the connection after logout is an expected end.
        """
        self.proto.send_line("logout")
        self.proto.dataReceived(json.dumps(response("info", "Logged out")).encode())
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertTrue(self.endings[0].expected)

    def test_server_closes_unexpectedly(self) -> None:
        """
        The server closing or the connection breaking without a logout is
        an unexpected end, with a reason for the user.
        """
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(self.endings[0].expected, False)
        self.assertEqual(self.endings[0].reason, "the server closed the connection")
        proto = ChatClientProtocol(RecordingView(), Clock())
        proto.makeConnection(StringTransport())
        endings: List[Any] = []
        proto.ended.addCallback(endings.append)
        proto.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertEqual(endings[0].reason, "connection lost: the connection broke")

    def test_quit_lingers(self) -> None:
        """
        quit() sends what is queued, waits the linger time, then closes; an
        ending the user asked for is expected. A line typed meanwhile is
        not sent, and the user is told so.
        """
        self.proto.send_line("login a")
        self.proto.send_line("msg b")
        self.proto.quit(1.0)
        self.proto.send_line("msg too late")
        self.assertEqual(
            self.view.values, [("notice", "Not sent, the client is quitting: msg too late")]
        )
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(REQUEST_GAP)
        self.assertEqual(len(self.sent()), 2)
        self.clock.advance(0.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertTrue(self.endings[0].expected)

    def test_quit_logs_out(self) -> None:
        """
        quit(logout=True) after a login (even one still waiting to go out)
        sends logout first, then closes; without a login it sends nothing.
        """
        self.proto.quit(0, logout=True)
        self.assertEqual(self.sent(), [])
        proto = ChatClientProtocol(RecordingView(), Clock())
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.send_line("help")
        proto.send_line("login a")
        proto.quit(0, logout=True)
        self.assertFalse(transport.disconnecting)
        proto.clock.advance(REQUEST_GAP)
        proto.clock.advance(REQUEST_GAP)
        self.assertEqual(len(transport.value().splitlines()), 3)
        self.assertEqual(transport.value().splitlines()[-1], b'{"request":"logout","content":null}')
        self.assertTrue(transport.disconnecting)

    def test_too_large(self) -> None:
        """
        A response over the size bound ends the connection with a reason.
        """
        proto = ChatClientProtocol(self.view, Clock(), max_size=100)
        transport = StringTransport()
        proto.makeConnection(transport)
        endings: List[Any] = []
        proto.ended.addCallback(endings.append)
        proto.dataReceived(b'{"content": "' + b"x" * 200)
        self.assertTrue(transport.disconnecting)
        proto.send_line("msg meanwhile")
        self.assertEqual(
            self.view.values[-1], ("notice", "Not sent before the connection ended: msg meanwhile")
        )
        proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertFalse(endings[0].expected)
        self.assertIn("too large", endings[0].reason)


class PlainInputTests(TestCase):
    def test_long_line_cut_and_its_rest_dropped(self) -> None:
        """
        A line longer than MAX_INPUT_LINE, arriving in pieces, is taken
        cut to that length; the rest of it, up to its line end, is dropped,
        never taken as a line (a request) of its own; the next line is.
        """
        from chat.client.plain import MAX_INPUT_LINE, _PlainInput

        class Front:
            def __init__(self) -> None:
                self.lines: List[str] = []

            def line_received(self, line: str) -> None:
                self.lines.append(line)

        front = Front()
        reader = _PlainInput(front)  # type: ignore[arg-type]
        reader.dataReceived(b"msg " + b"x" * MAX_INPUT_LINE)
        reader.dataReceived(b"logout" * 10)
        reader.dataReceived(b"x\nnames\nmsg ")
        reader.dataReceived(b"y" * (MAX_INPUT_LINE + 5) + b"\nhelp\n")
        self.assertEqual(
            [line[:8] for line in front.lines], ["msg xxxx", "names", "msg yyyy", "help"]
        )
        self.assertEqual([len(line) for line in front.lines[::2]], [MAX_INPUT_LINE] * 2)


class OptionsTests(TestCase):
    """
    The command line.
    """

    def test_defaults(self) -> None:
        """
        localhost port 9998 unless told otherwise.
        """
        options = Options(NO_FILES)
        options.parseOptions([])
        self.assertEqual((options["host"], options["port"]), ("localhost", 9998))
        self.assertEqual(options.target(), "localhost port 9998")

    def test_endpoint_or_host(self) -> None:
        """
        --connect takes an endpoint description and excludes --host/--port;
        bad ports are refused.
        """
        options = Options(NO_FILES)
        options.parseOptions(["--connect", "unix:path=/tmp/x.sock"])
        self.assertEqual(options.target(), "unix:path=/tmp/x.sock")
        self.assertRaises(
            usage.UsageError, Options(NO_FILES).parseOptions, ["-c", "tcp:a:1", "-p", "2"]
        )
        self.assertRaises(usage.UsageError, Options(NO_FILES).parseOptions, ["--port", "70000"])

    def test_help_explains(self) -> None:
        """
        --help documents the conveniences and the modes.
        """
        text = str(Options(NO_FILES))
        for phrase in (
            "leading",
            "'/names' sends names",
            "Tab completes",
            "NO_COLOR",
            "--json",
            "logout",
        ):
            self.assertIn(phrase, text)

    def test_describe_error(self) -> None:
        """
        The errors users hit get a short plain phrase.
        """
        self.assertIn("connection refused", describe_error(ierror.ConnectionRefusedError()))
        self.assertEqual(describe_error(ierror.DNSLookupError("x")), "host not found")
        self.assertEqual(
            describe_error(ierror.ConnectError(2, "No such file or directory.")),
            "no such file or directory",
        )
        self.assertEqual(describe_error(ierror.ConnectError(111)), "connection refused")


class AnswerTests(ConnectedTestCase):
    """
    Answers matched to requests: when a logout counts, when plain mode may
    stop waiting, and TLS.
    """

    def receive(self, kind: str, content: Any, sender: str = "server") -> None:
        self.proto.dataReceived(json.dumps(response(kind, content, sender)).encode() + b"\n")

    def test_logout_counts_once_written(self) -> None:
        """
        A logout still waiting its turn when the server closes does not
        make the ending expected; one written and then closed on does.
        """
        self.proto.send_line("login x")
        self.proto.send_line("logout")
        self.receive("error", "Server full")
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(self.endings[0].expected, False)

        proto = ChatClientProtocol(RecordingView(), self.clock)
        proto.makeConnection(StringTransport())
        endings: List[Any] = []
        proto.ended.addCallback(endings.append)
        proto.send_line("logout")
        proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(endings[0].expected, True)

    def test_logout_written_then_broken(self) -> None:
        """
        A logout written but neither answered nor closed on cleanly (the
        connection broke) is not a session that ended as asked.
        """
        self.proto.send_line("logout")
        self.proto.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertEqual(self.endings[0].expected, False)

    def test_lines_not_sent_are_named(self) -> None:
        """
        Typed lines still waiting their turn (REQUEST_GAP) when the
        connection ends were never written: the user is told each of
        them, and of nothing that was written or that the client sent on
        its own.
        """
        self.proto.send_line("login bob")
        self.proto.send_line("msg one")
        self.proto.send_request("join", "dev")
        self.proto.send_line("msg two")
        self.clock.advance(REQUEST_GAP)
        self.assertEqual(len(self.transport.value().splitlines()), 2)
        self.proto.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertEqual(
            self.view.values,
            [("notice", "Not sent before the connection ended: msg two")],
        )

    def test_answers_matched(self) -> None:
        """
        Each request is answered by the next response that is not history;
        a message answers a msg only when it is the user's own; the name of
        an accepted login is remembered.
        """
        for line in ["login bob", "msg hi", "names"]:
            self.proto.send_line(line)
            self.clock.advance(REQUEST_GAP)
        self.assertEqual(self.proto.unanswered, 3)
        self.receive("info", "Login successful")
        self.receive("history", [])
        self.assertEqual((self.proto.unanswered, self.proto.username), (2, "bob"))
        self.receive("message", "hello", sender="alice")
        self.assertEqual(self.proto.unanswered, 2)
        self.receive("message", "hi", sender="Bob")
        self.receive("info", "alice, bob")
        self.assertEqual(self.proto.unanswered, 0)

    def test_own_echo_with_an_odd_sender_answers(self) -> None:
        """
        A server that signs messages with an empty or missing sender: the
        echo of the text sent answers the msg; another text with such a
        sender, or the same text from another user, does not.
        """
        self.proto.send_line("login bob")
        self.receive("info", "Login successful")
        for sender in ("", None):
            self.proto.send_line("msg hi")
            self.clock.advance(REQUEST_GAP)
            self.receive("message", "something else", sender=sender)
            self.receive("message", "hi", sender="alice")
            self.assertEqual(self.proto.unanswered, 1)
            self.receive("message", "hi", sender=sender)
            self.assertEqual(self.proto.unanswered, 0)

    def test_quiet_after_answers(self) -> None:
        """
        quit_when_quiet waits while data keeps arriving (a long history in
        pieces), and closes once the server has been quiet for the wait.
        """
        self.proto.send_line("login bob")
        self.receive("info", "Login successful")
        self.proto.quit_when_quiet(0.3, 10.0)
        for _ in range(10):
            self.clock.advance(0.2)
            self.proto.dataReceived(b'{"response": "history", "content": ["x",')
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.29)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.02)
        self.assertTrue(self.transport.disconnecting)

    def test_patience_for_missing_answers(self) -> None:
        """
        While an answer is missing the wait is the longer one, and running
        out of it is a failure that names the request.
        """
        self.proto.send_line("login bob")
        self.proto.quit_when_quiet(0.3, 5.0)
        self.clock.advance(4.9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting)
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(
            self.endings[0].reason, "no answer from the server to 1 request (login) in 5 seconds"
        )
        self.assertEqual(self.endings[0].expected, False)

    def test_tls_waits_for_handshake(self) -> None:
        """
        Over TLS nothing is sent and the connection is not ready until the
        handshake has completed; a connection lost before then fails the
        wait for it.
        """

        @implementer(ISSLTransport)
        class TLSTransport(StringTransport):
            def getPeerCertificate(self) -> None:
                return None

        proto = ChatClientProtocol(RecordingView(), self.clock)
        ready: List[Any] = []
        proto.when_ready().addBoth(ready.append)
        transport = TLSTransport()
        proto.makeConnection(transport)
        proto.send_line("login x")
        self.assertEqual((transport.value(), ready), (b"", []))
        proto.handshakeCompleted()
        self.assertEqual(transport.value(), b'{"request":"login","content":"x"}\n')
        self.assertEqual(ready, [proto])

        failed = ChatClientProtocol(RecordingView(), self.clock)
        failed.makeConnection(TLSTransport())
        outcome: List[Any] = []
        failed.when_ready().addBoth(outcome.append)
        failed.connectionLost(Failure(ierror.ConnectionLost("handshake failed")))
        self.assertIsInstance(outcome[0], Failure)


class CommandAndDisplayTests(TestCase):
    """
    /me, the client's own commands, actions and highlights.
    """

    def test_me_and_local_commands(self) -> None:
        """
        /me TEXT is a standard msg with the content "/me TEXT"; /quit and
        /clear (with any words after them) are the client's own; without
        the slash they are requests.
        """
        self.assertEqual(parse_input("/me waves"), ("msg", "/me waves"))
        self.assertEqual(parse_input("/ME  waves\nagain"), ("msg", "/me waves\nagain"))
        self.assertEqual(parse_input("/me"), ("me", None))
        self.assertEqual(parse_input("msg a\nb"), ("msg", "a\nb"))
        self.assertEqual((local_command("/quit"), local_command(" /CLEAR ")), ("quit", "clear"))
        self.assertEqual((local_command("quit"), local_command("/names")), (None, None))
        # Words after them are ignored, as IRC's /quit takes a message.
        self.assertEqual(local_command("/quit see you"), "quit")
        self.assertEqual(local_command("/ clear now"), "clear")
        self.assertIsNone(local_command("/quitting"))

    def test_actions(self) -> None:
        """
        A message whose content starts with "/me " shows as an action, in
        the history too; other messages do not.
        """
        r = Renderer()
        [line] = r.lines(interpret(response("message", "/me waves", "alice"))[0])
        self.assertEqual(line, "12:00:00 * alice waves".replace("12:00:00", r.time(TS)))
        history = interpret(response("history", [json.dumps(response("message", "/me x", "bo"))]))
        self.assertTrue(r.lines(history[0])[0].endswith("[history] * bo x"))
        [plain] = r.lines(interpret(response("message", "/men at work", "alice"))[0])
        self.assertTrue(plain.endswith("<alice> /men at work"))

    def test_mentions(self) -> None:
        """
        A live message from someone else naming the user as a word stands
        out (reverse video); the user's own, history, and names inside
        other words do not; nothing does before login.
        """
        me: List[Any] = [None]
        r = Renderer(colour=True, me=lambda: me[0])
        hi = interpret(response("message", "hi Alice!", "bob"))[0]
        self.assertFalse(r.highlighted(hi))
        me[0] = "alice"
        self.assertTrue(r.highlighted(hi))
        self.assertIn("\x1b[7mhi Alice!", r.lines(hi)[0])
        for entry in [
            interpret(response("message", "hi alice", "ALICE"))[0],
            interpret(response("message", "malice", "bob"))[0],
            interpret(response("history", [response("message", "alice", "bob")]))[0],
            interpret(response("info", "alice"))[0],
        ]:
            self.assertFalse(r.highlighted(entry), entry)
        self.assertFalse(Renderer(colour=True, me=lambda: "alice", rules=[]).highlighted(hi))


class ConfigTests(TestCase):
    """
    The config file and the input history file.
    """

    def write_config(self, text: str) -> Dict[str, str]:
        home = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(home, "chat"))
        with open(os.path.join(home, "chat", "config.ini"), "w") as f:
            f.write(text)
        return {"XDG_CONFIG_HOME": home}

    def test_defaults_from_file(self) -> None:
        """
        The file gives host, port, name and bell; the command line wins.
        """
        env = self.write_config("[client]\nhost = h.example\nport = 1234\nname = al\nbell = yes\n")
        options = Options(env)
        options.parseOptions([])
        self.assertEqual(
            (options["host"], options["port"], options.login_name), ("h.example", 1234, "al")
        )
        self.assertTrue(options["bell"] and options.name_from_config)
        options = Options(env)
        options.parseOptions(["-p", "99", "-n", "bo"])
        self.assertEqual(
            (options["host"], options["port"], options.login_name), ("h.example", 99, "bo")
        )
        options = Options(env)
        options.parseOptions(["-c", "unix:path=/x"])
        self.assertEqual(options.target(), "unix:path=/x")
        options = Options(env)
        options.parseOptions(["--no-config"])
        self.assertEqual((options["host"], options.login_name), ("localhost", None))

    def test_bad_files(self) -> None:
        """
        A bad value, an unknown option or a file that is not INI is one
        line naming the file.
        """
        for text, phrase in [
            ("[client]\nport = x\n", "port: 'x' is not a port number"),
            ("[client]\ncolour = on\n", "[client] has no option 'colour'"),
            ("port = 1\n", "not a valid INI file"),
            ("[client]\nname = a b\n", "name: 'a b' is not a username"),
        ]:
            env = self.write_config(text)
            with self.assertRaises(usage.UsageError) as caught:
                Options(env).parseOptions([])
            message = str(caught.exception)
            self.assertIn(phrase, message)
            self.assertIn(env["XDG_CONFIG_HOME"], message)
            self.assertNotIn("\n", message)

    def test_paths(self) -> None:
        """
        XDG variables when set to absolute paths, else the defaults in ~.
        """
        self.assertEqual(config_path({"XDG_CONFIG_HOME": "/c"}), "/c/chat/config.ini")
        self.assertEqual(history_path({"XDG_DATA_HOME": "/d"}), "/d/chat/history")
        home = os.path.expanduser("~")
        self.assertEqual(
            history_path({"XDG_DATA_HOME": "rel"}), f"{home}/.local/share/chat/history"
        )
        self.assertEqual(config_path({}), f"{home}/.config/chat/config.ini")

    def test_input_history(self) -> None:
        """
        Lines (a pasted one with line breaks too) come back in order; the
        file is the user's alone and is cut back to its size.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "chat", "history")
        history = InputHistory(path, size=3)
        self.assertEqual(history.load(), [])
        for line in ["one", "two\nlines", "three"]:
            history.add(line)
        self.assertEqual(InputHistory(path, size=3).load(), ["one", "two\nlines", "three"])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        for i in range(100):
            history.add(f"n{i}")
        with open(path) as f:
            # Cut back to 3 at the 100th line added, then 3 more.
            self.assertEqual(len(f.read().splitlines()), 6)
        self.assertEqual(InputHistory(path, size=3).load(), ["n97", "n98", "n99"])

    def test_history_problem(self) -> None:
        """
        A history that cannot be written is reported once, not raised.
        """
        blocker = os.path.abspath(self.mktemp())
        open(blocker, "w").close()
        history = InputHistory(os.path.join(blocker, "chat", "history"))
        history.add("x")
        self.assertIn("cannot keep the input history", history.problem or "")
        history.add("y")
