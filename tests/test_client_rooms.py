"""
Tests for the client's side of issue 10 (rooms, private messages,
presence): the extension negotiation over a L{StringTransport} with a fake
clock, the rules of L{chat.client.rooms}, what is shown, and the console's
prompt, completion and room switching. The responses are those of the wire
design (the C{cap}, C{join}, C{leave}, C{rooms}, C{pm} replies with their
extension keys).
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

import pyte
from twisted.internet import defer
from twisted.internet import error as ierror
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from chat.client.cli import Options
from chat.client.commands import local_command, parse_input, presence_setting
from chat.client.connection import (
    CAP_TIMEOUT,
    CLOSE_WAIT,
    CLOSED_ON_CAP,
    REQUEST_GAP,
    ChatClientProtocol,
    ChatSession,
)
from chat.client.console import InteractiveFrontEnd
from chat.client.display import Renderer, interpret
from chat.client.rooms import EXTENSIONS, RoomState, granted, presence_line, rejoin_requests
from tests.test_client import NO_FILES, TS, RecordingView, response
from tests.test_client_terminal import FakeClient, Screen

CAP = b'{"request":"cap","content":"rooms private presence"}\n'
GRANT = dict(response("info", "Extensions on: presence, private, rooms"), caps=sorted(EXTENSIONS))


def ext(kind: str, content: Any, sender: str = "server", **keys: Any) -> dict:
    """
    A response with extension keys after the standard four.
    """
    return dict(response(kind, content, sender), **keys)


def written(clock: Clock, transport: StringTransport) -> List[Any]:
    """
    The requests written on C{transport} since the last call, decoded,
    after time for every queued one to go out.
    """
    for _ in range(20):
        clock.advance(REQUEST_GAP)
    data = transport.value()
    transport.clear()
    return [json.loads(line) for line in data.splitlines()]


class Wire:
    """
    A L{ChatClientProtocol} asking for C{wanted}, on a L{StringTransport}
    with a fake clock: what it writes, and what its view is given.
    """

    def __init__(self, wanted: Any = EXTENSIONS, rooms: Optional[RoomState] = None) -> None:
        self.clock = Clock()
        self.view = RecordingView()
        self.rooms = rooms if rooms is not None else RoomState(wanted)
        self.proto = ChatClientProtocol(self.view, self.clock, rooms=self.rooms)
        self.replies: List[Any] = []
        self.proto.on_reply = lambda *reply: self.replies.append(reply)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        # What the connection opened with (the cap), written at once.
        self.opening = self.transport.value()
        self.transport.clear()
        self.endings: List[Any] = []
        self.proto.ended.addCallback(self.endings.append)

    def sent(self) -> List[Any]:
        return written(self.clock, self.transport)

    def receive(self, *values: Any) -> None:
        for value in values:
            self.proto.dataReceived(json.dumps(value).encode() + b"\n")

    def shown(self) -> List[Any]:
        return self.view.values


def login_and_join(wire: Wire) -> None:
    """
    Log in as alice and join dev on a server that granted everything.
    """
    wire.receive(GRANT)
    wire.proto.send_line("login alice")
    wire.sent()
    wire.receive(response("info", "Login successful"), ext("history", [], room="lobby"))
    wire.proto.send_line("join dev")
    wire.sent()
    wire.receive(
        ext("info", "Joined dev", room="dev"),
        ext("history", [json.dumps(response("message", "old", "bob"))], room="dev"),
    )


class NegotiationTests(TestCase):
    """
    The opening C{cap} request and what the client does with its answer.
    """

    def test_cap_first_and_alone(self) -> None:
        """
        The first request on a connection is cap (content a string of
        names); what the user typed waits until it is answered, and the
        grant is not shown.
        """
        wire = Wire()
        self.assertEqual(wire.opening, CAP)
        wire.proto.send_line("login alice")
        wire.clock.advance(CAP_TIMEOUT / 2)
        self.assertEqual(wire.transport.value(), b"")
        wire.receive(GRANT)
        self.assertEqual(wire.sent(), [{"request": "login", "content": "alice"}])
        self.assertEqual(wire.shown(), [])
        self.assertEqual(wire.rooms.extensions, frozenset(EXTENSIONS))

    def test_refused_is_the_standard_client(self) -> None:
        """
        A server that answers cap with an error (our older server's
        "Unknown request", a field server's own words, a "not logged in"
        before login): the error is not shown, nothing is granted, and
        everything after it is shown and matched exactly as by a client
        that never asked.
        """
        session = [
            response("info", "Login successful"),
            response("history", [json.dumps(response("message", "old", "bob"))]),
            response("message", "hi", "alice"),
            response("info", "alice, bob"),
        ]
        for refusal in [
            response("error", "Unknown request 'cap': try help"),
            response("error", "You must log in first"),
            response("error", "ERR 17"),
            response("info", "what?"),
        ]:
            standard = Wire(wanted=())
            asking = Wire()
            asking.receive(refusal)
            for wire in (standard, asking):
                for line in ["login alice", "msg hi", "names"]:
                    wire.proto.send_line(line)
                wire.sent()
                wire.receive(*session)
            self.assertEqual(asking.shown(), standard.shown(), refusal)
            self.assertEqual(asking.replies, standard.replies)
            self.assertEqual(asking.proto.unanswered, 0)
            self.assertEqual(asking.rooms.extensions, frozenset())
            self.assertEqual(asking.rooms.prompt(), None)

    def test_silent_server(self) -> None:
        """
        A server that answers nothing to cap: after CAP_TIMEOUT the queued
        requests go out and their answers are matched to them, not to cap.
        """
        wire = Wire()
        wire.proto.send_line("login alice")
        wire.clock.advance(CAP_TIMEOUT - 0.01)
        self.assertEqual(wire.transport.value(), b"")
        wire.clock.advance(0.02)
        self.assertEqual(wire.sent(), [{"request": "login", "content": "alice"}])
        wire.receive(response("error", "Username taken"))
        self.assertEqual(wire.shown(), [response("error", "Username taken")])
        self.assertEqual([r[0] for r in wire.replies], ["login"])

    def test_lines_waiting_for_cap_not_sent(self) -> None:
        """
        Lines typed while the answer to cap is awaited wait unwritten; if
        the connection ends then, the user is told they were not sent.
        """
        wire = Wire()
        wire.proto.send_line("login alice")
        wire.proto.send_line("/me waves")
        wire.clock.advance(CAP_TIMEOUT / 2)
        wire.proto.connectionLost(Failure(ierror.ConnectionLost()))
        self.assertEqual(wire.transport.value(), b"")
        self.assertEqual(
            wire.shown(),
            [
                ("notice", "Not sent before the connection ended: login alice"),
                ("notice", "Not sent before the connection ended: /me waves"),
            ],
        )

    def test_closed_on_cap_ends_for_good(self) -> None:
        """
        A server that closes the connection on the opening cap, before
        answering it, would do so on every new connection: the ending is
        final (no reconnecting in a loop) and says to try
        --no-extensions. Closed after the cap's answer, it is not.
        """
        wire = Wire()
        wire.proto.connectionLost(Failure(ierror.ConnectionDone()))
        answered = Wire()
        answered.receive(response("error", "Unknown request cap"))
        answered.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(
            [(e.reason, e.final) for e in wire.endings + answered.endings],
            [(CLOSED_ON_CAP, True), ("the server closed the connection", False)],
        )
        self.assertIn("--no-extensions", CLOSED_ON_CAP)

    def test_server_full_is_shown(self) -> None:
        """
        An error the server sends on its own before it reads cap, and then
        closes (our server's "Server full"), is shown after all, and the
        line still waiting its turn is named as not sent.
        """
        wire = Wire()
        wire.proto.send_line("login x")
        full = response("error", "Server full")
        wire.receive(full)
        self.assertEqual(wire.shown(), [])
        wire.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(
            wire.shown(), [full, ("notice", "Not sent before the connection ended: login x")]
        )
        self.assertEqual(wire.endings[0].reason, "the server closed the connection")

    def test_refusal_then_quit_not_shown(self) -> None:
        """
        The refusal stays hidden when more follows, or when the client
        itself closes.
        """
        wire = Wire()
        wire.receive(response("error", "Unknown request"))
        wire.proto.close()
        wire.proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual(wire.shown(), [])

    def test_nothing_asked(self) -> None:
        """
        With no extensions wanted (--no-extensions) no cap is written.
        """
        wire = Wire(wanted=())
        self.assertEqual(wire.opening, b"")
        wire.proto.send_line("names")
        self.assertEqual(wire.sent(), [{"request": "names", "content": None}])

    def test_cap_typed_is_shown(self) -> None:
        """
        A cap the user types is an ordinary request: its answer is shown,
        and the client follows what it grants.
        """
        wire = Wire()
        wire.receive(GRANT)
        wire.proto.send_line("cap private")
        wire.sent()
        answer = ext("info", "Extensions on: private", caps=["private"])
        wire.receive(answer)
        self.assertEqual(wire.shown(), [answer])
        self.assertEqual(wire.rooms.extensions, {"private"})

    def test_granted(self) -> None:
        """
        Only an info with a caps list grants, and only names the client
        knows.
        """
        self.assertEqual(granted(GRANT), frozenset(EXTENSIONS))
        self.assertEqual(granted(ext("info", "x", caps=["rooms", "moderation", 3])), {"rooms"})
        for value in [
            response("info", "Extensions on: rooms"),
            ext("error", "no", caps=["rooms"]),
            ext("info", "x", caps="rooms"),
            "cap",
        ]:
            self.assertEqual(granted(value), frozenset(), value)


class AnswerTests(TestCase):
    """
    Which response answers which request, with the extensions' requests.
    """

    def test_join_and_history_requests(self) -> None:
        """
        The history after an accepted login and after the join of a new
        room answers nothing, even with a history request waiting; that
        request is answered by the history after it; a switch (join of a
        room already joined) sends no history.
        """
        wire = Wire()
        wire.receive(GRANT)
        for line in ["login alice", "history 5", "join dev", "history 3", "join lobby"]:
            wire.proto.send_line(line)
        wire.sent()
        older = ext("history", [json.dumps(response("message", "x", "bob"))], room="lobby")
        wire.receive(response("info", "Login successful"), ext("history", [], room="lobby"))
        self.assertEqual([r[0] for r in wire.replies], ["login"])
        wire.receive(older)
        wire.receive(ext("info", "Joined dev", room="dev"), ext("history", [], room="dev"))
        self.assertEqual([r[0] for r in wire.replies], ["login", "history", "join"])
        wire.receive(ext("info", "No older messages", room="dev"))
        wire.receive(ext("info", "lobby is now your current room", room="lobby"))
        self.assertEqual(wire.proto.unanswered, 0)
        wire.proto.send_line("history")
        wire.sent()
        wire.receive(older)
        self.assertEqual([r[0] for r in wire.replies][-3:], ["history", "join", "history"])
        self.assertEqual(wire.proto.unanswered, 0)

    def test_pm(self) -> None:
        """
        pm with a text is answered by the user's own echo (not by another's
        private message); pm with only a user by the private history.
        """
        wire = Wire()
        login_and_join(wire)
        wire.proto.send_line("pm bob hello")
        wire.proto.send_line("pm bob")
        wire.sent()
        wire.receive(ext("message", "psst", "carol", to="alice"))
        self.assertEqual(wire.proto.unanswered, 2)
        wire.receive(ext("message", "hello", "alice", to="bob"))
        self.assertEqual(wire.proto.unanswered, 1)
        wire.receive(ext("history", [], **{"with": "bob"}))
        self.assertEqual(wire.proto.unanswered, 0)
        self.assertEqual([r[:2] for r in wire.replies][-2:], [("pm", "bob hello"), ("pm", "bob")])

    def test_presence_answers_nothing(self) -> None:
        """
        A presence response is not an answer; an arrival teaches the name
        for completion.
        """
        wire = Wire()
        login_and_join(wire)
        wire.proto.send_line("names")
        wire.sent()
        wire.receive(ext("presence", "joined", "carol", room="dev"))
        self.assertEqual(wire.proto.unanswered, 1)
        self.assertIn("carol", wire.proto.names)

    def test_presence_toggle(self) -> None:
        """
        /presence off asks again without presence, /presence on with it;
        their answers are not shown.
        """
        clock = Clock()
        rooms = RoomState()
        session = ChatSession(None, RecordingView(), clock, rooms=rooms)
        wire = Wire(rooms=rooms)
        session.protocol = wire.proto
        wire.receive(GRANT)
        self.assertEqual(session.set_presence(False), "Presence lines off.")
        self.assertEqual(wire.sent(), [{"request": "cap", "content": "rooms private"}])
        wire.receive(ext("info", "Extensions on: private, rooms", caps=["private", "rooms"]))
        self.assertEqual(rooms.extensions, {"private", "rooms"})
        session.set_presence(True)
        self.assertEqual(wire.sent(), [{"request": "cap", "content": "rooms private presence"}])
        self.assertEqual(wire.shown(), [])

    def test_presence_on_refused_server(self) -> None:
        """
        Against a server that granted nothing, /presence on says it will
        see none and sends nothing.
        """
        rooms = RoomState(["rooms"])
        session = ChatSession(None, RecordingView(), Clock(), rooms=rooms)
        wire = Wire(rooms=rooms)
        session.protocol = wire.proto
        wire.receive(response("error", "Unknown request"))
        self.assertIn("does not send them", session.set_presence(True))
        self.assertEqual(wire.sent(), [])


class RoomStateTests(TestCase):
    """
    The rooms followed from the answers' extension keys.
    """

    def test_follow_answers(self) -> None:
        """
        Login puts the user in the lobby; join adds a room (a switch does
        not); leave of a named room or of the current one removes it; rooms
        and names give the current room, rooms the list and the rooms
        joined.
        """
        wire = Wire()
        login_and_join(wire)
        rooms = wire.rooms
        self.assertEqual((rooms.joined, rooms.current), (["lobby", "dev"], "dev"))
        for line, answer in [
            ("join Ops", ext("info", "Joined ops", room="ops")),
            ("join lobby", ext("info", "lobby is now your current room", room="lobby")),
            ("leave DEV", ext("info", "Left dev; your current room is lobby", room="lobby")),
            ("leave", ext("info", "Left lobby; your current room is ops", room="ops")),
        ]:
            wire.proto.send_line(line)
            wire.sent()
            wire.receive(answer)
        self.assertEqual((rooms.joined, rooms.current), (["ops"], "ops"))
        wire.proto.send_line("rooms")
        wire.sent()
        wire.receive(
            ext(
                "info",
                "Rooms: lobby (3), ops (1), x (1)",
                room="ops",
                rooms={"lobby": 3, "ops": 1, "X": 1},
                joined=["ops", "x"],
            )
        )
        self.assertEqual(
            (rooms.joined, rooms.listed), (["ops", "x"], {"lobby": 3, "ops": 1, "x": 1})
        )
        self.assertEqual(rooms.names(), ["lobby", "ops", "x"])
        wire.proto.send_line("leave ops")
        wire.sent()
        wire.receive(ext("error", "You are not in ops"))
        self.assertEqual(rooms.joined, ["ops", "x"])
        wire.proto.send_line("leave x")
        wire.proto.send_line("leave ops")
        wire.sent()
        wire.receive(ext("info", "Left x; your current room is ops", room="ops"))
        wire.receive(ext("info", "Left ops; you are in no room now", room=None))
        self.assertEqual((rooms.joined, rooms.current, rooms.prompt()), ([], None, "(no room)> "))

    def test_keys_only(self) -> None:
        """
        Without the rooms extension (or without the room key) replies that
        look like room replies change nothing.
        """
        rooms = RoomState()
        rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        self.assertEqual(rooms.joined, [])
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("join", "dev", response("info", "Joined dev"))
        self.assertEqual(rooms.joined, [])

    def test_labels_prompt_switch(self) -> None:
        """
        A line shows its room unless the user is in that room alone; the
        prompt names the current room once logged in; the next room wraps
        round in join order.
        """
        rooms = RoomState()
        rooms.set_extensions(frozenset(EXTENSIONS))
        self.assertIsNone(rooms.prompt())
        rooms.answered("login", "alice", response("info", "ok"))
        self.assertIsNone(rooms.prompt())
        self.assertFalse(rooms.labelled("lobby"))
        self.assertTrue(rooms.labelled("dev"))
        self.assertIsNone(rooms.next_room())
        rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        rooms.answered("join", "ops", ext("info", "Joined ops", room="ops"))
        self.assertTrue(rooms.labelled("lobby"))
        self.assertEqual((rooms.next_room(), rooms.prompt()), ("lobby", "ops> "))
        rooms.current = "lobby"
        self.assertEqual((rooms.next_room(), rooms.prompt()), ("dev", "lobby> "))

    def test_rejoin(self) -> None:
        """
        After logging in again (in the lobby only) the rooms are joined
        again in order, the lobby left if it had been, and the current room
        made current again.
        """
        self.assertEqual(rejoin_requests(["lobby"], "lobby"), [])
        self.assertEqual(rejoin_requests(["lobby", "dev"], "dev"), [("join", "dev")])
        self.assertEqual(
            rejoin_requests(["lobby", "dev", "ops"], "lobby"),
            [("join", "dev"), ("join", "ops"), ("join", "lobby")],
        )
        self.assertEqual(rejoin_requests(["dev"], "dev"), [("join", "dev"), ("leave", "lobby")])
        self.assertEqual(rejoin_requests([], None), [])

    def test_wanted(self) -> None:
        """
        What cap asks for follows the presence setting.
        """
        rooms = RoomState()
        self.assertEqual(rooms.cap_content(), "rooms private presence")
        rooms.set_presence(False)
        self.assertEqual((rooms.cap_content(), rooms.presence_shown), ("rooms private", False))
        self.assertEqual(RoomState(["presence", "rooms"]).cap_content(), "rooms presence")


class DisplayTests(TestCase):
    """
    Lines with rooms, private messages and presence.
    """

    def renderer(self, rooms: RoomState, me: str = "alice") -> Renderer:
        return Renderer(me=lambda: me, rooms=rooms)

    def text(self, renderer: Renderer, value: Any) -> List[str]:
        stamp = renderer.time(TS)
        return [line.replace(stamp + " ", "") for line in renderer.render(value)[0]]

    def test_room_labels(self) -> None:
        """
        Messages and histories show their room only while the user is in
        more than one room; replies never do.
        """
        wire = Wire()
        wire.receive(GRANT)
        wire.proto.send_line("login alice")
        wire.sent()
        wire.receive(response("info", "Login successful"))
        r = self.renderer(wire.rooms)
        hi = ext("message", "hi", "bob", room="lobby")
        self.assertEqual(self.text(r, hi), ["<bob> hi"])
        wire.rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        self.assertEqual(self.text(r, hi), ["#lobby <bob> hi"])
        item = json.dumps(response("message", "old", "carol"))
        self.assertEqual(
            self.text(r, ext("history", [item], room="dev")), ["[history] #dev <carol> old"]
        )
        self.assertEqual(self.text(r, ext("history", [], room="dev")), ["[history] #dev (empty)"])
        self.assertEqual(self.text(r, ext("info", "Joined dev", room="dev")), ["[info] Joined dev"])
        self.assertEqual(
            self.text(r, ext("message", "/me waves", "bob", room="dev")), ["#dev * bob waves"]
        )

    def test_private(self) -> None:
        """
        A private message to the user is labelled [private] and stands out;
        the user's own shows its recipient and does not; a private history
        names the other user.
        """
        rooms = RoomState()
        r = self.renderer(rooms)
        incoming = ext("message", "psst", "bob", to="alice")
        own = ext("message", "hi", "alice", to="bob")
        self.assertEqual(self.text(r, incoming), ["[private] <bob> psst"])
        self.assertTrue(r.render(incoming)[1])
        self.assertEqual(self.text(r, own), ["[private to bob] <alice> hi"])
        self.assertFalse(r.render(own)[1])
        history = ext("history", [json.dumps(own), json.dumps(incoming)], **{"with": "bob"})
        self.assertEqual(
            self.text(r, history),
            ["[history] [private to bob] <alice> hi", "[history] [private] <bob> psst"],
        )
        self.assertFalse(r.render(history)[1])
        # Items as in any history (no "to"): labelled from the "with" key.
        bare = ext(
            "history",
            [response("message", "hi", "alice"), response("message", "yo", "bob")],
            **{"with": "bob"},
        )
        self.assertEqual(
            self.text(r, bare),
            ["[history] [private to bob] <alice> hi", "[history] [private] <bob> yo"],
        )
        self.assertEqual(
            self.text(r, ext("history", [], **{"with": "bob"})),
            ["[history] [private with bob] (empty)"],
        )
        coloured = Renderer(colour=True, me=lambda: "alice", rooms=rooms)
        self.assertIn("\x1b[7mpsst", coloured.render(incoming)[0][0])

    def test_presence(self) -> None:
        """
        Presence is one dim line, arrivals and departures with the reason;
        nothing when the user turned presence off.
        """
        rooms = RoomState()
        r = self.renderer(rooms)
        cases = [
            ("joined", "dev", "--> carol joined dev"),
            ("logged in", "lobby", "--> carol joined lobby (logged in)"),
            ("left", "dev", "<-- carol left dev"),
            ("disconnected", "lobby", "<-- carol left lobby (disconnected)"),
            ("dropped", "lobby", "<-- carol left lobby (dropped)"),
            ("logged out", "dev", "<-- carol left dev (logged out)"),
            ("went\x1b[2J", "dev", "--- carol went^[[2J dev"),
        ]
        for event, room, line in cases:
            self.assertEqual(
                self.text(r, ext("presence", event, "carol", room=room)), [line], event
            )
        dim = Renderer(colour=True, rooms=rooms).render(ext("presence", "left", "c", room="x"))
        self.assertIn("\x1b[2m<-- c left x\x1b[0m", dim[0][0])
        rooms.set_presence(False)
        self.assertEqual(r.render(ext("presence", "joined", "carol", room="dev")), ([], False))
        self.assertEqual(presence_line("", "joined", None), "--> ? joined ?")

    def test_interpret_keys(self) -> None:
        """
        The extension keys reach the entries; a private item of a history
        keeps no room.
        """
        [e] = interpret(ext("message", "hi", "bob", room="Dev", to="alice"))
        self.assertEqual((e.room, e.to), ("dev", "alice"))
        [e] = interpret(ext("message", "hi", "bob", room="no such room!", to=["x"]))
        self.assertEqual((e.room, e.to), (None, None))


class CommandTests(TestCase):
    """
    The extensions' requests as typed, and /presence.
    """

    def test_requests(self) -> None:
        """
        /join, /leave, /rooms and /pm are requests of those words.
        """
        self.assertEqual(parse_input("/join Dev"), ("join", "Dev"))
        self.assertEqual(parse_input("/leave"), ("leave", None))
        self.assertEqual(parse_input("/rooms"), ("rooms", None))
        self.assertEqual(parse_input("/pm bob hi there"), ("pm", "bob hi there"))
        self.assertEqual(parse_input("/pm bob"), ("pm", "bob"))

    def test_presence_command(self) -> None:
        """
        /presence toggles, /presence on|off sets; without the slash it is a
        request.
        """
        self.assertEqual(local_command("/presence off"), "presence")
        self.assertEqual(local_command("/Presence"), "presence")
        self.assertIsNone(local_command("presence off"))
        self.assertEqual(presence_setting("/presence", True), False)
        self.assertEqual(presence_setting("/presence ON", False), True)
        self.assertIsNone(presence_setting("/presence maybe", False))

    def test_options(self) -> None:
        """
        --no-presence and --no-extensions (and the config file's presence
        and extensions) set what is asked for.
        """
        cases = [
            ([], ["rooms", "private", "presence"]),
            (["--no-presence"], ["rooms", "private"]),
            (["--no-extensions"], []),
        ]
        for argv, wanted in cases:
            options = Options(NO_FILES)
            options.parseOptions(argv)
            self.assertEqual(options.extensions(), wanted, argv)


class RoomsClient(FakeClient):
    """
    A L{FakeClient} that also records requests and /presence.
    """

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []

    def send_request(self, word: str, content: Any) -> None:
        self.requests.append((word, content))

    def set_presence(self, on: bool) -> str:
        self.requests.append(("presence", on))
        return f"presence {on}"


class ConsoleTests(TestCase):
    """
    The prompt, Tab and Ctrl-X with rooms, on the in-memory terminal.
    """

    def screen(self) -> Any:
        s = Screen()
        s.client = RoomsClient()
        s.console.client = s.client  # type: ignore[assignment]
        rooms = RoomState()
        s.console.renderer.rooms = rooms
        return s, rooms

    def test_prompt_names_room(self) -> None:
        """
        The prompt is "> " until the user is in a room other than the
        lobby, then the current room's name; the echo of a line keeps it.
        """
        s, rooms = self.screen()
        s.show("x")
        self.assertEqual(s.row(), "> ")
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("login", "alice", response("info", "ok"))
        s.type(b"msg a\r")
        self.assertEqual(s.lines()[-2:], ["> msg a", "> "])
        rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        s.type(b"msg hi\r")
        self.assertEqual(s.lines()[-2:], ["dev> msg hi", "dev> "])

    def test_long_room_name_narrow_terminal(self) -> None:
        """
        On a terminal narrower than the prompt of a long room name, the
        prompt is cut (its end kept) so that the input line still fits one
        row: typing does not wrap it and scroll the lines above away. (The
        screen is read through pyte, which takes the ellipsis.)
        """
        s = Screen(width=20)
        rooms = RoomState()
        s.console.renderer.rooms = rooms
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("login", "alice", response("info", "ok"))
        s.show("before")
        name = "averyveryverylongroomname"
        rooms.answered("join", name, ext("info", "Joined", room=name))
        s.type(b"msg hello")
        screen = pyte.Screen(20, 24)
        pyte.ByteStream(screen).feed(s.raw)
        rows = [row.rstrip() for row in screen.display if row.strip()]
        self.assertEqual(rows, ["before", "\u2026longroomname> llo"])
        self.assertEqual(screen.cursor.x, len(rows[1]))
        s.type(b"\r")
        self.assertEqual(s.client.lines, ["msg hello"])

    def test_tab_rooms_and_words(self) -> None:
        """
        With the extensions Tab offers their request words, and room names
        after join and leave (usernames elsewhere).
        """
        s, rooms = self.screen()
        s.type(b"jo\t")
        self.assertEqual(s.row(), "> jo")
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("login", "alice", response("info", "ok"))
        rooms.listed = {"lobby": 3, "devops": 1, "design": 2}
        s.client.names.add("dave")
        for keys, row in [
            (b"\x15/jo\t", "> /join "),
            (b"dev\t", "> /join devops "),
            (b"\x15leave l\t", "> leave lobby "),
            (b"\x15pm d\t", "> pm dave "),
            (b"\x15p\t", "> pm "),
        ]:
            s.type(keys)
            self.assertEqual(s.row(), row, keys)

    def test_ctrl_x_switches(self) -> None:
        """
        Ctrl-X sends a join of the next room joined (a switch); with one
        room it says there is none.
        """
        s, rooms = self.screen()
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("login", "alice", response("info", "ok"))
        s.type(b"\x18")
        self.assertIn("No other room", s.lines()[-2])
        rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        s.type(b"\x18")
        self.assertEqual(s.client.requests, [("join", "lobby")])

    def test_ctrl_x_while_disconnected(self) -> None:
        """
        Ctrl-X while the connection is down (the rooms are joined again
        only after the reconnect) says so, not that there is no other
        room, and sends nothing.
        """
        s, rooms = self.screen()
        rooms.set_extensions(frozenset(EXTENSIONS))
        rooms.answered("login", "alice", response("info", "ok"))
        rooms.answered("join", "dev", ext("info", "Joined dev", room="dev"))
        rooms.connection_lost()
        s.client.connected = False
        s.type(b"\x18")
        self.assertNotIn("No other room", s.lines()[-2])
        self.assertIn("*** Not connected", s.lines()[-2])
        self.assertEqual(s.client.requests, [])

    def test_presence_command(self) -> None:
        """
        /presence off and on reach the session, and its answer is shown.
        """
        s, rooms = self.screen()
        s.type(b"/presence off\r")
        s.type(b"/presence\r")
        s.type(b"/presence later\r")
        self.assertEqual(s.client.requests, [("presence", False), ("presence", False)])
        self.assertIn("*** Type /presence on or /presence off.", s.lines())
        self.assertEqual(s.client.lines, [])


class InteractiveHistoryTests(TestCase):
    """
    What the interactive front end shows of histories it has partly shown
    before.
    """

    def test_private_history_after_live_messages(self) -> None:
        """
        C{/pm USER} shows the private history whole, even the messages
        that were shown as they arrived (the user asked to see them); the
        history sent again after a reconnect still does not show a message
        twice.
        """
        front = InteractiveFrontEnd(Clock(), Renderer(me=lambda: "bob"), "test")
        front.received(ext("message", "hi bob", "alice", to="bob"))
        front.received(response("message", "hi all", "alice"))
        item = json.dumps(response("message", "hi bob", "alice"))
        front.received(ext("history", [item], **{"with": "alice"}))
        front.received(response("history", [json.dumps(response("message", "hi all", "alice"))]))
        shown = [line.replace(Renderer().time(TS) + " ", "") for line in front.console.scrollback]
        self.assertEqual(
            shown,
            ["[private] <alice> hi bob", "<alice> hi all", "[history] [private] <alice> hi bob"],
        )

    def test_repeated_messages_shown_as_often_as_said(self) -> None:
        """
        A message said three times (the same text, sender and second) is
        shown three times from a first history; after a reconnect, the
        history sent again shows only the one said while away.
        """
        front = InteractiveFrontEnd(Clock(), Renderer(me=lambda: "bob"), "test")
        same = json.dumps(response("message", "same", "alice"))
        front.received(response("history", [same] * 3))
        front.received(response("message", "same", "alice"))
        front.received(response("history", [same] * 5))
        shown = [line.replace(Renderer().time(TS) + " ", "") for line in front.console.scrollback]
        self.assertEqual(
            shown, ["[history] <alice> same"] * 3 + ["<alice> same", "[history] <alice> same"]
        )


class FakeEndpoint:
    """
    Connects each attempt to a new L{StringTransport}.
    """

    def __init__(self) -> None:
        self.connections: List[Any] = []

    def connect(self, factory: Any) -> defer.Deferred:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return defer.succeed(protocol)


class ReconnectTests(TestCase):
    """
    The session after a reconnect: cap again, login again, rooms again.
    """

    def test_close_logs_out_and_waits_a_moment(self) -> None:
        """
        Closing as the client stops writes logout (after a login went out)
        and closes; what it returns fires when the connection has closed,
        or after CLOSE_WAIT if the server never closes it, with no error
        either way.
        """
        for server_closes in (True, False):
            clock = Clock()
            endpoint = FakeEndpoint()
            session = ChatSession(endpoint, RecordingView(), clock)
            self.successResultOf(defer.ensureDeferred(session.start()))
            proto, transport = endpoint.connections[0]
            proto.dataReceived(json.dumps(GRANT).encode() + b"\n")
            session.send_request("login", "alice")
            written(clock, transport)
            done = session.close()
            # (written at once, not after a REQUEST_GAP)
            self.assertEqual(transport.value(), b'{"request":"logout","content":null}\n')
            self.assertTrue(transport.disconnecting)
            if server_closes:
                proto.connectionLost(Failure(ierror.ConnectionDone()))
            else:
                clock.advance(CLOSE_WAIT - 0.01)
                self.assertNoResult(done)
                clock.advance(0.01)
            self.assertIsNone(self.successResultOf(done))

    def test_rooms_joined_again(self) -> None:
        """
        After a drop the new connection asks for the extensions first, logs
        in again, then joins the rooms the user was in and makes the
        current one current again.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        view = RecordingView()
        session = ChatSession(endpoint, view, clock, retry_policy=lambda attempt: 0.5)
        started = defer.ensureDeferred(session.start())
        self.assertEqual(self.successResultOf(started), None)
        proto, transport = endpoint.connections[0]

        def receive(p: Any, *values: Any) -> None:
            for value in values:
                p.dataReceived(json.dumps(value).encode() + b"\n")

        def sent(t: StringTransport) -> List[Any]:
            return written(clock, t)

        receive(proto, GRANT)
        session.send_request("login", "alice")
        session.send_line("join dev")
        session.send_line("join ops")
        session.send_line("join lobby")
        sent(transport)
        receive(
            proto,
            response("info", "Login successful"),
            ext("history", [], room="lobby"),
            ext("info", "Joined dev", room="dev"),
            ext("history", [], room="dev"),
            ext("info", "Joined ops", room="ops"),
            ext("history", [], room="ops"),
            ext("info", "lobby is now your current room", room="lobby"),
        )
        self.assertEqual(session.rooms.joined, ["lobby", "dev", "ops"])
        proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertEqual((session.rooms.joined, session.rooms.extensions), ([], frozenset()))
        clock.advance(0.5)
        proto2, transport2 = endpoint.connections[1]
        self.assertEqual(
            sent(transport2), [{"request": "cap", "content": "rooms private presence"}]
        )
        receive(proto2, GRANT)
        self.assertEqual(sent(transport2), [{"request": "login", "content": "alice"}])
        receive(proto2, response("info", "Login successful"), ext("history", [], room="lobby"))
        self.assertEqual(
            sent(transport2),
            [
                {"request": "join", "content": "dev"},
                {"request": "join", "content": "ops"},
                {"request": "join", "content": "lobby"},
            ],
        )
        self.assertIn(("notice", "Logged in again as alice."), view.values)
        session.quit()


