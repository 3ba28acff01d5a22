"""
Tests for the chat core, L{chat.service}, with fake clients and a fixed
clock: every rule of PROTOCOL.md sections 2 to 5 that the core owns.
"""

import json
import os

from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from chat.core.commands import COMMANDS, help_text
from chat.core.interfaces import IChatClient
from chat.core.limits import Limits
from chat.core.service import MAX_STORING, ChatService
from chat.storage import LOBBY, MemoryStore, Message, SQLiteStore
from chat.storage.testing import ControlledStore, FailingStore
from chat.testing import FakeClient
from chat.wire import DecodeError, Request


class BrokenClient(FakeClient):
    def send(self, event):
        raise OSError("connection reset")


class ServiceTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1700000000)
        self.store = MemoryStore(self.clock)
        self.service = ChatService(self.store, self.clock)

    def connect(self, **kwargs):
        client = FakeClient(**kwargs)
        return self.service.connect(client), client

    def send(self, session, word, content=None):
        session.receive(Request(word, content))
        # Let the batched store flush and the broadcast happen.
        self.clock.advance(0)

    def logged_in(self, name, **kwargs):
        session, client = self.connect(**kwargs)
        self.send(session, "login", name)
        client.take()
        return session, client

    def controlled_store(self):
        """
        Serve from a L{ControlledStore} from now on (its operations wait
        until released), and return it.
        """
        store = ControlledStore(self.clock)
        self.service = ChatService(store, self.clock)
        return store


