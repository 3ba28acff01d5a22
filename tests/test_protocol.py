"""
Tests for L{chat.protocol} over a L{StringTransport}: framing of what is
written, legacy pacing on a fake clock, and the protocol's side of the rules.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from chat.core.limits import Limits
from chat.core.service import ChatService
from chat.storage import MemoryStore
from chat.transports.encoding import LEGACY_MAX_RESPONSE, LEGACY_RESPONSE, SHORTENED
from chat.transports.tcp import PACING, ChatServerFactory, ConnectionLimits


class WriteRecordingTransport(StringTransport):
    """
    A StringTransport that also keeps each write separately, to check what
    goes out in one write.
    """

    def __init__(self):
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.writes = []

    def write(self, data):
        self.writes.append(data)
        super().write(data)


def request(word, content=None, newline=False):
    data = json.dumps({"request": word, "content": content}).encode()
    return data + b"\n" if newline else data


class ProtocolTestsMixin:
    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore(self.clock)
        self.service = ChatService(self.store, self.clock)
        self.factory = ChatServerFactory(self.service, self.clock)

    def connect(self):
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = WriteRecordingTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def run_clock(self, seconds=1.0):
        """
        Let every paced write and batched flush happen.
        """
        for _ in range(int(seconds / PACING) + 2):
            self.clock.advance(PACING)

    def fill_history(self, count):
        """
        Have a user send C{count} messages of 40-odd characters.
        """
        writer, _ = self.connect()
        writer.dataReceived(request("login", "writer", newline=True))
        for i in range(count):
            writer.dataReceived(request("msg", f"{i} " + "y" * 40, newline=True))
            self.clock.advance(0)

    @staticmethod
    def responses(transport):
        data = transport.value()
        return [json.loads(line) for line in data.splitlines()]


class FramingTests(ProtocolTestsMixin, TestCase):
    def test_newline_client_full_speed(self):
        """
        A client that ends requests with a newline gets info and history at
        once, each a compact object followed by one newline.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", "alice", newline=True))
        data = transport.value()
        self.assertEqual(data.count(b"\n"), 2)
        self.assertTrue(data.endswith(b"}\n"))
        self.assertNotIn(b"\r", data)
        info, history = self.responses(transport)
        self.assertEqual((info["response"], history["response"]), ("info", "history"))

    def test_legacy_never_two_in_one_write(self):
        """
        A client sending bare JSON gets one response per write, the second
        only after the pacing interval.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", "alice"))
        self.assertEqual(len(transport.writes), 1)
        self.assertEqual(json.loads(transport.writes[0])["response"], "info")
        self.clock.advance(PACING / 2)
        self.assertEqual(len(transport.writes), 1)
        self.clock.advance(PACING / 2)
        self.assertEqual(len(transport.writes), 2)
        self.assertEqual(json.loads(transport.writes[1])["response"], "history")
        for data in transport.writes:
            self.assertEqual(data.count(b"\n"), 1)

    def test_legacy_broadcast_paced(self):
        """
        Messages broadcast to a legacy client arrive one response per
        write (several waiting messages may share a history response).
        """
        legacy, lt = self.connect()
        legacy.dataReceived(request("login", "old"))
        modern, mt = self.connect()
        modern.dataReceived(request("login", "new", newline=True))
        for i in range(5):
            modern.dataReceived(request("msg", str(i), newline=True))
        self.run_clock()
        self.assertEqual(legacy_messages(lt.writes[2:]), ["0", "1", "2", "3", "4"])

    def test_legacy_batch_split(self):
        """
        Messages from several senders in one reactor turn are broadcast as
        one batch; a legacy client still gets one response per paced write,
        and a newline client gets them all, in order.
        """
        legacy, lt = self.connect()
        legacy.dataReceived(request("login", "old"))
        senders = []
        for name in ("a", "b", "c"):
            protocol, transport = self.connect()
            protocol.dataReceived(request("login", name, newline=True))
            senders.append((protocol, transport))
        self.run_clock()
        for protocol, _ in senders:
            protocol.dataReceived(request("msg", protocol.session.username, newline=True))
        self.run_clock()
        received = self.responses(senders[0][1])
        self.assertEqual([r["content"] for r in received[2:]], ["a", "b", "c"])
        self.assertEqual(legacy_messages(lt.writes[2:]), ["a", "b", "c"])

    def test_every_chunking(self):
        """
        A session's bytes give the same responses whatever the chunking.
        """
        stream = (
            request("help")
            + request("login", "alice", newline=True)
            + b'{"request": "msg",\r\n "content": "hi \\u00e6"}\r\n'
            + b"{broken}"
            + request("NAMES", "")
        )
        expected = None
        for size in range(1, len(stream) + 1):
            self.setUp()
            protocol, transport = self.connect()
            for i in range(0, len(stream), size):
                protocol.dataReceived(stream[i : i + size])
                self.clock.advance(0)
            self.run_clock()
            got = [(r["response"], r["content"]) for r in self.responses(transport)]
            if expected is None:
                expected = got
                self.assertEqual(
                    [r for r, _ in got], ["info", "info", "history", "message", "error", "info"]
                )
                self.assertEqual(got[3][1], "hi \xe6")
                self.assertEqual(got[5][1], "alice")
            self.assertEqual(got, expected, f"chunk size {size}")

    def test_legacy_history_split(self):
        """
        A legacy client gets a long history in several history responses,
        each written alone and within 1024 bytes, every message in order.
        """
        self.fill_history(200)  # (within a legacy window's 32 KiB)
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", "bob"))
        self.run_clock(10)
        self.assertGreater(len(transport.writes), 3)
        items = []
        for data in transport.writes[1:]:
            self.assertLessEqual(len(data), LEGACY_RESPONSE)
            response = json.loads(data)
            self.assertEqual(response["response"], "history")
            items += [json.loads(i)["content"] for i in response["content"]]
        self.assertEqual(items, [f"{i} " + "y" * 40 for i in range(200)])

    def test_legacy_history_pieces_shared_timestamps_own(self):
        """
        Two legacy logins on the same window get the same pieces, each
        response stamped with its own login's time.
        """
        self.fill_history(100)
        self.clock.advance(1000)
        first, ft = self.connect()
        first.dataReceived(request("login", "first"))
        self.run_clock(5)
        self.clock.advance(1000)
        second, st = self.connect()
        second.dataReceived(request("login", "second"))
        self.run_clock(5)
        a, b = self.responses(ft)[1:], self.responses(st)[1:]
        self.assertGreater(len(a), 3)
        self.assertEqual([r["content"] for r in a], [r["content"] for r in b])
        self.assertNotEqual(a[0]["timestamp"], b[0]["timestamp"])
        self.assertEqual({r["timestamp"] for r in b}, {b[0]["timestamp"]})

    def test_newline_history_whole(self):
        """
        A streaming client gets the history in one response.
        """
        self.fill_history(300)
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", "bob", newline=True))
        info, history = self.responses(transport)
        self.assertEqual(len(history["content"]), 300)

    def test_nothing_before_request(self):
        """
        The server says nothing until the client does.
        """
        _, transport = self.connect()
        self.run_clock()
        self.assertEqual(transport.value(), b"")


class ConnectionTests(ProtocolTestsMixin, TestCase):
    def test_logout_closes_after_reply(self):
        """
        logout writes info and then closes, for both kinds of client; a
        legacy client's close waits for its paced responses.
        """
        for newline in (True, False):
            protocol, transport = self.connect()
            protocol.dataReceived(request("login", f"u{int(newline)}", newline))
            protocol.dataReceived(request("logout", None, newline))
            if not newline:
                self.assertFalse(transport.disconnecting)
            self.run_clock()
            self.assertTrue(transport.disconnecting)
            self.assertEqual(self.responses(transport)[-1]["content"], "Logged out")

    def test_requests_after_logout_ignored(self):
        """
        Requests in the same segment after logout are not acted on.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(
            request("login", "alice", True) + request("logout", None, True) + request("msg", "x")
        )
        self.run_clock()
        self.assertEqual(self.store.messages, [])

    def test_oversize_request(self):
        """
        A request over the size limit gets an error and the connection is
        closed.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(b'{"request":"msg","content":"' + b"x" * (70 * 1024))
        self.run_clock()
        [reply] = self.responses(transport)
        self.assertEqual(reply["response"], "error")
        self.assertIn("too large", reply["content"])
        self.assertTrue(transport.disconnecting)

    def test_bad_input_keeps_connection(self):
        """
        Malformed JSON, non-objects, a missing request and an unknown
        request each get an error and the connection stays open.
        """
        protocol, transport = self.connect()
        for data in (
            b"[1,2]",
            b'"str"',
            b'{"content":1}',
            b'{"request":7}',
            request("fly"),
            b"\xff\xfe{}",
            b"{nope}",
        ):
            protocol.dataReceived(data + b"\n")
        self.run_clock()
        replies = self.responses(transport)
        self.assertEqual([r["response"] for r in replies], ["error"] * 8)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(request("login", "alice", True))
        self.assertEqual(self.responses(transport)[-2]["response"], "info")

    def test_connection_lost_frees_name(self):
        """
        Dropping the connection without logout frees the name and later
        broadcasts skip it.
        """
        alice, at = self.connect()
        alice.dataReceived(request("login", "alice", True))
        bob, bt = self.connect()
        bob.dataReceived(request("login", "bob", True))
        alice.connectionLost(None)
        self.assertEqual(self.service.usernames(), ["bob"])
        before = at.value()
        bob.dataReceived(request("msg", "anyone?", True))
        self.clock.advance(0)
        self.assertEqual(at.value(), before)
        self.assertEqual(self.responses(bt)[-1]["content"], "anyone?")

    def test_lost_while_paced(self):
        """
        A legacy client lost with paced responses pending leaves no timer
        behind.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", "alice"))
        self.assertTrue(self.clock.getDelayedCalls())
        protocol.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SharedDeliveryTests(ProtocolTestsMixin, TestCase):
    def test_stalled_stream_recipients_share_lines(self):
        """
        Stream recipients whose transport is full queue a broadcast's
        message lines themselves, shared, not copies.
        """
        readers = []
        for i in range(2):
            protocol, transport = self.connect()
            protocol.dataReceived(request("login", f"r{i}", newline=True))
            protocol._set_write_paused(True)
            readers.append(protocol)
        writer, _ = self.connect()
        writer.dataReceived(request("login", "w", newline=True))
        writer.dataReceived(b"".join(request("msg", str(i), newline=True) for i in range(3)))
        self.clock.advance(0)
        a, b = readers
        self.assertEqual(len(a._queue), 3)
        for i in range(3):
            self.assertIs(a._queue.peek(i), b._queue.peek(i))

    def test_legacy_recipients_share_queued_messages(self):
        """
        Two legacy clients queueing the same batch hold the very same
        message objects, and each still gets one response per write.
        """
        legacy = [self.connect() for _ in range(2)]
        for i, (protocol, _) in enumerate(legacy):
            protocol.dataReceived(request("login", f"old{i}"))
        self.run_clock()
        modern, _ = self.connect()
        modern.dataReceived(request("login", "new", newline=True))
        for i in range(3):
            modern.dataReceived(request("msg", str(i), newline=True))
            self.clock.advance(0)
        (a, at), (b, bt) = legacy
        self.assertEqual(len(a._queue), len(b._queue))
        for i in range(len(a._queue)):
            self.assertIs(a._queue.peek(i), b._queue.peek(i))
        self.run_clock()
        for transport in (at, bt):
            self.assertEqual(legacy_messages(transport.writes[2:]), ["0", "1", "2"])


