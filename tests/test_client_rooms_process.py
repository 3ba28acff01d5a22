"""
The terminal client with rooms, private messages and presence (issue 10)
as a real C{python -m chat.client} process against a real C{twistd -n chat}
server process: in plain mode, with C{--json}, and interactive in a
pseudo-terminal. Another user, bob, is a L{ChatClientProtocol} in this
process that asks for every extension.

Everything listens on 127.0.0.1 port 0. Waiting is for conditions (a line
on the screen, a response, a process ending), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import TestCase

from chat.client.connection import ChatClientProtocol
from chat.client.rooms import RoomState
from tests.test_client import RecordingView
from tests.test_client_process import run_client, start_server, wait_for
from tests.test_client_pty import PtyTestCase

_TIME = re.compile(r"^\d\d:\d\d:\d\d ")


class Peer:
    """
    Another user on the server, with every extension: what it receives.
    """

    def __init__(self, test: TestCase, port: int) -> None:
        self.test = test
        self.port = port
        self.view = RecordingView()
        self.proto = ChatClientProtocol(self.view, reactor, rooms=RoomState())

    async def connect(self, name: str) -> "Peer":
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), self.proto)
        self.test.addCleanup(lambda: self.proto.transport.abortConnection())
        self.proto.send_line(f"login {name}")
        await self.settled()
        return self

    async def settled(self) -> None:
        """
        Wait until every request sent is answered.
        """
        await wait_for(
            lambda: not self.proto._queue and self.proto.unanswered == 0, "the peer's answers"
        )

    async def do(self, *lines: str) -> None:
        for line in lines:
            self.proto.send_line(line)
        await self.settled()

    def got(self, word: str) -> List[Any]:
        return [v for v in self.view.values if isinstance(v, dict) and v.get("response") == word]


def text(lines: List[str]) -> List[str]:
    return [_TIME.sub("", line) for line in lines]


class PlainRoomsTests(TestCase):
    """
    Plain mode and C{--json} with rooms against the real server.
    """

    SCRIPT = (
        b"login alice\n"
        b"join dev\n"
        b"msg hello dev\n"
        b"rooms\n"
        b"/join lobby\n"
        b"msg hello lobby\n"
        b"/pm bob psst\n"
        b"/pm bob\n"
        b"/leave dev\n"
        b"msg back to one room\n"
        b"logout\n"
    )

    async def test_plain_session(self) -> None:
        """
        A scripted session: the room of each line shows while alice is in
        two rooms and not before or after; the switch, the private message
        and the private history are labelled; the cap's answer is not
        shown; bob got the presence and the private message.
        """
        port, _ = await start_server(self)
        bob = await Peer(self, port).connect("bob")
        await bob.do("join dev")
        client = await run_client(self, ["--port", str(port)], self.SCRIPT)
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.err, b"")
        lines = text(client.lines)
        self.assertTrue(lines[0].startswith("[info] Login successful"), lines)
        self.assertEqual(
            lines[1:],
            [
                "[history] (empty)",
                "[info] Joined dev",
                "[history] #dev (empty)",
                "#dev <alice> hello dev",
                "[info] Rooms: lobby (2), dev (2)",
                "[info] lobby is now your current room",
                "#lobby <alice> hello lobby",
                "[private to bob] <alice> psst",
                "[history] [private to bob] <alice> psst",
                "[info] Left dev; your current room is lobby",
                "<alice> back to one room",
                lines[-1],
            ],
        )
        self.assertTrue(lines[-1].startswith("[info] "), lines)
        await wait_for(lambda: len(bob.got("presence")) >= 4, "bob's presence lines")
        self.assertEqual(
            [(p["sender"], p["content"], p["room"]) for p in bob.got("presence")],
            [
                ("alice", "logged in", "lobby"),
                ("alice", "joined", "dev"),
                ("alice", "left", "dev"),
                ("alice", "logged out", "lobby"),
            ],
        )
        [psst] = [m for m in bob.got("message") if m["content"] == "psst"]
        self.assertEqual((psst["sender"], psst["to"]), ("alice", "bob"))

    async def test_json(self) -> None:
        """
        --json prints the responses as received, with their extension keys,
        and never the answer to the client's own cap.
        """
        port, _ = await start_server(self)
        await Peer(self, port).connect("bob")
        client = await run_client(self, ["--json", "--port", str(port)], self.SCRIPT)
        self.assertEqual(client.code, 0, client.err)
        values = [json.loads(line) for line in client.lines]
        self.assertFalse([v for v in values if "caps" in v], values)
        self.assertEqual(list(values[0])[:4], ["timestamp", "sender", "response", "content"])
        [hello] = [v for v in values if v.get("content") == "hello dev"]
        self.assertEqual((hello["response"], hello["room"]), ("message", "dev"))
        [psst] = [v for v in values if v["response"] == "message" and v.get("to")]
        self.assertEqual((psst["sender"], psst["to"], psst["content"]), ("alice", "bob", "psst"))
        [rooms] = [v for v in values if "rooms" in v]
        self.assertEqual(
            (rooms["rooms"], rooms["joined"]), ({"lobby": 2, "dev": 1}, ["lobby", "dev"])
        )
        [private] = [v for v in values if "with" in v]
        self.assertEqual(private["response"], "history")

    async def test_no_extensions(self) -> None:
        """
        --no-extensions: no cap, and against the server with rooms the
        client is a standard client: the private message and the lines of
        another room come as standard messages.
        """
        port, _ = await start_server(self)
        await Peer(self, port).connect("bob")
        client = await run_client(
            self, ["--json", "--no-extensions", "--port", str(port)], self.SCRIPT
        )
        self.assertEqual(client.code, 0, client.err)
        values = [json.loads(line) for line in client.lines]
        for value in values:
            self.assertEqual(list(value), ["timestamp", "sender", "response", "content"], value)
        self.assertIn("(private to bob) psst", [v["content"] for v in values])


class InteractiveRoomsTests(PtyTestCase):
    """
    Interactive mode with rooms against the real server, in a
    pseudo-terminal.
    """

    async def test_rooms_session(self) -> None:
        """
        The prompt names the current room once alice is in two; lines of
        rooms are labelled; Tab completes a room name; /join of a room she
        is in and Ctrl-X switch; a private message is labelled and rings
        the bell; presence lines come and go with /presence; leaving the
        last other room gives the usual prompt back.
        """
        port, _ = await start_server(self)
        client, screen, slave = self.start(port, args=["--name", "alice", "--bell"])
        await wait_for(lambda: "Login successful" in screen.text(), "the login")
        self.assertEqual(screen.rows()[-1], ">")
        bob = await Peer(self, port).connect("bob")
        await wait_for(lambda: "--> bob joined lobby (logged in)" in screen.text(), "presence")

        os.write(screen.fd, b"/join dev\r")
        await wait_for(lambda: screen.rows()[-1] == "dev>", "the prompt naming dev")
        await bob.do("join dev", "msg hi in dev")
        await wait_for(lambda: "#dev <bob> hi in dev" in screen.text(), "bob's line in dev")
        self.assertIn("--> bob joined dev", screen.text())

        os.write(screen.fd, b"/join lo\t")
        await wait_for(lambda: screen.rows()[-1] == "dev> /join lobby", "the completion")
        os.write(screen.fd, b"\r")
        await wait_for(lambda: screen.rows()[-1] == "lobby>", "the switch")
        self.assertIn("lobby is now your current room", screen.text())
        os.write(screen.fd, b"\x18")
        await wait_for(lambda: screen.rows()[-1] == "dev>", "Ctrl-X")

        self.assertNotIn(b"\x07", screen.raw)
        await bob.do("pm alice a secret")
        await wait_for(lambda: "[private] <bob> a secret" in screen.text(), "the private line")
        self.assertIn(b"\x07", screen.raw)

        os.write(screen.fd, b"/presence off\r")
        await wait_for(lambda: "Presence lines off." in screen.text(), "presence off")
        await bob.do("leave dev", "msg sync one")
        await wait_for(lambda: "#lobby <bob> sync one" in screen.text(), "the sync line")
        self.assertNotIn("<-- bob left dev", screen.text())
        os.write(screen.fd, b"/presence on\r")
        await wait_for(lambda: "Presence lines on" in screen.text(), "presence on")
        await bob.do("join dev")
        await wait_for(lambda: screen.text().count("--> bob joined dev") == 2, "presence again")

        os.write(screen.fd, b"/leave dev\r")
        await wait_for(lambda: "Left dev" in screen.text(), "the leave")
        await wait_for(lambda: screen.rows()[-1] == ">", "the usual prompt")
        bob.proto.transport.abortConnection()
        await wait_for(
            lambda: "<-- bob left lobby (disconnected)" in screen.text(), "bob's departure"
        )
        await self.quit_cleanly(client, screen, slave)

    async def test_rooms_after_reconnect(self) -> None:
        """
        The server restarts: the client logs in again and joins its rooms
        again, with the same current room.
        """
        port, server = await start_server(self)
        client, screen, slave = self.start(port, args=["--name", "alice"])
        await wait_for(lambda: "Login successful" in screen.text(), "the login")
        os.write(screen.fd, b"/join dev\r")
        await wait_for(lambda: screen.rows()[-1] == "dev>", "the prompt naming dev")
        os.write(screen.fd, b"/join ops\r")
        await wait_for(lambda: screen.rows()[-1] == "ops>", "the prompt naming ops")
        os.write(screen.fd, b"\x18")
        await wait_for(lambda: screen.rows()[-1] == "lobby>", "Ctrl-X to the lobby")
        server.transport.signalProcess("KILL")
        await server.ended
        await wait_for(lambda: screen.rows()[-1] == ">", "the prompt without rooms")
        await start_server(self, listen=f"tcp:{port}:interface=127.0.0.1")
        await wait_for(lambda: "Logged in again as alice" in screen.text(), "the new login")
        await wait_for(lambda: screen.rows()[-1] == "lobby>", "back in the rooms")
        self.assertEqual(screen.text().count("Joined ops"), 2)
        os.write(screen.fd, b"/rooms\r")
        await wait_for(lambda: "Rooms: lobby (1), dev (1), ops (1)" in screen.text(), "rooms")
        await self.quit_cleanly(client, screen, slave)
