"""
Tests for rooms, private messages, presence and the negotiation of
extensions (docs/protocol.md, section 7): the core's rules with fake
clients and a fixed clock, and the bytes on the wire through the real TCP
protocol in memory (L{chat.testing.ChatHarness}), for stream and legacy
clients, with and without extensions.
"""

import json

from twisted.trial.unittest import TestCase

from chat.core.limits import Limits
from chat.core.rules import private_key
from chat.storage import LOBBY, Message
from chat.storage.testing import FailingStore
from chat.testing import ChatHarness
from chat.wire import DecodeError, Request
from tests.test_service import ServiceTestsMixin

STANDARD_KEYS = ["timestamp", "sender", "response", "content"]
STANDARD_WORDS = {"error", "info", "message", "history"}


def history_contents(reply):
    """
    The texts of the messages of a history response (string items).
    """
    return [json.loads(item)["content"] for item in reply["content"]]


class RoomRulesTests(ServiceTestsMixin, TestCase):
    def test_login_puts_in_lobby(self):
        """
        A login is in the lobby: its messages reach everyone logged in.
        """
        alice, a = self.logged_in("alice")
        self.assertEqual(list(alice.rooms), [LOBBY])
        self.assertIs(alice.room, self.service.lobby)
        _, b = self.logged_in("bob")
        self.send(alice, "msg", "hi")
        self.assertEqual([r["content"] for r in b.take()], ["hi"])

    def test_join_answers_info_then_history(self):
        """
        join answers a standard info, then the room's window as a standard
        history response.
        """
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        info, history = a.take()
        self.assertEqual(list(info), STANDARD_KEYS)
        self.assertEqual((info["response"], info["content"]), ("info", "Joined dev"))
        self.assertEqual(list(history), STANDARD_KEYS)
        self.assertEqual((history["response"], history["content"]), ("history", []))
        self.assertEqual(list(alice.rooms), [LOBBY, "dev"])

    def test_messages_stay_in_their_room(self):
        """
        A msg goes to the members of the sender's current room only.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        _, c = self.logged_in("carol")
        self.send(alice, "join", "dev")
        self.send(bob, "join", "dev")
        a.take(), b.take()
        self.send(alice, "msg", "in dev")
        self.assertEqual([r["content"] for r in a.take()], ["in dev"])
        self.assertEqual([r["content"] for r in b.take()], ["in dev"])
        self.assertEqual(c.take(), [])

    def test_room_names_ignore_case(self):
        """
        Room names are compared and shown in lower case.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(alice, "join", "Dev")
        self.send(bob, "join", "DEV")
        self.assertEqual(a.take()[0]["content"], "Joined dev")
        b.take()
        self.send(bob, "names")
        self.assertEqual(b.take()[0]["content"], "alice, bob")

    def test_join_again_switches(self):
        """
        join of a room one is in makes it current, without a history.
        """
        alice, a = self.logged_in("alice")
        _, c = self.logged_in("carol")
        self.send(alice, "join", "dev")
        a.take()
        self.send(alice, "join", "lobby")
        self.assertEqual(
            [(r["response"], r["content"]) for r in a.take()],
            [("info", "lobby is now your current room")],
        )
        self.send(alice, "msg", "back in the lobby")
        self.assertEqual([r["content"] for r in c.take()], ["back in the lobby"])

    def test_leave_current_and_named(self):
        """
        leave without a name leaves the current room, and the room joined
        before it becomes current; leave with a name leaves that room.
        """
        alice, a = self.logged_in("alice")
        for room in ("dev", "ops"):
            self.send(alice, "join", room)
        a.take()
        self.send(alice, "leave", None)
        self.assertEqual(a.take()[0]["content"], "Left ops; your current room is dev")
        self.send(alice, "leave", "lobby")
        self.assertEqual(a.take()[0]["content"], "Left lobby; your current room is dev")
        self.send(alice, "leave", "lobby")
        self.assertEqual(
            [(r["response"], r["content"]) for r in a.take()], [("error", "You are not in lobby")]
        )
        self.assertEqual(list(alice.rooms), ["dev"])

    def test_left_means_no_more_messages(self):
        """
        Who left a room, or whose connection closed, gets none of its
        messages any more (the room's list of recipients is made again).
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        carol, c = self.logged_in("carol")
        for session in (alice, bob, carol):
            self.send(session, "join", "dev")
        self.send(alice, "msg", "all three")
        self.send(bob, "leave")
        carol.lost()
        a.take(), b.take(), c.take()
        self.send(alice, "msg", "alice alone")
        self.assertEqual([r["content"] for r in a.take()], ["alice alone"])
        self.assertEqual((b.take(), c.take()), ([], []))

    def test_no_room_left(self):
        """
        Out of every room, msg, names and history say to join one.
        """
        alice, a = self.logged_in("alice")
        self.send(alice, "leave")
        self.assertEqual(
            a.take()[0]["content"], "Left lobby; you are in no room now: join one to chat"
        )
        for word in ("msg", "names", "history"):
            self.send(alice, word, "x" if word == "msg" else None)
            [reply] = a.take()
            self.assertEqual(reply["response"], "error", word)
            self.assertIn("join one first", reply["content"])
        self.send(alice, "leave")
        self.assertEqual(a.take()[0]["content"], "You are in no room")

    def test_rooms_lists_counts(self):
        """
        rooms lists the lobby first, then the other rooms by name, with
        how many are in each; a room nobody is in is gone.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(alice, "join", "zoo")
        self.send(alice, "join", "dev")
        self.send(bob, "join", "dev")
        self.send(bob, "join", "tmp")
        self.send(bob, "leave", "tmp")
        a.take()
        self.send(alice, "rooms")
        [reply] = a.take()
        self.assertEqual(list(reply), STANDARD_KEYS)
        self.assertEqual(reply["content"], "Rooms: lobby (2), dev (2), zoo (1)")
        self.assertEqual([r.name for r in self.service.rooms()], [LOBBY, "zoo", "dev"])

    def test_bad_room_names(self):
        """
        A room name follows the username rule; anything else is an error.
        """
        alice, a = self.logged_in("alice")
        for content in (None, "", "  ", "two words", "café", "x" * 33, 7, ["dev"]):
            self.send(alice, "join", content)
            [reply] = a.take()
            self.assertEqual(reply["response"], "error", content)
        self.assertEqual(list(alice.rooms), [LOBBY])

    def test_lobby_with_short_names(self):
        """
        With names shorter than "lobby" (--max-username-length 4), a client
        can still leave the lobby by name and join it again, as the error
        for being in no room tells it to.
        """
        self.service = type(self.service)(
            self.store, self.clock, limits=Limits(max_username_length=4)
        )
        bob, b = self.logged_in("bob")
        self.send(bob, "leave", "lobby")
        self.send(bob, "join", "lobby")
        self.assertEqual(
            [(r["response"], r["content"]) for r in b.take()],
            [
                ("info", "Left lobby; you are in no room now: join one to chat"),
                ("info", "Joined lobby"),
                ("history", []),
            ],
        )
        self.send(bob, "join", "abcde")
        self.assertEqual(b.take()[0]["response"], "error")
        self.assertEqual(list(bob.rooms), [LOBBY])

    def test_room_limits(self):
        """
        A user may be in max_rooms_per_user rooms, and the server holds
        max_rooms rooms (the lobby included).
        """
        self.service = type(self.service)(
            self.store, self.clock, limits=Limits(max_rooms=3, max_rooms_per_user=2)
        )
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(alice, "join", "one")
        a.take()
        self.send(alice, "join", "two")
        self.assertEqual(a.take()[0]["content"], "You are in too many rooms (at most 2)")
        self.send(bob, "join", "two")
        b.take()
        self.send(bob, "leave", "lobby")
        self.send(bob, "join", "three")
        self.assertEqual(b.take()[-1]["content"], "Too many rooms on this server (at most 3)")
        self.send(bob, "join", "one")
        self.assertEqual(b.take()[0]["content"], "Joined one")

    def test_room_history_outlives_the_room(self):
        """
        A room nobody is in is gone, but joining it again shows its window
        read back from the store; the lobby's history is separate.
        """
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        self.send(alice, "msg", "kept")
        self.send(alice, "leave")
        a.take()
        self.assertNotIn("dev", [r.name for r in self.service.rooms()])
        self.send(alice, "join", "dev")
        info, history = a.take()
        self.assertEqual(history_contents(history), ["kept"])
        _, b = self.connect()
        self.send(_, "login", "bob")
        self.assertEqual(history_contents(b.take()[1]), [])

    def test_history_pages_per_room(self):
        """
        history pages back through the current room's messages only.
        """
        self.service = type(self.service)(self.store, self.clock, history_limit=1)
        alice, a = self.logged_in("alice")
        self.send(alice, "msg", "lobby 1")
        self.send(alice, "join", "dev")
        for text in ("dev 1", "dev 2"):
            self.send(alice, "msg", text)
        a.take()
        self.send(alice, "history", 5)
        # (its window at join was empty: the page ends at the newest message)
        self.assertEqual(history_contents(a.take()[0]), ["dev 1", "dev 2"])
        self.send(alice, "join", "lobby")
        a.take()
        self.send(alice, "history", 5)
        self.assertEqual(history_contents(a.take()[0]), ["lobby 1"])

    def test_joining_waits_for_the_window(self):
        """
        Joining a room made anew waits until its window is read; whoever
        joins meanwhile waits for the same read, and requests behind the
        join wait too, in order.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        store.release_all()
        a.take(), b.take()
        self.send(alice, "join", "dev")
        self.send(alice, "names")
        self.send(bob, "join", "dev")
        self.assertEqual((a.take(), b.take()), ([], []))
        self.assertEqual([(op.name, op.args) for op in store.pending], [("recent", ("dev", 500))])
        store.release_all()
        self.clock.advance(0)
        self.assertEqual([r["response"] for r in a.take()], ["info", "history", "info"])
        self.assertEqual([r["response"] for r in b.take()], ["info", "history"])

    def test_msg_behind_a_join_goes_to_the_new_room(self):
        """
        A msg sent right behind a join waits for the join's answer (while
        the new room's window is read) and goes to the new room, not to the
        room that was current when it arrived.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        store.release_all()
        b.take()
        self.send(alice, "join", "dev")
        self.send(alice, "msg", "first words in dev")
        store.release_all()
        self.clock.advance(0)
        store.release_all()
        self.assertEqual(
            [(r["response"], r["content"]) for r in a.take()][0::2],
            [("info", "Joined dev"), ("message", "first words in dev")],
        )
        self.assertEqual(b.take(), [])
        self.assertEqual([m.room for m in store.memory.messages], ["dev"])

    def test_msg_behind_a_page_comes_after_it(self):
        """
        A msg sent right behind a history request is answered after the
        page, in the order asked.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        store.release_all()
        self.send(alice, "msg", "old")
        store.release_all()
        self.clock.advance(0)
        a.take()
        self.send(alice, "history", 5)
        self.send(alice, "msg", "new")
        self.assertEqual([op.name for op in store.pending], ["before"])
        store.release_all()
        self.clock.advance(0)
        store.release_all()
        self.assertEqual([r["response"] for r in a.take()], ["history", "message"])

    def test_gone_while_a_page_is_read(self):
        """
        A client whose connection closes while its history page is read is
        not put back in the room when the page comes (each member's history
        cursor is kept in the room's membership): the others do not see it
        in names, and the room's messages no longer go to it.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        store.release_all()
        self.send(alice, "msg", "old")
        store.release_all()
        self.clock.advance(0)
        a.take(), b.take()
        self.send(alice, "history", 5)
        self.assertEqual([op.name for op in store.pending], ["before"])
        alice.lost()
        store.release_all()
        self.clock.advance(0)
        self.assertEqual(list(self.service.lobby.members), [bob])
        self.send(bob, "names")
        self.assertEqual([r["content"] for r in b.take()], ["bob"])

    def test_window_not_read(self):
        """
        If the store cannot read a new room's window, the joiners get an
        error and the room is not made.
        """
        self.service = type(self.service)(FailingStore(self.clock), self.clock)
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        [reply] = a.take()
        self.assertEqual(reply["response"], "error")
        self.assertIn("could not read the history of dev", reply["content"])
        self.assertEqual(list(alice.rooms), [LOBBY])
        self.assertEqual([r.name for r in self.service.rooms()], [LOBBY])
        self.flushLoggedErrors()

    def test_joiner_gone_before_the_window(self):
        """
        A joiner whose connection closes while the window is read is not
        put in the room, and the room is dropped if nobody else came.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        store.release_all()
        self.send(alice, "join", "dev")
        alice.lost()
        store.release_all()
        self.clock.advance(0)
        self.assertEqual([r.name for r in self.service.rooms()], [LOBBY])

    def test_message_to_a_room_that_emptied(self):
        """
        A message stored after everyone left its room is stored and shown
        to nobody: nothing breaks.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        store.release_all()
        self.send(alice, "join", "dev")
        store.release_all()
        self.clock.advance(0)
        a.take()
        self.send(alice, "msg", "last words")
        self.service.leave(alice, "dev")  # as if it had been waiting already
        store.release_all()
        self.clock.advance(0)
        self.assertEqual([m.content for m in store.memory.messages], ["last words"])
        self.assertEqual(b.take(), [])

    def test_reload_reads_every_room(self):
        """
        Reading the windows again (after retention pruned) reads every room
        in memory, not only the lobby.
        """
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        self.send(alice, "msg", "old")
        self.store.prune(keep_last=0)
        self.service.reload_window()
        self.send(alice, "leave", "dev")
        self.send(alice, "join", "dev")
        a.take()
        self.assertEqual(len(self.service.rooms()[1].window), 0)


class PrivateMessageTests(ServiceTestsMixin, TestCase):
    def test_private_to_standard_clients(self):
        """
        A private message reaches its recipient and its sender only, as
        standard message responses whose text says it is private.
        """
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("Bob")
        _, c = self.logged_in("carol")
        self.send(alice, "pm", "bob see you at 5")
        [to_bob] = b.take()
        [echo] = a.take()
        self.assertEqual(list(to_bob), STANDARD_KEYS)
        self.assertEqual(
            (to_bob["sender"], to_bob["response"], to_bob["content"]),
            ("alice", "message", "(private) see you at 5"),
        )
        self.assertEqual(list(echo), STANDARD_KEYS)
        self.assertEqual(echo["content"], "(private to Bob) see you at 5")
        self.assertEqual(c.take(), [])

    def test_private_with_extension(self):
        """
        With the private extension, a private message keeps its text and
        names its recipient in "to".
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(bob, "cap", "private")
        b.take()
        self.send(alice, "pm", "bob hi\nthere")
        [reply] = b.take()
        self.assertEqual(list(reply), STANDARD_KEYS + ["to"])
        self.assertEqual((reply["content"], reply["to"]), ("hi\nthere", "bob"))
        self.assertEqual(a.take()[0]["content"], "(private to bob) hi\nthere")

    def test_private_is_kept_apart(self):
        """
        A private message is stored under the two users' key, never in a
        room's history, and pm <user> alone shows the conversation.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(alice, "pm", "bob one")
        self.send(bob, "pm", "ALICE two")
        a.take(), b.take()
        self.assertEqual([m.room for m in self.store.messages], [private_key("alice", "bob")] * 2)
        _, c = self.connect()
        self.send(_, "login", "carol")
        self.assertEqual(history_contents(c.take()[1]), [])
        self.send(alice, "pm", "Bob")
        [reply] = a.take()
        self.assertEqual((reply["response"], list(reply)), ("history", STANDARD_KEYS))
        self.assertEqual(history_contents(reply), ["one", "two"])

    def test_conversation_with_extension(self):
        """
        With the private extension, the conversation's history response
        names the other user in "with" (as logged in, or as asked).
        """
        alice, a = self.logged_in("alice")
        self.logged_in("Bob")
        self.send(alice, "cap", ["private"])
        a.take()
        self.send(alice, "pm", "bob")
        self.assertEqual(a.take()[0]["with"], "Bob")
        self.send(alice, "pm", "dave")
        [reply] = a.take()
        self.assertEqual((reply["with"], reply["content"]), ("dave", []))

    def test_private_errors(self):
        """
        A private message to nobody, to oneself, to someone not here, or
        without a text that can be sent, is an error and is not stored.
        """
        alice, a = self.logged_in("alice")
        self.logged_in("bob")
        cases = {
            "": "pm needs a user and a text",
            None: "pm needs a user and a text",
            "ALICE hi": "You cannot send a private message to yourself",
            "dave hi": "dave is not logged in",
            "b@b hi": "No user can be called 'b@b'",
            # The server's own name, which no user may take.
            "Server hi": "No user can be called 'Server'",
            # A long name is named by its first 40 characters.
            "x" * 40 + "y" * 20000 + " hi": f"No user can be called '{'x' * 40}\u2026'",
            "bob ": "Message is empty",
            "bob " + "x" * 1001: "Message too long",
        }
        for content, error in cases.items():
            self.send(alice, "pm", content)
            [reply] = a.take()
            self.assertEqual(reply["response"], "error", content)
            self.assertIn(error, reply["content"])
        self.assertEqual(self.store.messages, [])

    def test_msg_behind_a_private_message_comes_after_it(self):
        """
        A msg sent right behind a pm is shown after it, to the sender and
        to the recipient: requests are answered in the order they were
        sent (a msg may join the batch of a msg, whose broadcast it
        follows, but not that of a pm, which is delivered after the room's
        messages of its batch).
        """
        alice, a = self.logged_in("alice")
        _, b = self.logged_in("bob")
        alice.receive(Request("pm", "bob first"))
        alice.receive(Request("msg", "second"))
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual([r["content"] for r in a.take()], ["(private to bob) first", "second"])
        self.assertEqual([r["content"] for r in b.take()], ["(private) first", "second"])

    def test_recipient_gone_before_stored(self):
        """
        A private message whose recipient logged out or disconnected while
        it was stored is kept in their conversation, and its sender is told
        so in an error, not echoed the message as if it had reached them.
        """
        store = self.controlled_store()
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        carol, c = self.logged_in("carol")
        store.release_all()
        a.take(), b.take(), c.take()
        self.send(alice, "pm", "bob bye")
        self.send(bob, "logout")
        [held] = store.pending  # bob logged out while the pm is stored
        self.assertEqual((held.name, [m.content for m in held.args[0]]), ("append", ["bye"]))
        store.release()
        self.clock.advance(0)
        self.assertEqual(
            [(r["response"], r["content"]) for r in a.take()],
            [
                (
                    "error",
                    "bob left before your private message reached them; "
                    "it is kept in your conversation (pm bob)",
                )
            ],
        )
        self.assertEqual([r["content"] for r in b.take()], ["Logged out"])
        self.send(alice, "pm", "carol bye too")
        carol.lost()
        store.release_all()
        self.clock.advance(0)
        self.assertEqual(
            [r["content"] for r in a.take()],
            [
                "carol left before your private message reached them; "
                "it is kept in your conversation (pm carol)"
            ],
        )
        self.assertEqual(c.take(), [])
        self.assertEqual(
            [(m.room, m.content) for m in store.memory.messages],
            [(private_key("alice", "bob"), "bye"), (private_key("alice", "carol"), "bye too")],
        )


class CapabilityTests(ServiceTestsMixin, TestCase):
    def test_cap_grants_known_names(self):
        """
        cap grants the named extensions the server has, in a string or a
        list, before login too, and answers info with the granted "caps".
        """
        session, client = self.connect()
        for content in ("presence ROOMS nonsense", ["rooms", "presence", "x"], "rooms,presence"):
            self.send(session, "cap", content)
            [reply] = client.take()
            self.assertEqual(reply["response"], "info")
            self.assertEqual(reply["caps"], ["presence", "rooms"])
            self.assertEqual(reply["content"], "Extensions on: presence, rooms")
        self.assertEqual(session.caps, {"rooms", "presence"})

    def test_cap_replaces(self):
        """
        A later cap replaces the set; an empty one turns all off.
        """
        session, client = self.logged_in("alice")
        self.send(session, "cap", "rooms")
        self.send(session, "cap", None)
        self.assertEqual(client.take()[-1]["caps"], [])
        self.send(session, "join", "dev")
        self.assertEqual([list(r) for r in client.take()], [STANDARD_KEYS, STANDARD_KEYS])

    def test_cap_bad_content(self):
        """
        cap with content that names no extensions is an error.
        """
        session, client = self.connect()
        for content in (5, {"rooms": True}, ["rooms", 1]):
            self.send(session, "cap", content)
            self.assertEqual(client.take()[0]["response"], "error")
        self.assertEqual(session.caps, frozenset())

    def test_rooms_keys(self):
        """
        With rooms, messages, history and the answers to room requests
        carry the room.
        """
        alice, a = self.logged_in("alice")
        bob, b = self.logged_in("bob")
        self.send(alice, "cap", "rooms")
        a.take()
        self.send(alice, "join", "dev")
        info, history = a.take()
        self.assertEqual((info["room"], history["room"]), ("dev", "dev"))
        self.send(alice, "msg", "here")
        self.send(bob, "msg", "there")
        self.assertEqual(
            [(r["content"], r["room"]) for r in a.take()], [("here", "dev"), ("there", "lobby")]
        )
        self.assertEqual([list(r) for r in b.take()], [STANDARD_KEYS])
        self.send(alice, "rooms")
        [reply] = a.take()
        self.assertEqual(
            (reply["room"], reply["rooms"], reply["joined"]),
            ("dev", {"lobby": 2, "dev": 1}, ["lobby", "dev"]),
        )
        self.send(alice, "names")
        self.assertEqual(a.take()[0]["room"], "dev")
        self.send(alice, "leave", "dev")
        self.send(alice, "leave", "lobby")
        self.assertEqual([r["room"] for r in a.take()], ["lobby", None])

    def test_joined_is_in_order_of_use(self):
        """
        The rooms answer's "joined" lists the client's rooms in the order
        they were joined or last switched to: the current room last, the
        room a leave would make current just before it.
        """
        alice, a = self.logged_in("alice")
        self.send(alice, "cap", "rooms")
        for room in ("dev", "ops", "dev"):
            self.send(alice, "join", room)
        a.take()
        self.send(alice, "rooms")
        [reply] = a.take()
        self.assertEqual((reply["joined"], reply["room"]), (["lobby", "ops", "dev"], "dev"))
        self.send(alice, "leave")
        self.assertEqual(a.take()[0]["room"], "ops")


class PresenceTests(ServiceTestsMixin, TestCase):
    def watcher(self, name="watcher"):
        session, client = self.logged_in(name)
        self.send(session, "cap", "presence")
        client.take()
        return session, client

    def presence(self, client):
        return [
            (r["sender"], r["content"], r["room"])
            for r in client.take()
            if r["response"] == "presence"
        ]

    def test_arrivals_and_departures(self):
        """
        A client with presence is told who logs in, joins, leaves, logs out
        and disconnects in its rooms, and why; never about itself.
        """
        watcher, w = self.watcher()
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        self.send(watcher, "join", "dev")
        w.take()
        bob, b = self.logged_in("bob")
        self.send(bob, "join", "dev")
        self.send(bob, "leave", "dev")
        self.send(alice, "logout")
        bob.lost()
        self.assertEqual(
            self.presence(w),
            [
                ("bob", "logged in", "lobby"),
                ("bob", "joined", "dev"),
                ("bob", "left", "dev"),
                ("alice", "logged out", "lobby"),
                ("alice", "logged out", "dev"),
                ("bob", "disconnected", "lobby"),
            ],
        )

    def test_presence_response_shape(self):
        """
        A presence response: the user as sender, why as content, and the
        room.
        """
        _, w = self.watcher()
        self.logged_in("alice")
        [reply] = w.take()
        self.assertEqual(list(reply), STANDARD_KEYS + ["room"])
        self.assertEqual(reply["response"], "presence")

    def test_dropped_for_flooding(self):
        """
        A client the server drops for flooding departs as "dropped".
        """
        _, w = self.watcher()
        self.service.limits = Limits(max_waiting=2)
        flooder, f = self.logged_in("flooder")
        w.take()
        flooder.wait()  # as if a message were being stored
        for _ in range(10):
            flooder.receive(Request("names", None))
        self.assertTrue(f.disconnected)
        flooder.lost()
        self.assertEqual(self.presence(w), [("flooder", "dropped", "lobby")])

    def test_dropped_for_a_request_too_large(self):
        """
        A client cut off for a request too large departs as "dropped", as
        one cut off for flooding does: the server cut it.
        """
        _, w = self.watcher()
        big, b = self.logged_in("big")
        w.take()
        big.receive(DecodeError("Request too large (limit 65536 bytes)", fatal=True))
        self.assertTrue(b.disconnected)
        big.lost()
        self.assertEqual(self.presence(w), [("big", "dropped", "lobby")])
        self.assertEqual(self.service.stats.dropped["too_large"], 1)

    def test_presence_granted_after_joining(self):
        """
        Asking for presence after joining a room takes effect in that room
        at once, and turning it off too (the room's list of whom to tell is
        kept up to date).
        """
        watcher, w = self.logged_in("watcher")
        alice, a = self.logged_in("alice")
        self.send(alice, "join", "dev")
        self.send(watcher, "join", "dev")
        w.take()
        self.send(watcher, "cap", "presence")
        w.take()
        self.send(alice, "leave", "dev")
        self.assertEqual(self.presence(w), [("alice", "left", "dev")])
        self.send(watcher, "cap", "")
        w.take()
        self.send(alice, "join", "dev")
        self.assertEqual(w.take(), [])

    def test_no_presence_without_extension(self):
        """
        A client that did not ask for presence is told nothing of arrivals.
        """
        _, c = self.logged_in("carol")
        alice, _ = self.logged_in("alice")
        self.send(alice, "join", "dev")
        self.send(alice, "logout")
        self.assertEqual(c.take(), [])


class UpgradeTests(TestCase):
    def test_todays_history_is_the_lobby(self):
        """
        The history stored before rooms existed (all in the lobby) is what
        a login gets, and what join lobby switches to.
        """
        harness = ChatHarness()
        harness.store.append([Message(LOBBY, "2026-01-01T00:00:00Z", "old", "from before")])
        d = harness.service.load()
        self.assertEqual(self.successResultOf(d), 1)
        alice = harness.connect()
        alice.send("login", "alice")
        harness.settle(0.05)
        _, history = alice.take()
        self.assertEqual(history_contents(history), ["from before"])


class WireTests(TestCase):
    """
    The bytes through the real TCP protocol, in memory.
    """

    def setUp(self):
        self.harness = ChatHarness()

    def login(self, name, newline=True, caps=None):
        client = self.harness.connect(newline=newline)
        if caps is not None:
            client.send("cap", caps)
        client.send("login", name)
        self.harness.settle(0.05)
        client.take()
        return client

    def test_stream_client_with_extensions(self):
        """
        A stream client granted every extension gets the room on messages
        (on the direct-write path too), "to" on private messages and
        presence responses.
        """
        alice = self.login("alice", caps=["rooms", "private", "presence"])
        bob = self.login("bob")
        bob.send("join", "dev")
        alice.send("join", "dev")
        self.harness.settle(0.05)
        alice.take()
        bob.send("msg", "hello")
        bob.send("pm", "alice psst")
        bob.send("logout")
        self.harness.settle(0.05)
        self.assertEqual(
            [(r["response"], r["content"], r.get("room"), r.get("to")) for r in alice.take()],
            [
                ("message", "hello", "dev", None),
                ("message", "psst", None, "alice"),
                ("presence", "logged out", "lobby", None),
                ("presence", "logged out", "dev", None),
            ],
        )

    def test_legacy_client_with_rooms(self):
        """
        A legacy client granted rooms gets each message alone, with its
        room (not merged into a history response that could not say which
        room each came from).
        """
        reader = self.login("reader", newline=False, caps="rooms")
        reader.send("join", "dev")
        self.harness.settle(0.1)
        reader.take()
        bob = self.login("bob")
        bob.send("join", "dev")
        self.harness.settle(0.05)
        for text in ("one", "two", "three"):
            bob.send("msg", text)
        self.harness.settle(0.5)
        self.assertEqual(
            [(r["response"], r["content"], r["room"]) for r in reader.take()],
            [("message", t, "dev") for t in ("one", "two", "three")],
        )

    def test_legacy_room_history_fits_reads(self):
        """
        A legacy client's history of a room, with the room key, still comes
        in responses of at most 1024 bytes.
        """
        bob = self.login("bob")
        bob.send("join", "dev")
        for i in range(40):
            bob.send("msg", f"message {i} " + "x" * 60)
        self.harness.settle(0.2)
        reader = self.login("reader", newline=False, caps="rooms")
        reader.writes = []
        reader.send("join", "dev")
        self.harness.settle(2)
        writes = [w for w in reader.writes if b'"history"' in w]
        self.assertGreater(len(writes), 2)
        for data in writes:
            self.assertLessEqual(len(data), 1024)
            self.assertEqual(json.loads(data)["room"], "dev")
        items = [i for w in writes for i in history_contents(json.loads(w))]
        self.assertEqual(len(items), 40)

    def test_legacy_room_list(self):
        """
        A legacy client granted rooms gets a long list of rooms in pieces
        of at most 1024 bytes, the room counts only on the last (however
        long they are), and every room once.
        """
        harness = ChatHarness(limits=Limits(max_rooms_per_user=200))
        self.harness = harness
        many = self.login("many")
        for i in range(150):
            many.send("join", f"room{i:03d}")
        reader = self.login("reader", newline=False, caps="rooms")
        harness.settle(0.5)
        reader.take()
        reader.send("rooms")
        harness.settle(1)
        replies = reader.take()
        self.assertGreater(len(replies), 2)
        self.assertTrue(all("rooms" not in r for r in replies[:-1]))
        self.assertEqual(len(replies[-1]["rooms"]), 151)
        text = "".join(r["content"] for r in replies)
        self.assertEqual(text.count("(1)"), 150)
        for data in reader.writes[-len(replies) : -1]:
            self.assertLessEqual(len(data), 1024)

    def test_standard_clients_see_only_the_standard(self):
        """
        In a busy server with rooms, private messages and presence, clients
        that send only the five standard requests (stream and legacy) get
        only the four response words with exactly the four keys.
        """
        standard = [self.login("std1"), self.login("std2", newline=False)]
        extended = self.login("ext", caps="rooms private presence")
        others = [self.login(f"u{i}") for i in range(3)]
        for i, other in enumerate(others):
            other.send("join", "dev")
            other.send("msg", f"in dev {i}")
            other.send("join", "lobby")
            other.send("msg", f"in lobby {i}")
            other.send("pm", f"std1 private {i}")
            other.send("pm", f"std2 private {i}")
            other.send("pm", f"ext private {i}")
            other.send("rooms")
        extended.send("join", "dev")
        extended.send("msg", "ext in dev")
        extended.send("join", "lobby")
        extended.send("msg", "ext in lobby")
        for client in standard:
            client.send("names")
            client.send("help")
            client.send("msg", "standard")
        others[0].send("logout")
        self.harness.settle(1)
        for client in standard:
            received = client.take()
            self.assertGreater(len(received), 5)
            for response in received:
                self.assertEqual(list(response), STANDARD_KEYS)
                self.assertIn(response["response"], STANDARD_WORDS)
                self.assertIsInstance(response["timestamp"], str)
                self.assertIsInstance(response["sender"], str)
            private = [
                r["content"]
                for r in received
                if r["response"] == "message" and "private" in r["content"]
            ]
            self.assertEqual(private, [f"(private) private {i}" for i in range(3)])
            lobby = [r["content"] for r in received if r["response"] == "message"]
            self.assertNotIn("in dev 0", lobby)
        # (a legacy client may get messages merged in a history response)


class CapabilityOrderTests(TestCase):
    def test_extension_keys_follow_the_standard_keys(self):
        """
        Extension keys come after the four standard keys, in order.
        """
        harness = ChatHarness()
        client = harness.connect()
        client.send("cap", "rooms")
        client.send("login", "alice")
        client.send("msg", "x")
        harness.settle(0.05)
        for response in client.take():
            self.assertEqual(list(response)[:4], STANDARD_KEYS)
