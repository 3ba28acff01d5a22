"""
Rooms on a real server: a real C{twistd -n chat} process on a real SQLite
file, clients on real sockets. A database from before rooms opens with its
history in the lobby; rooms and private conversations outlive a restart;
and standard clients, stream and legacy, see only the standard while others
use every extension.
"""

import os

from twisted.trial.unittest import TestCase

from tests.support import ServerProcess, SocketClient
from tests.test_storage import v1_database

STANDARD_KEYS = ["timestamp", "sender", "response", "content"]


class RoomsProcessTests(TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.database = os.path.join(self.directory, "chat.db")

    def server(self):
        server = ServerProcess(self.directory, f"--database={self.database}").start()
        self.addCleanup(server.kill)
        return server

    def client(self, server, newline=True):
        client = SocketClient(server.port, newline=newline)
        self.addCleanup(client.close)
        return client

    def test_database_from_before_rooms(self):
        """
        A database made before rooms existed (the first release's schema)
        opens with every message in the lobby: a login gets them as its
        history, and no other room has any.
        """
        rows = v1_database(self.database, 30)
        server = self.server()
        alice = self.client(server)
        info, history = alice.login("alice")
        self.assertEqual(history["response"], "history")
        self.assertEqual(
            [m["content"] for m in alice.history()], [content for _, _, _, content in rows]
        )
        alice.send("join", "dev")
        joined, dev = alice.read(2)
        self.assertEqual((joined["content"], dev["content"]), ("Joined dev", []))

    def test_rooms_and_conversations_outlive_a_restart(self):
        """
        A room's messages and a private conversation are stored: after a
        restart, joining the room shows its history and pm <user> the
        conversation; the lobby's history has neither.
        """
        server = self.server()
        alice, bob = self.client(server), self.client(server)
        alice.login("alice")
        bob.login("bob")
        alice.send("join", "dev")
        alice.read(2)
        alice.send("msg", "in dev")
        alice.send("pm", "bob just for you")
        alice.read(2)
        bob.read_until(lambda: len(bob.of("message")) >= 1)
        server.stop()  # (twistd exits by the signal, after a clean shutdown)

        server = self.server()
        carol = self.client(server)
        carol.login("carol")
        self.assertEqual(carol.history(), [])
        carol.send("join", "DEV")
        _, dev = carol.read(2)
        self.assertEqual([m["content"] for m in carol.history()], ["in dev"])
        bob = self.client(server)
        bob.login("bob")
        bob.send("pm", "alice")
        [conversation] = bob.read()
        self.assertEqual(conversation["response"], "history")
        self.assertEqual(len(conversation["content"]), 1)
        self.assertIn("just for you", conversation["content"][0])

    def test_standard_clients_in_a_busy_server(self):
        """
        While others join, leave, chat in rooms, send private messages to
        them and ask for every extension, a stream and a legacy client that
        send only standard requests get only the four response words with
        the four keys, their private messages as marked messages, and no
        message of a room they are not in.
        """
        server = self.server()
        stream = self.client(server)
        legacy = self.client(server, newline=False)
        stream.login("std")
        legacy.login("old")
        others = [self.client(server) for _ in range(3)]
        for i, other in enumerate(others):
            other.send("cap", "rooms private presence")
            other.read()
            other.login(f"user{i}")
        for i, other in enumerate(others):
            other.send("join", f"room{i}")
            other.send("msg", f"room message {i}")
            other.send("pm", f"std private {i}")
            other.send("pm", f"old private {i}")
            other.send("join", "lobby")
            other.send("msg", f"lobby message {i}")
            other.send("leave", f"room{i}")
        others[0].send("logout")
        # (read first: closing a socket with unread data resets it, and the
        # server may then never read the requests)
        others[1].read_until(lambda: "Left room1" in str(others[1].responses))
        others[1].close()
        for client in (stream, legacy):
            client.send("names")
            client.send("msg", "done")
        for client in (stream, legacy):
            client.read_until(
                lambda c=client: (
                    any(m["content"] == "done" for m in c.messages())
                    and len([m for m in c.messages() if "private" in m["content"]]) >= 3
                    and len(c.of("info")) >= 2
                )
            )
            for response in client.responses:
                self.assertEqual(list(response), STANDARD_KEYS)
                self.assertIn(response["response"], ("error", "info", "message", "history"))
            contents = [m["content"] for m in client.messages()]
            self.assertEqual(
                sorted(c for c in contents if "private" in c),
                [f"(private) private {i}" for i in range(3)],
            )
            self.assertFalse([c for c in contents if c.startswith("room message")])
            self.assertEqual(
                sorted(c for c in contents if c.startswith("lobby message")),
                [f"lobby message {i}" for i in range(3)],
            )
