"""
Tests of the shipped in-memory harness (L{chat.testing.harness}): real
clients, ours included, against the real server over iosim.
"""

from typing import Any, List

from twisted.trial.unittest import TestCase
from zope.interface import implementer

from chat.client.connection import ChatClientProtocol, IChatView
from chat.testing import ChatHarness


@implementer(IChatView)
class View:
    def __init__(self) -> None:
        self.values: List[Any] = []
        self.notices: List[str] = []

    def received(self, value: Any) -> None:
        self.values.append(value)

    def notice(self, text: str) -> None:
        self.notices.append(text)


class HarnessTests(TestCase):
    def test_our_client_against_the_server(self):
        """
        The terminal client's protocol logs in, sends a message and logs
        out through the harness, and a bare-JSON recording client sees the
        message, all in memory on the harness's clock.
        """
        harness = ChatHarness()
        watcher = harness.connect(newline=False)
        watcher.send("login", "watcher")
        view = View()
        client = harness.connect(lambda: ChatClientProtocol(view, harness.clock))
        client.send_line("login alice")
        client.send_line("msg hello from the harness")
        harness.settle()
        words = [v["response"] for v in view.values]
        self.assertEqual(words[:3], ["info", "history", "message"])
        self.assertEqual(view.values[2]["content"], "hello from the harness")
        seen = [r for r in watcher.take() if r["response"] == "message"]
        self.assertEqual([r["sender"] for r in seen], ["alice"])
        client.send_line("logout")
        harness.settle()
        self.assertEqual(view.values[-1]["content"], "Logged out")
        self.assertTrue(client.ended.called)
        self.assertEqual(harness.service.usernames(), ["watcher"])