class RulesTests(ServiceTestsMixin, TestCase):
    def test_fake_client_provides_interface(self):
        """
        The fake used here is a faithful IChatClient.
        """
        verifyObject(IChatClient, FakeClient())

    def test_nothing_before_first_request(self):
        """
        Connecting sends nothing.
        """
        _, client = self.connect()
        self.assertEqual(client.raw, [])

    def test_before_login_only_login_and_help(self):
        """
        Before login, msg, names and logout get an error; help gets info.
        """
        session, client = self.connect()
        for word in ("msg", "names", "logout"):
            self.send(session, word, "x")
            [reply] = client.take()
            self.assertEqual(reply["response"], "error", word)
            self.assertIn("Not logged in", reply["content"])
        self.send(session, "help")
        [reply] = client.take()
        self.assertEqual(reply["response"], "info")
        self.assertFalse(client.disconnected)

    def test_response_shape(self):
        """
        Every response has exactly the four keys, a string timestamp, and
        the server as sender for info, error and history.
        """
        session, client = self.connect()
        self.send(session, "help")
        self.send(session, "names")
        self.send(session, "login", "alice")
        for reply in client.take():
            self.assertEqual(set(reply), {"timestamp", "sender", "response", "content"})
            self.assertIsInstance(reply["timestamp"], str)
            self.assertEqual(reply["sender"], "server")
        self.assertEqual(client.raw, [])

    def test_login_info_then_history(self):
        """
        A successful login gets info saying "Login successful" and then a
        history, even an empty one.
        """
        session, client = self.connect()
        self.send(session, "login", "alice")
        info, history = client.take()
        self.assertEqual(info["response"], "info")
        self.assertIn("Login successful", info["content"])
        self.assertEqual(history["response"], "history")
        self.assertEqual(history["content"], [])

    def test_usernames(self):
        """
        Only ASCII letters and digits are accepted, and not too many.
        """
        session, client = self.connect()
        for bad in ("", "   ", "al ice", "al-ice", "\xe6sa", "\u0661", "a" * 33, None, 5, ["a"]):
            self.send(session, "login", bad)
            [reply] = client.take()
            self.assertEqual(reply["response"], "error", repr(bad))
        self.assertIsNone(session.username)
        self.send(session, "login", "Al1ce" + "x" * 27)
        self.assertEqual(client.take()[0]["response"], "info")

    def test_username_limit_configurable(self):
        """
        The maximum username length comes from the limits, and the error
        says it.
        """
        self.service = ChatService(self.store, self.clock, limits=Limits(max_username_length=4))
        session, client = self.connect()
        self.send(session, "login", "abcde")
        [reply] = client.take()
        self.assertIn("4", reply["content"])

    def test_username_taken(self):
        """
        A name in use (in any letter case) gets an error; once its owner is
        gone it is free again.
        """
        alice, _ = self.logged_in("alice")
        other, client = self.connect()
        for name in ("alice", "ALICE"):
            self.send(other, "login", name)
            [reply] = client.take()
            self.assertEqual(reply, {**reply, "response": "error", "content": "Username taken"})
        alice.lost()
        self.send(other, "login", "alice")
        self.assertEqual(client.take()[0]["response"], "info")

    def test_server_name_reserved(self):
        """
        Nobody can log in as the server's own name, in any letter case, so
        no message can pass for a server notice; the error says why.
        """
        session, client = self.connect()
        for name in ("server", "SERVER", "Server"):
            self.send(session, "login", name)
            [reply] = client.take()
            self.assertEqual(reply["response"], "error", name)
            self.assertIn("reserved", reply["content"])
        self.assertEqual(self.service.usernames(), [])
        self.send(session, "login", "servers")
        self.assertEqual(client.take()[0]["response"], "info")

    def test_line_separators_escaped(self):
        """
        A text with every character a common line splitter breaks lines at
        goes out escaped in every response it is part of (the message, a
        history as strings or as objects, an error naming it), so each
        response is exactly one line for Python's str.splitlines().
        """
        separators = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
        text = "a" + separators + "z"
        for history_format in ("string", "object"):
            self.service = ChatService(MemoryStore(self.clock), self.clock, history_format)
            alice, client = self.logged_in("alice", history_format=history_format)
            self.send(alice, "msg", text)
            self.send(alice, "x" + separators)
            late, late_client = self.connect(history_format=history_format)
            self.send(late, "login", "bob")
            raw = b"".join(client.raw + late_client.raw)
            lines = raw.decode("utf-8").splitlines()
            self.assertEqual(len(lines), raw.count(b"\n"))
            responses = [json.loads(line) for line in lines]
            self.assertEqual(responses[0]["content"], text)
            self.assertEqual(responses[1]["response"], "error")
            item = responses[-1]["content"][0]
            if history_format == "string":
                item = json.loads(item)
            self.assertEqual(item["content"], text)

    def test_login_twice(self):
        """
        A logged-in client cannot log in again under another name.
        """
        session, client = self.logged_in("alice")
        self.send(session, "login", "bob")
        [reply] = client.take()
        self.assertEqual(reply["response"], "error")
        self.assertEqual(self.service.usernames(), ["alice"])

    def test_msg_broadcast_to_all_logged_in(self):
        """
        A msg reaches every logged-in client, the sender included, as a
        message response with the sender's name, and no one else.
        """
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        lurker, c = self.connect()
        self.send(lurker, "help")
        c.take()
        self.send(alice, "msg", "hello")
        for client in (a, b):
            [reply] = client.take()
            self.assertEqual(reply["response"], "message")
            self.assertEqual(reply["sender"], "alice")
            self.assertEqual(reply["content"], "hello")
        self.assertEqual(c.raw, [])

    def test_broadcast_encoded_once(self):
        """
        Every recipient is handed the very same bytes.
        """
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        self.send(alice, "msg", "hi")
        self.assertIs(a.raw[0], b.raw[0])

    def test_msg_content_rules(self):
        """
        Non-string, empty and over-long messages get an error saying why,
        and nothing is broadcast or stored.
        """
        self.service = ChatService(self.store, self.clock, limits=Limits(max_message_length=10))
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        for bad in (None, 5, ["x"], "", "   ", "x" * 11):
            self.send(alice, "msg", bad)
            [reply] = a.take()
            self.assertEqual(reply["response"], "error", repr(bad))
        self.assertIn("10", reply["content"])
        self.assertEqual(b.raw, [])
        self.assertEqual(self.store.messages, [])

    def test_names(self):
        """
        names answers with a string of the logged-in usernames.
        """
        alice, a = self.logged_in("alice")
        self.logged_in("bob")
        self.connect()
        self.send(alice, "names", "None")
        [reply] = a.take()
        self.assertEqual(reply["response"], "info")
        self.assertEqual(reply["content"], "alice, bob")

    def test_help_from_table(self):
        """
        help lists every request in the dispatch table.
        """
        session, client = self.connect()
        self.send(session, "help", "")
        [reply] = client.take()
        self.assertEqual(reply["content"], help_text())
        for word in COMMANDS:
            self.assertIn(word, reply["content"])
        self.assertEqual(
            set(COMMANDS),
            {"login", "logout", "msg", "names", "help", "history"}
            | {"join", "leave", "rooms", "pm", "cap"},
        )

    def test_argumentless_content_ignored(self):
        """
        Argument-less requests work with any content.
        """
        session, client = self.logged_in("alice")
        for content in (None, "", "None", 42, {"x": 1}):
            self.send(session, "names", content)
            self.assertEqual(client.take()[0]["content"], "alice")

    def test_logout(self):
        """
        logout answers info, frees the name and disconnects; later
        broadcasts do not reach the client.
        """
        alice, a = self.logged_in("alice")
        bob, _ = self.logged_in("bob")
        self.send(alice, "logout")
        [reply] = a.take()
        self.assertEqual(reply["response"], "info")
        self.assertTrue(a.disconnected)
        self.assertEqual(self.service.usernames(), ["bob"])
        self.send(bob, "msg", "still there?")
        self.assertEqual(a.raw, [])

    def test_nothing_handled_after_logout(self):
        """
        Requests that waited behind a logout (here behind a message being
        stored) are not handled: the connection is closing, so no one logs
        in on it and nothing it sent after the logout reaches the others.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        for word, content in [("msg", "bye"), ("logout", None), ("login", "eve"), ("msg", "boo")]:
            alice.receive(Request(word, content))
        self.clock.advance(0)
        self.assertEqual([r["content"] for r in a.take()], ["bye", "Logged out"])
        self.assertTrue(a.disconnected)
        self.assertEqual([r["content"] for r in b.take()], ["bye"])
        self.assertEqual(self.service.usernames(), ["bob"])
        self.assertEqual([m.content for m in self.store.messages], ["bye"])

    def test_unknown_request(self):
        """
        An unknown request word gets an error naming it, before and after
        login, and the session carries on.
        """
        session, client = self.connect()
        self.send(session, "dance")
        [reply] = client.take()
        self.assertEqual(reply["response"], "error")
        self.assertIn("dance", reply["content"])
        self.send(session, "login", "alice")
        self.assertEqual(client.take()[0]["response"], "info")

    def test_unknown_request_long(self):
        """
        A long unknown request word is named in its error by its first 40
        characters and an ellipsis: one short error, not the word again.
        """
        session, client = self.connect()
        self.send(session, "x" * 39 + "y" * 20000)
        [reply] = client.take()
        self.assertEqual(
            reply["content"], f"Unknown request '{'x' * 39}y\u2026'; send help for the list"
        )

    def test_decode_errors(self):
        """
        A decode error is answered with its reason; a fatal one disconnects.
        """
        session, client = self.connect()
        session.receive(DecodeError("Malformed JSON"))
        self.assertEqual(client.take()[0]["content"], "Malformed JSON")
        self.assertFalse(client.disconnected)
        session.receive(DecodeError("Too large", fatal=True))
        self.assertEqual(client.take()[0]["response"], "error")
        self.assertTrue(client.disconnected)

    def test_fatal_decode_error_closes_the_session(self):
        """
        A fatal decode error closes the session as logout and the flood
        cut-off do: nothing more is sent to it, and requests that waited
        behind the error are not handled.
        """
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        alice.wait()  # as if a message of hers were being stored
        alice.receive(DecodeError("Request too large", fatal=True))
        alice.receive(Request("msg", "after the error"))
        alice.resume()
        self.clock.advance(0)
        self.assertEqual([r["response"] for r in a.take()], ["error"])
        self.assertTrue(a.disconnected)
        self.assertFalse(alice.connected)
        self.assertEqual(b.take(), [])
        alice.info("late")
        self.assertEqual(a.take(), [])

    def test_vanished_client(self):
        """
        A client that drops without logging out frees its name at once and
        is not in later broadcasts.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        alice.lost()
        self.assertEqual(self.service.usernames(), ["bob"])
        self.send(bob, "msg", "hi")
        self.assertEqual(a.raw, [])
        self.assertEqual(len(b.take()), 1)

    def test_failing_recipient(self):
        """
        A recipient whose delivery raises does not stop the broadcast to
        the others.
        """
        broken = BrokenClient()
        session = self.service.connect(FakeClient())
        self.send(session, "login", "alice")
        bad = self.service.connect(broken)
        bad.client = FakeClient()  # let the login replies through
        self.send(bad, "login", "zed")
        bad.client = broken
        _, bob = self.logged_in("bob")
        self.send(session, "msg", "hi")
        self.assertEqual(bob.take()[0]["content"], "hi")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class HistoryTests(ServiceTestsMixin, TestCase):
    def test_history_on_login(self):
        """
        A new user gets every earlier message in order, each item a JSON
        string of a complete message response.
        """
        alice, _ = self.logged_in("alice")
        for text in ("one", "two", "three"):
            self.send(alice, "msg", text)
        _, client = self.connect()
        self.send(_, "login", "bob")
        history = client.received[1]
        items = [json.loads(item) for item in history["content"]]
        self.assertEqual([i["content"] for i in items], ["one", "two", "three"])
        for item in items:
            self.assertEqual(set(item), {"timestamp", "sender", "response", "content"})
            self.assertEqual(item["response"], "message")
            self.assertEqual(item["sender"], "alice")

    def test_history_as_objects(self):
        """
        With the object format, history items are plain objects.
        """
        self.service = ChatService(self.store, self.clock, history_format="object")
        alice, _ = self.logged_in("alice")
        self.send(alice, "msg", "one")
        session, client = self.connect(history_format="object")
        self.send(session, "login", "bob")
        self.assertEqual(client.received[1]["content"][0]["content"], "one")

    def test_stored_before_broadcast(self):
        """
        A message is in the store by the time anyone receives it, and the
        messages of one reactor turn are stored in one call.
        """
        calls = []
        seen_at_delivery = []

        class RecordingStore(MemoryStore):
            def append(store, messages):
                calls.append(list(messages))
                return super().append(messages)

        self.store = RecordingStore(self.clock)
        self.service = ChatService(self.store, self.clock)
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        a.send = lambda event: seen_at_delivery.append(len(self.store.messages))
        alice.receive(Request("msg", "1"))
        bob.receive(Request("msg", "2"))
        self.assertEqual(self.store.messages, [])
        self.clock.advance(0)
        self.assertEqual([len(c) for c in calls], [2])
        self.assertEqual(seen_at_delivery, [2])

    def test_order_kept_while_storing(self):
        """
        Requests after a msg wait until it is stored and broadcast, so the
        sender sees its message before the answer to its next request.
        """
        alice, a = self.logged_in("alice")
        alice.receive(Request("msg", "hi"))
        alice.receive(Request("names", None))
        self.assertEqual(a.raw, [])
        self.clock.advance(0)
        self.assertEqual([r["response"] for r in a.take()], ["message", "info"])

    def test_pipelined_messages_one_batch(self):
        """
        Valid messages queued behind one being stored join its batch and
        are broadcast in order; an invalid one and what follows it wait, so
        its error still comes after the broadcast of the messages before it.
        """
        calls = []

        class RecordingStore(MemoryStore):
            def append(store, messages):
                calls.append([m.content for m in messages])
                return super().append(messages)

        self.store = RecordingStore(self.clock)
        self.service = ChatService(self.store, self.clock)
        alice, a = self.logged_in("alice")
        for content in ["1", "2", "3", "", "4"]:
            alice.receive(Request("msg", content))
        self.clock.advance(0)
        self.assertEqual(calls, [["1", "2", "3"], ["4"]])
        self.assertEqual(
            [(r["response"], r["content"]) for r in a.take()],
            [
                ("message", "1"),
                ("message", "2"),
                ("message", "3"),
                ("error", "Message is empty"),
                ("message", "4"),
            ],
        )

    def test_store_failure(self):
        """
        When the store fails, the sender gets an error, nobody is shown the
        message, it is not in the history, and the service keeps working.
        """
        self.service = ChatService(FailingStore(self.clock, {"append"}), self.clock)
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        self.send(alice, "msg", "lost?")
        [reply] = a.take()
        self.assertEqual(reply["response"], "error")
        self.assertEqual(b.raw, [])
        self.assertEqual(len(self.service.window), 0)
        self.send(alice, "names")
        self.assertEqual(a.take()[0]["content"], "alice, bob")
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_slow_store_holds_no_one_else(self):
        """
        While the store takes its time with a message, the sender's later
        requests wait (in order), other clients are served at once; the
        store gets one batch at a time (MAX_STORING), the messages sent
        meanwhile gather into one next batch, and broadcasts come in the
        order the store answers.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        carol, c = self.logged_in("carol")
        self.send(alice, "msg", "first")
        self.send(alice, "names")
        self.send(bob, "names")
        self.assertEqual(b.take()[0]["content"], "alice, bob, carol")
        self.assertEqual(a.raw, [])
        self.send(bob, "msg", "second")
        self.send(carol, "msg", "third")
        self.send(carol, "msg", "fourth")
        batches = [[m.content for m in op.args[0]] for op in store.pending]
        self.assertEqual(batches, [["first"]])
        self.assertEqual(MAX_STORING, 1)
        store.release()
        self.clock.advance(0)
        self.assertEqual([r["content"] for r in a.take()], ["first", "alice, bob, carol"])
        batches = [[m.content for m in op.args[0]] for op in store.pending]
        self.assertEqual(batches, [["second", "third", "fourth"]])
        store.release_all()
        self.clock.advance(0)
        self.assertEqual([r["content"] for r in b.take()], ["first", "second", "third", "fourth"])
        self.assertEqual(self.successResultOf(self.service.when_stored()), None)

    def test_load(self):
        """
        The window loaded from the store at start-up is what the next login
        gets: only the last messages, up to the history limit.
        """
        self.store.append(
            [Message(LOBBY, "2026-01-01T00:00:00Z", "carol", f"from before {i}") for i in range(9)]
        )
        self.service = ChatService(self.store, self.clock, history_limit=4)
        self.assertEqual(self.successResultOf(self.service.load()), 4)
        session, client = self.connect()
        self.send(session, "login", "dave")
        items = [json.loads(item) for item in client.received[1]["content"]]
        self.assertEqual([i["content"] for i in items], [f"from before {i}" for i in range(5, 9)])
        self.assertEqual(
            items[0],
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "sender": "carol",
                "response": "message",
                "content": "from before 5",
            },
        )

    def test_window_limit_and_sharing(self):
        """
        A login gets the last messages up to the history limit; logins with
        no message in between share one window and its encoding, and a new
        message makes a new one.
        """
        self.service = ChatService(self.store, self.clock, history_limit=3)
        alice, _ = self.logged_in("alice")
        for i in range(5):
            self.send(alice, "msg", str(i))
        windows = []
        for name in ("bob", "carol"):
            session, client = self.connect()
            self.send(session, "login", name)
            windows.append(client.events[1])
            items = [json.loads(i)["content"] for i in client.received[1]["content"]]
            self.assertEqual(items, ["2", "3", "4"])
        self.assertIs(windows[0].body("string"), windows[1].body("string"))
        self.send(alice, "msg", "5")
        session, client = self.connect()
        self.send(session, "login", "dave")
        self.assertEqual(len(client.events[1].messages), 3)
        self.assertEqual(client.events[1].messages[-1].content, "5")

    def test_page_back_through_history(self):
        """
        The history request pages back from the oldest message the client
        was shown, a given count or the history limit at a time, as history
        responses, until there is nothing older.
        """
        self.service = ChatService(self.store, self.clock, history_limit=3)
        alice, a = self.logged_in("alice")
        for i in range(10):
            self.send(alice, "msg", str(i))
        bob, b = self.logged_in("bob")
        pages = []
        for content in ("2", None, "50", None):
            self.send(bob, "history", content)
            [reply] = b.take()
            if reply["response"] == "history":
                reply = [json.loads(i)["content"] for i in reply["content"]]
            pages.append(reply)
        self.assertEqual(pages[:3], [["5", "6"], ["2", "3", "4"], ["0", "1"]])
        self.assertEqual(pages[3]["content"], "No older messages")
        for bad in ("abc", "0", "-3", ["5"], "\u00b2", "\u0663", "1" * 40):
            self.send(bob, "history", bad)
            self.assertEqual(b.take()[0]["response"], "error", bad)

    def test_page_count_with_separators_around(self):
        """
        A count with an ASCII separator (U+001C to U+001F) around it, which
        str.strip() removes as white space but int() does not accept, is
        taken as the count, as one with spaces around it is: not a
        traceback that drops the connection.
        """
        self.service = ChatService(self.store, self.clock, history_limit=1)
        alice, _ = self.logged_in("alice")
        for i in range(5):
            self.send(alice, "msg", str(i))
        bob, b = self.logged_in("bob")
        pages = []
        for count in ("\x1c2", "1\x1f", " 1 "):
            self.send(bob, "history", count)
            [reply] = b.take()
            pages.append([json.loads(i)["content"] for i in reply["content"]])
        self.assertEqual(pages, [["2", "3"], ["1"], ["0"]])

    def test_page_after_empty_window(self):
        """
        A client that logged in on an empty history and was shown nothing
        from it pages back from the newest message.
        """
        bob, b = self.logged_in("bob")
        self.send(bob, "history")
        self.assertEqual(b.take()[0]["content"], "No older messages")
        alice, _ = self.logged_in("alice")
        for i in range(3):
            self.send(alice, "msg", str(i))
        b.take()
        self.send(bob, "history", "2")
        [reply] = b.take()
        self.assertEqual([json.loads(i)["content"] for i in reply["content"]], ["1", "2"])

    def test_page_with_no_window(self):
        """
        With a history limit of 0 a login gets an empty history, and the
        history request pages back from the newest message stored, as
        after any empty window (and by default 500 at a time).
        """
        self.service = ChatService(self.store, self.clock, history_limit=0)
        alice, _ = self.logged_in("alice")
        for i in range(3):
            self.send(alice, "msg", str(i))
        session, client = self.connect()
        self.send(session, "login", "bob")
        self.assertEqual(client.take()[1]["content"], [])
        for content in ("2", None, None):
            self.send(session, "history", content)
        replies = client.take()
        self.assertEqual([r["response"] for r in replies], ["history", "history", "info"])
        first, second, last = replies
        self.assertEqual([json.loads(i)["content"] for i in first["content"]], ["1", "2"])
        self.assertEqual([json.loads(i)["content"] for i in second["content"]], ["0"])
        self.assertEqual(last["content"], "No older messages")

    def test_page_budget(self):
        """
        A client with a history budget gets only the newest messages of the
        window that fit in it, and its next page starts right before them,
        so nothing is skipped.
        """
        alice, _ = self.logged_in("alice")
        for i in range(20):
            self.send(alice, "msg", f"{i:02} " + "x" * 100)
        session, client = self.connect(history_budget=600)
        self.send(session, "login", "bob")
        first = [json.loads(i)["content"][:2] for i in client.received[1]["content"]]
        self.assertLess(len(first), 20)
        self.assertEqual(first[-1], "19")
        client.take()
        self.send(session, "history")
        older = [json.loads(i)["content"][:2] for i in client.received[0]["content"]]
        self.assertEqual(int(older[-1]) + 1, int(first[0]))

    def test_reload_window_after_prune(self):
        """
        After the store removes old messages, reloading the window makes
        logins see only what is left.
        """
        alice, _ = self.logged_in("alice")
        for i in range(10):
            self.send(alice, "msg", str(i))
        self.assertEqual(self.successResultOf(self.store.prune(keep_last=3)), 7)
        self.service.reload_window()
        session, client = self.connect()
        self.send(session, "login", "bob")
        items = [json.loads(i)["content"] for i in client.received[1]["content"]]
        self.assertEqual(items, ["7", "8", "9"])

    def test_budget_window_shared_until_a_message(self):
        """
        Logins with the same history budget share one cut window while no
        message arrives; the next message makes a new one that holds it.
        """
        alice, _ = self.logged_in("alice")
        for i in range(20):
            self.send(alice, "msg", f"{i:02} " + "x" * 100)
        windows = []
        for name in ("bob", "carol"):
            session, client = self.connect(history_budget=600)
            self.send(session, "login", name)
            windows.append(client.events[1])
        self.assertIs(windows[0].body("string"), windows[1].body("string"))
        self.send(alice, "msg", "20 new")
        session, client = self.connect(history_budget=600)
        self.send(session, "login", "dave")
        self.assertEqual(client.events[1].messages[-1].content, "20 new")

    def test_page_store_failure(self):
        """
        A store that cannot read older history gets the client an error,
        and its next requests are still answered.
        """
        store = FailingStore(self.clock, {"before"})
        self.service = ChatService(store, self.clock)
        alice, a = self.logged_in("alice")
        self.send(alice, "msg", "one")
        a.take()
        self.send(alice, "history")
        self.send(alice, "names")
        self.assertEqual([r["response"] for r in a.take()], ["error", "info"])

    def test_shutdown(self):
        """
        Shutting down stores pending messages, tells logged-in clients and
        disconnects every client.
        """
        alice, a = self.logged_in("alice")
        _, idle = self.connect()
        alice.receive(Request("msg", "last words"))
        done = self.service.shutdown()
        self.assertEqual([m.content for m in self.store.messages], ["last words"])
        self.assertNoResult(done)
        self.assertEqual([r["response"] for r in a.take()], ["message", "info"])
        self.assertTrue(a.disconnected)
        self.assertTrue(idle.disconnected)
        self.assertEqual(idle.raw, [])

    def test_shutdown_answers_requests_not_handled(self):
        """
        Requests received but not handled when the server stops (waiting
        for flood control here) and those that come after are each answered
        with an error, in order, before the going-away info: none is
        dropped unanswered, and none is stored.
        """
        self.service = ChatService(
            self.store, self.clock, limits=Limits(flood_rate=1, flood_burst=3)
        )
        alice, a = self.logged_in("alice")
        for i in range(6):
            alice.receive(Request("msg", str(i)))
        self.service.shutdown()
        alice.receive(Request("msg", "late"))
        self.clock.advance(10)
        stored = [m.content for m in self.store.messages]
        answers = [(r["response"], r["content"]) for r in a.take()]
        not_handled = ("error", "Not handled: the server is shutting down")
        self.assertLess(len(stored), 6)
        self.assertEqual(
            answers,
            [("message", text) for text in stored]
            + [not_handled] * (6 - len(stored))
            + [("info", "Server is shutting down")]
            + [not_handled],
        )


@implementer(IReadDescriptor)
class Pipe:
    """
    A pipe the reactor reads: C{poke()} makes it readable, and the reactor
    calls C{on_read} when it polls, as it would for a client's socket.
    """

    def __init__(self, on_read):
        self.on_read = on_read
        self._read, self._write = os.pipe()
        reactor.addReader(self)

    def poke(self):
        os.write(self._write, b"x")

    def fileno(self):
        return self._read

    def doRead(self):
        os.read(self._read, 64)
        self.on_read()

    def connectionLost(self, reason):
        pass

    def logPrefix(self):
        return "pipe"

    def close(self):
        reactor.removeReader(self)
        os.close(self._read)
        os.close(self._write)


class RepliesToPoke(FakeClient):
    """
    A client that pokes a pipe when it is shown a given message, and fires
    C{done} when it has been shown all the messages it waits for.
    """

    def __init__(self, pipe, poke_on, wait_for):
        super().__init__()
        self.pipe, self.poke_on, self.wait_for = pipe, poke_on, set(wait_for)
        self.done = defer.Deferred()

    def send(self, event):
        super().send(event)
        for m in getattr(event, "messages", ()):
            if m.content == self.poke_on:
                self.pipe.poke()
            self.wait_for.discard(m.content)
        if not self.wait_for and not self.done.called:
            self.done.callback(None)


class ReactorBatchTests(TestCase):
    """
    How messages group into the store's batches on the real reactor, with
    the SQLite store answering from its thread: the order of a reactor's
    turn (thread calls, timed calls, then the poll) decides it, which a
    fake clock does not have.
    """

    @defer.inlineCallbacks
    def test_replies_to_a_broadcast_join_the_waiting_batch(self):
        """
        A message that arrived while a batch was stored and a reply to that
        batch's broadcast (read by the reactor just after it) are stored as
        one batch, not one each.
        """
        store = yield SQLiteStore.open(":memory:", reactor)
        self.addCleanup(store.close)
        batches = []
        append = store.append

        def recording_append(messages):
            batches.append([m.content for m in messages])
            d = append(messages)
            if len(batches) == 1:
                # carol's message arrives while the first batch is stored.
                carol.receive(Request("msg", "meanwhile"))
            return d

        store.append = recording_append
        service = ChatService(store, reactor)
        # bob answers the first message; the reactor reads his answer from
        # the pipe in its next poll.
        pipe = Pipe(lambda: bob.receive(Request("msg", "reply")))
        self.addCleanup(pipe.close)
        alice = service.connect(FakeClient())
        b = RepliesToPoke(pipe, "first", {"first", "meanwhile", "reply"})
        bob = service.connect(b)
        carol = service.connect(FakeClient())
        for session, name in [(alice, "alice"), (bob, "bob"), (carol, "carol")]:
            session.receive(Request("login", name))
        alice.receive(Request("msg", "first"))
        yield b.done.addTimeout(10, reactor)
        self.assertEqual(batches, [["first"], ["meanwhile", "reply"]])
        yield service.when_stored()