class UnsentLineTests(TestCase):
    """
    Lines the session takes while it has no connection.
    """

    def test_line_after_the_drop_is_named(self) -> None:
        """
        A line given to a session whose connection has ended (plain mode,
        which never reconnects, reads on until it stops) is not sent, and
        the user is told so, as for one that was still waiting its turn.
        """
        clock = Clock()
        endpoint = FakeEndpoint()
        view = RecordingView()
        session = ChatSession(endpoint, view, clock, reconnect=False, rooms=RoomState(()))
        self.successResultOf(defer.ensureDeferred(session.start()))
        proto, transport = endpoint.connections[0]
        proto.connectionLost(Failure(ierror.ConnectionDone()))
        self.assertIsNone(session.send_line("msg late"))
        self.assertIsNone(session.send_line("   "))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(
            view.values, [("notice", "Not sent before the connection ended: msg late")]
        )
        clock.advance(0)


class PlainPresenceTests(TestCase):
    """
    /presence in plain mode.
    """

    def test_plain_presence(self) -> None:
        """
        /presence off reaches the session silently; a bad argument is one
        error line; other lines are sent.
        """
        from chat.client.plain import PlainFrontEnd

        errors: List[str] = []
        front = PlainFrontEnd(None, lambda value: ([], False), 1.0, 1.0, error=errors.append)
        session = RoomsClient()
        session.rooms = RoomState()  # type: ignore[attr-defined]
        front.session = session  # type: ignore[assignment]
        for line in ["/presence off", "/presence perhaps", "names"]:
            front.line_received(line)
        self.assertEqual(session.requests, [("presence", False)])
        self.assertEqual(errors, ["/presence takes on or off"])
        self.assertEqual(session.lines, ["names"])