def legacy_messages(writes):
    """
    The message texts in a legacy client's writes, in order, whether each
    came as a message response or several as one history response; each
    write must hold exactly one response.
    """
    texts = []
    for data in writes:
        [line] = data.splitlines()
        response = json.loads(line)
        if response["response"] == "message":
            texts.append(response["content"])
        elif response["response"] == "history":
            texts += [json.loads(item)["content"] for item in response["content"]]
    return texts


class LegacyDeliveryTests(ProtocolTestsMixin, TestCase):
    def legacy_reader(self, name="old"):
        protocol, transport = self.connect()
        protocol.dataReceived(request("login", name))
        self.run_clock()
        del transport.writes[:]
        return protocol, transport

    def test_single_message_as_message(self):
        """
        A message that arrives alone reaches a legacy client as a message
        response.
        """
        _, transport = self.legacy_reader()
        writer, _ = self.connect()
        writer.dataReceived(request("login", "w", newline=True))
        writer.dataReceived(request("msg", "hello", newline=True))
        self.run_clock()
        [data] = transport.writes
        self.assertEqual(json.loads(data)["response"], "message")

    def test_backlog_coalesced(self):
        """
        Messages that arrive faster than one paced write each reach a
        legacy client as fewer history responses of at most 1024 bytes,
        one response per write, every message once and in order.
        """
        _, transport = self.legacy_reader()
        writers = []
        for i in range(5):
            writer, _ = self.connect()
            writer.dataReceived(request("login", f"w{i}", newline=True))
            writers.append(writer)
        texts = []
        for round_ in range(20):
            for i, writer in enumerate(writers):
                texts.append(f"{round_}-{i}")
                writer.dataReceived(request("msg", texts[-1], newline=True))
            self.clock.advance(0)
        self.run_clock(5)
        self.assertLess(len(transport.writes), len(texts) / 2)
        for data in transport.writes:
            self.assertLessEqual(len(data), LEGACY_RESPONSE)
        self.assertEqual(legacy_messages(transport.writes), texts)

    def test_keeps_up_with_busy_chat(self):
        """
        Fifteen people sending ten messages a second each for a minute: a
        legacy client that reads is never dropped, gets one response per
        write, and is never more than a moment behind.
        """
        protocol, transport = self.legacy_reader()
        writers = []
        for i in range(15):
            writer, _ = self.connect()
            writer.dataReceived(request("login", f"w{i}", newline=True))
            writers.append(writer)
        sent = 0
        for _ in range(600):  # 60 s in steps of 0.1 s
            for writer in writers:
                writer.dataReceived(request("msg", f"message {sent} " + "z" * 60, newline=True))
                sent += 1
            for _ in range(10):
                self.clock.advance(PACING)
            self.assertFalse(transport.disconnecting)
            self.assertLess(protocol._queue.queued, 8 * 1024)
        self.run_clock()
        self.assertEqual(len(legacy_messages(transport.writes)), sent)

    def test_reading_legacy_client_behind_skips_not_dropped(self):
        """
        A burst of long messages (within flood control) that one response
        per paced write cannot carry in time: a legacy client that takes
        all it is sent is not dropped. The oldest messages waiting are
        skipped, it is told how many in one info response, and it gets
        every other message in order, one valid response of at most 4,096
        bytes per write, while what waits for it stays within the limit.
        """
        protocol, transport = self.legacy_reader()
        limit = ConnectionLimits().max_send_queue
        sent = []
        for i in range(4):
            writer, _ = self.connect()
            writer.dataReceived(request("login", f"w{i}", newline=True))
            for j in range(20):
                sent.append(f"{i}-{j:02d} " + "\U0001f600" * 990)
                writer.dataReceived(request("msg", sent[-1], newline=True))
            self.clock.advance(0)
            self.assertLessEqual(protocol._queue.counted, limit)
        self.run_clock(5)
        self.assertFalse(transport.disconnecting)
        responses = [json.loads(data) for data in transport.writes]
        self.assertTrue(all(len(data) <= LEGACY_MAX_RESPONSE for data in transport.writes))
        [at] = [i for i, r in enumerate(responses) if r["response"] == "info"]
        notice = responses[at]["content"]
        self.assertIn("messages skipped", notice)
        skipped = int(notice.split()[0])
        self.assertGreater(skipped, 0)
        self.assertEqual(self.service.stats.skipped, skipped)
        # Every message but a run of the skipped ones, where the notice is.
        before = legacy_messages(transport.writes[:at])
        expected = sent[: len(before)] + sent[len(before) + skipped :]
        got = legacy_messages(transport.writes)
        self.assertEqual([t.split()[0] for t in got], [t.split()[0] for t in expected])

    def test_legacy_client_not_reading_still_dropped(self):
        """
        A legacy client whose transport is full (it does not read) is
        dropped at the limit, as before: skipping is for one that reads.
        """
        protocol, transport = self.legacy_reader()
        protocol.transport.producer.pauseProducing()
        writer, _ = self.connect()
        writer.dataReceived(request("login", "w", newline=True))
        for j in range(20):
            writer.dataReceived(request("msg", f"{j} " + "x" * 990, newline=True))
            self.clock.advance(0)
        for _ in range(30):
            protocol.dataReceived(b"")
        aborted = []
        transport.abortConnection = lambda: aborted.append(True)
        for i in range(1, 20):
            other, _ = self.connect()
            other.dataReceived(request("login", f"o{i}", newline=True))
            for j in range(20):
                other.dataReceived(request("msg", f"{j} " + "x" * 990, newline=True))
            self.clock.advance(0)
            if aborted:
                break
        self.assertTrue(aborted)
        self.assertNotIn(b"messages skipped", transport.value())

    def test_long_message_shortened_for_legacy(self):
        """
        A message too large for a recv(4096) reaches a legacy client
        shortened with a visible mark, as valid JSON; a stream client gets
        it whole.
        """
        _, old = self.legacy_reader()
        modern, new = self.connect()
        modern.dataReceived(request("login", "n" * 32, newline=True))
        text = "\U0001f600" * 1000
        modern.dataReceived(request("msg", text, newline=True))
        self.run_clock()
        [data] = old.writes
        self.assertLessEqual(len(data), LEGACY_MAX_RESPONSE)
        content = json.loads(data)["content"]
        self.assertTrue(content.endswith(SHORTENED))
        self.assertTrue(text.startswith(content[: -len(SHORTENED)]))
        self.assertEqual(self.responses(new)[-1]["content"], text)

    def test_long_message_in_history_within_recv_for_legacy(self):
        """
        A message too large for a recv(4096) reaches a legacy client in a
        history response (the window of a later login, a private
        conversation) that fits in 4096 bytes with its frame, its item
        shortened with a visible mark.
        """
        old, transport = self.legacy_reader()
        modern, _ = self.connect()
        modern.dataReceived(request("login", "n" * 32, newline=True))
        modern.dataReceived(request("msg", "\U0001f600" * 1000, newline=True))
        self.run_clock()
        modern.dataReceived(request("pm", "old " + "\U0001f600" * 1000, newline=True))
        self.run_clock()
        del transport.writes[:]
        old.dataReceived(request("pm", "n" * 32))
        self.run_clock()
        [conversation] = transport.writes
        late, transport = self.connect()
        late.dataReceived(request("login", "late"))
        self.run_clock()
        [_, window] = transport.writes
        for data in (window, conversation):
            self.assertLessEqual(len(data), LEGACY_MAX_RESPONSE)
            [item] = json.loads(data)["content"]
            self.assertTrue(json.loads(item)["content"].endswith(SHORTENED))

    def test_long_names_in_history_within_recv_for_legacy(self):
        """
        With C{--max-username-length} past 32, a history response that names
        a long room (C{rooms}) or user (C{private, with}) still fits in 4096
        bytes with its one shortened item: the frame allows for the name.
        """
        self.service.limits = Limits(max_username_length=100)
        old, transport = self.legacy_reader()
        old.dataReceived(request("cap", "rooms private"))
        self.run_clock()
        modern, _ = self.connect()
        modern.dataReceived(request("login", "n" * 100, newline=True))
        modern.dataReceived(request("pm", "old " + "\U0001f600" * 1000, newline=True))
        modern.dataReceived(request("join", "r" * 100, newline=True))
        modern.dataReceived(request("msg", "\U0001f600" * 1000, newline=True))
        self.run_clock()
        del transport.writes[:]
        old.dataReceived(request("pm", "n" * 100))
        self.run_clock()
        old.dataReceived(request("join", "r" * 100))
        self.run_clock()
        conversation, _, window = transport.writes
        for data in (conversation, window):
            self.assertLessEqual(len(data), LEGACY_MAX_RESPONSE)
            [item] = json.loads(data)["content"]
            self.assertTrue(json.loads(item)["content"].endswith(SHORTENED))

    def test_shortened_once_per_message(self):
        """
        Two long messages to two legacy clients: each client gets each
        message shortened from its own text (the shortened form is kept per
        message), and both clients get the very same bytes.
        """
        readers = [self.legacy_reader(f"old{i}")[1] for i in range(2)]
        modern, _ = self.connect()
        modern.dataReceived(request("login", "n" * 32, newline=True))
        texts = ["\U0001f600" * 1000, "\U0001f680" * 1000]
        for text in texts:
            modern.dataReceived(request("msg", text, newline=True))
            self.run_clock()
        for transport in readers:
            contents = legacy_messages(transport.writes)
            self.assertEqual(len(contents), 2)
            for text, content in zip(texts, contents):
                self.assertTrue(content.endswith(SHORTENED))
                self.assertTrue(text.startswith(content[: -len(SHORTENED)]))
        self.assertEqual(readers[0].writes, readers[1].writes)

    def test_names_split_for_legacy(self):
        """
        A names answer too long for 1024 bytes reaches a legacy client as
        several info responses, each within it, that hold every name.
        """
        self.factory.admission.limits = ConnectionLimits(max_connections_per_address=0)
        for i in range(300):
            peer, _ = self.connect()
            peer.dataReceived(request("login", f"user{i:03}xxxxxxxx", newline=True))
        protocol, transport = self.legacy_reader()
        protocol.dataReceived(request("names"))
        self.run_clock()
        self.assertGreater(len(transport.writes), 1)
        names = []
        for data in transport.writes:
            self.assertLessEqual(len(data), LEGACY_RESPONSE)
            names += json.loads(data)["content"].split(", ")
        self.assertEqual(names, [f"user{i:03}xxxxxxxx" for i in range(300)] + ["old"])
