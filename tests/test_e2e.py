"""
End-to-end tests in memory: several clients and the server connected with
L{twisted.test.iosim}, no sockets, a fake clock.
"""

import json

from twisted.trial.unittest import TestCase

from chat.testing import ChatHarness


class EndToEndTests(TestCase):
    def setUp(self):
        self.harness = ChatHarness()
        self.clock = self.harness.clock
        self.service = self.harness.service
        self.store = self.harness.store

    def connect(self, newline):
        return self.harness.connect(newline=newline)

    def settle(self):
        """
        Move bytes and time until everything sent has arrived.
        """
        self.harness.settle()

    def test_example_session(self):
        """
        The example session of PROTOCOL.md section 7 with a bare-JSON client
        and a newline client.
        """
        c1 = self.connect(newline=False)
        c2 = self.connect(newline=True)
        c1.send("help")
        c1.send("msg", "hi")
        self.settle()
        help_reply, not_logged_in = c1.take()
        self.assertEqual(help_reply["response"], "info")
        self.assertIn("login", help_reply["content"])
        self.assertEqual(not_logged_in["response"], "error")

        c1.send("login", "alice")
        self.settle()
        self.assertEqual([r["response"] for r in c1.take()], ["info", "history"])
        c2.send("login", "alice")
        self.settle()
        self.assertEqual(c2.take()[0]["content"], "Username taken")
        c2.send("login", "bob")
        self.settle()
        self.assertEqual([r["response"] for r in c2.take()], ["info", "history"])

        c1.send("msg", "hello")
        self.settle()
        for client in (c1, c2):
            [message] = client.take()
            self.assertEqual(
                (message["sender"], message["response"], message["content"]),
                ("alice", "message", "hello"),
            )
        c2.send("names")
        self.settle()
        self.assertEqual(c2.take()[0]["content"], "alice, bob")
        c1.send("logout")
        self.settle()
        self.assertEqual(c1.take()[0]["response"], "info")
        self.assertTrue(c1.closed)
        self.assertFalse(c2.closed)

    def test_history_for_late_joiner(self):
        """
        A client joining later sees every earlier message in its history
        (a legacy client's in several responses of at most 1024 bytes).
        """
        writers = [self.connect(newline=bool(i % 2)) for i in range(3)]
        for i, writer in enumerate(writers):
            writer.send("login", f"user{i}")
        self.settle()
        for round_ in range(3):
            for i, writer in enumerate(writers):
                writer.send("msg", f"{round_}-{i}")
            self.settle()
        late = self.connect(newline=False)
        late.send("login", "late")
        self.settle()
        info, *histories = late.take()
        self.assertEqual(info["response"], "info")
        self.assertEqual({h["response"] for h in histories}, {"history"})
        items = [json.loads(item) for h in histories for item in h["content"]]
        self.assertEqual(
            [(i["sender"], i["content"]) for i in items],
            [(f"user{i}", f"{r}-{i}") for r in range(3) for i in range(3)],
        )

    def test_misbehaving_client_does_not_disturb(self):
        """
        One client sending garbage and then too much data is cut off while
        the others carry on chatting.
        """
        alice = self.connect(newline=True)
        bob = self.connect(newline=False)
        mallory = self.connect(newline=False)
        alice.send("login", "alice")
        bob.send("login", "bob")
        self.settle()
        mallory.transport.write(b"\x00\xff{{{]]]" + b'{"request": 12}')
        self.settle()
        self.assertTrue(all(r["response"] == "error" for r in mallory.take()))
        mallory.transport.write(b'{"x":"' + b"A" * 100000)
        alice.send("msg", "still fine")
        self.settle()
        self.assertTrue(mallory.closed)
        self.assertEqual(bob.take()[-1]["content"], "still fine")
        self.assertEqual(alice.take()[-1]["content"], "still fine")
