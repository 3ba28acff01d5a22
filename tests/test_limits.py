"""
Tests for the limits and protections of issue 4, on fake transports and a
fixed clock: connection limits, the login timeout, the send-queue limit
for clients that do not read, flood control, storage faults, graceful
shutdown, identity and Unicode.
"""

import json

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from chat.core.events import Notice
from chat.core.interfaces import IFlowControlledClient
from chat.core.limits import READ_PAUSE_BACKLOG, Limits, TokenBucket
from chat.core.service import ChatService
from chat.server.tap import Options, makeService
from chat.storage import MemoryStore, StoreError
from chat.transports.tcp import PACING, ChatServerFactory, ConnectionLimits
from chat.wire import Request, encode_request

START = 1700000000.0


def decode_all(data):
    return [json.loads(line) for line in data.splitlines() if line.strip()]


class Peer:
    """
    One protocol on a L{StringTransport}, and what it was sent.
    """

    def __init__(self, factory, host="192.168.1.1", port=50000):
        from twisted.internet.address import IPv4Address

        self.transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self._seen = 0

    def send(self, word, content=None, newline=True):
        data = encode_request(word, content)
        self.protocol.dataReceived(data if newline else data.rstrip(b"\n"))

    def take(self):
        """
        The responses written since the last call.
        """
        value = self.transport.value()
        new, self._seen = value[self._seen :], len(value)
        return decode_all(new)

    def lose(self):
        self.protocol.connectionLost(None)


class LimitsTestsMixin:
    limits = Limits()
    connection_limits = ConnectionLimits()

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.store = MemoryStore(self.clock)
        self.service = ChatService(self.store, self.clock, limits=self.limits)
        self.factory = ChatServerFactory(self.service, self.clock, self.connection_limits)

    def connect(self, **kwargs):
        return Peer(self.factory, **kwargs)

    def logged_in(self, name, **kwargs):
        peer = self.connect(**kwargs)
        peer.send("login", name)
        self.clock.advance(0)
        peer.take()
        return peer


class ConnectionLimitTests(LimitsTestsMixin, TestCase):
    connection_limits = ConnectionLimits(max_connections=3, max_connections_per_address=2)

    def test_per_address(self):
        """
        A third connection from an address whose two connections are logged
        in gets an error saying the limit and is closed; one from another
        address is served; when one of the first two closes, the address may
        connect again.
        """
        first = self.logged_in("first")
        self.logged_in("second")
        third = self.connect()
        [reply] = third.take()
        self.assertEqual(reply["response"], "error")
        self.assertIn("limit 2", reply["content"])
        self.assertTrue(third.transport.disconnecting)
        third.lose()
        other = self.connect(host="10.1.1.1")
        self.assertFalse(other.transport.disconnecting)
        first.lose()
        again = self.connect()
        self.assertFalse(again.transport.disconnecting)
        again.send("help")
        self.assertEqual(again.take()[0]["response"], "info")

    def test_total(self):
        """
        Past the total limit of logged-in connections, connections from any
        address are refused; a refused connection does not count.
        """
        peers = [self.logged_in(f"user{i}", host=f"10.0.0.{i}") for i in range(3)]
        refused = self.connect(host="10.0.0.9")
        self.assertIn("Server full", refused.take()[0]["content"])
        refused.lose()
        self.assertEqual(self.factory.connections, 3)
        peers[0].lose()
        self.assertEqual(self.factory.connections, 2)
        self.assertFalse(self.connect(host="10.0.0.9").transport.disconnecting)

    def test_idle_make_room_when_full(self):
        """
        When the server is full, the oldest connection that has not logged
        in is told why and closed, and the newcomer is served; logged-in
        users are never closed for room.
        """
        user = self.logged_in("alice", host="10.0.0.1")
        idle = [self.connect(host=f"10.0.0.{i}") for i in (2, 3)]
        newcomer = self.connect(host="10.0.0.4")
        self.clock.advance(PACING)  # the error goes out paced, then the close
        self.assertFalse(newcomer.transport.disconnecting)
        [reply] = idle[0].take()
        self.assertEqual(reply["response"], "error")
        self.assertIn("make room", reply["content"])
        self.assertTrue(idle[0].transport.disconnecting)
        self.assertFalse(idle[1].transport.disconnecting)
        self.assertEqual(self.factory.connections, 3)
        idle[0].lose()  # its closing is not counted twice
        self.assertEqual(self.factory.connections, 3)
        newcomer.send("login", "bob")
        self.clock.advance(0)
        self.assertEqual(newcomer.take()[0]["response"], "info")
        self.assertFalse(user.transport.disconnecting)

    def test_idle_from_address_make_room(self):
        """
        At the per-address limit, the oldest connection from that address
        that has not logged in makes room; others' are left alone.
        """
        self.factory.admission.limits = ConnectionLimits(
            max_connections=10, max_connections_per_address=2
        )
        elsewhere = self.connect(host="10.9.9.9")
        logged = self.logged_in("alice")
        idle = self.connect()
        newcomer = self.connect()
        self.clock.advance(PACING)
        self.assertFalse(newcomer.transport.disconnecting)
        self.assertTrue(idle.transport.disconnecting)
        self.assertFalse(logged.transport.disconnecting)
        self.assertFalse(elsewhere.transport.disconnecting)

    def test_idle_churn_never_locks_out(self):
        """
        Many addresses keeping the server full of connections that never log
        in, reopened as they are closed, cannot keep a real user out: every
        login attempt in the churn is served.
        """
        self.factory.admission.limits = ConnectionLimits(
            max_connections=20, max_connections_per_address=5
        )
        open_idle = []
        for round_ in range(10):
            for i in range(20):
                open_idle.append(self.connect(host=f"10.0.1.{i % 4}"))
                self.clock.advance(PACING)
                for peer in [p for p in open_idle if p.transport.disconnecting]:
                    peer.lose()
                    open_idle.remove(peer)
            user = self.connect(host="192.168.7.7")
            user.send("login", f"real{round_}")
            self.clock.advance(0)
            self.assertEqual(user.take()[0]["response"], "info", round_)
            user.send("logout")
            self.clock.advance(ConnectionLimits.close_timeout)
            user.lose()

    def test_refused_connection_safe_everywhere(self):
        """
        A connection refused by a limit has no session; data arriving on
        it, a timeout, a delivery, a close and its loss all pass without an
        exception, and it is not counted.
        """
        for i in range(3):
            self.logged_in(f"user{i}", host=f"10.0.0.{i}")
        refused = self.connect(host="10.0.0.9")
        self.assertIsNone(refused.protocol.session)
        written = refused.transport.value()
        refused.send("login", "mallory")
        refused.protocol.dataReceived(b"{broken\n")
        refused.protocol.timeoutConnection()
        refused.protocol.make_room()
        refused.protocol.send(Notice("info", "x", "t"))
        refused.protocol.pause_reading()
        refused.protocol.resume_reading()
        refused.protocol.disconnect()
        refused.lose()
        self.assertEqual(refused.transport.value(), written)
        self.assertEqual(self.factory.connections, 3)
        self.assertNotIn("mallory", self.service.usernames())

    def test_unlimited(self):
        """
        A limit of 0 means no limit.
        """
        self.factory.admission.limits = ConnectionLimits(
            max_connections=0, max_connections_per_address=0
        )
        peers = [self.connect() for _ in range(10)]
        self.assertFalse(any(p.transport.disconnecting for p in peers))


class LoginTimeoutTests(LimitsTestsMixin, TestCase):
    connection_limits = ConnectionLimits(login_timeout=30)

    def test_timed_out(self):
        """
        A connection that does not log in in time gets an error and is
        closed, even if it keeps sending other requests.
        """
        peer = self.connect()
        self.clock.advance(10)
        peer.send("help")
        self.clock.advance(19.9)
        self.assertFalse(peer.transport.disconnecting)
        self.clock.advance(0.2)
        replies = peer.take()
        self.assertEqual(replies[-1]["response"], "error")
        self.assertIn("30 seconds", replies[-1]["content"])
        self.assertTrue(peer.transport.disconnecting)

    def test_nothing_handled_after_timeout(self):
        """
        A login that waited behind flood control when the time ran out is
        not handled: the connection is closing.
        """
        self.service.limits = Limits(flood_rate=1, flood_burst=1)
        peer = self.connect()
        self.clock.advance(29)
        peer.send("help")
        peer.send("login", "late")
        self.clock.advance(1.5)
        self.assertTrue(peer.transport.disconnecting)
        self.clock.advance(5)
        self.assertEqual([r["response"] for r in peer.take()], ["info", "error"])
        self.assertEqual(self.service.usernames(), [])

    def test_logged_in_not_timed_out(self):
        """
        Logging in in time stops the timer.
        """
        peer = self.logged_in("alice")
        self.clock.advance(3600)
        self.assertFalse(peer.transport.disconnecting)
        self.assertEqual(peer.take(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_closed_before_timeout(self):
        """
        A connection that goes away leaves no timer behind.
        """
        peer = self.connect()
        peer.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SendQueueTests(LimitsTestsMixin, TestCase):
    connection_limits = ConnectionLimits(max_send_queue=1000, login_timeout=0)

    def test_registers_producer(self):
        """
        The protocol registers a streaming producer with its transport, and
        provides the flow-control interface the core uses.
        """
        peer = self.connect()
        self.assertIsNotNone(peer.transport.producer)
        self.assertTrue(peer.transport.streaming)
        verifyObject(IFlowControlledClient, peer.protocol)

    def test_queued_while_paused_then_sent(self):
        """
        While the transport's buffer is full, responses wait in order, and
        go out when it drains.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        bob.transport.producer.pauseProducing()
        for i in range(5):
            alice.send("msg", f"m{i}")
            self.clock.advance(0)
        self.assertEqual(bob.take(), [])
        self.assertEqual(len(alice.take()), 5)
        bob.transport.producer.resumeProducing()
        self.assertEqual([r["content"] for r in bob.take()], [f"m{i}" for i in range(5)])
        alice.send("msg", "direct")
        self.clock.advance(0)
        self.assertEqual(bob.take()[0]["content"], "direct")

    def test_slow_consumer_aborted(self):
        """
        A client whose queue passes the limit is aborted, not closed
        politely, and its queue is freed; the others are not affected.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        bob.transport.producer.pauseProducing()
        for _ in range(20):
            alice.send("msg", "x" * 100)
            self.clock.advance(0)
        self.assertTrue(bob.transport.disconnected)  # abortConnection
        self.assertEqual(bob.protocol._queue.queued, 0)
        self.assertEqual(len(alice.take()), 20)
        self.flushLoggedErrors()

    def test_slow_consumer_departs_dropped(self):
        """
        Those told who comes and goes hear that a client dropped for not
        reading was "dropped", not that it disconnected.
        """
        watcher = self.logged_in("watcher")
        watcher.send("cap", "presence")
        bob = self.logged_in("bob")
        bob.transport.producer.pauseProducing()
        for _ in range(20):
            watcher.send("msg", "x" * 100)
            self.clock.advance(0)
        bob.lose()  # (what the abort leads to)
        presence = [r for r in watcher.take() if r["response"] == "presence"]
        self.assertEqual(
            [(r["sender"], r["content"]) for r in presence],
            [("bob", "logged in"), ("bob", "dropped")],
        )
        self.flushLoggedErrors()

    def test_dropped_at_the_first_response_past_the_limit(self):
        """
        A batch of messages arriving for a stalled client is counted
        response by response: it is dropped holding at most the limit and
        one response, not the whole batch.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        bob.transport.producer.pauseProducing()
        held = []
        drop = bob.protocol._drop_slow_consumer

        def dropping():
            held.append(bob.protocol._queue.counted)
            drop()

        bob.protocol._drop_slow_consumer = dropping
        alice.protocol.dataReceived(
            b"".join(encode_request("msg", f"{i} " + "x" * 150) for i in range(10))
        )
        self.clock.advance(0)
        self.assertTrue(bob.transport.disconnected)
        [at_drop] = held
        self.assertGreater(at_drop, 1000)
        self.assertLess(at_drop, 1000 + 250)

    def test_reader_not_dropped_for_one_long_answer(self):
        """
        A stream client that has nothing waiting is not dropped for one
        answer larger than the limit (a page of history of long messages,
        possible with the default limit too): it goes to the transport at
        once, so none of it waits for the client.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        for i in range(10):
            alice.send("msg", f"{i} " + "x" * 150)
            self.clock.advance(0)
        self.assertEqual(len(bob.take()), 10)
        bob.send("history", 10)
        self.clock.advance(0)
        self.assertFalse(bob.transport.disconnected)
        [page] = bob.take()
        self.assertEqual(page["response"], "history")
        self.assertEqual(len(page["content"]), 10)

    def test_history_burst_not_counted(self):
        """
        A history larger than the limit, sent while the client's buffer is
        full, does not get it dropped; only what comes after counts.
        """
        alice = self.logged_in("alice")
        for i in range(30):
            alice.send("msg", f"history {i} " + "y" * 50)
            self.clock.advance(0)
        bob = self.connect()
        bob.transport.producer.pauseProducing()
        bob.send("login", "bob")
        self.assertGreater(bob.protocol._queue.queued, 1000)
        self.assertFalse(bob.transport.disconnected)
        alice.send("msg", "after")
        self.clock.advance(0)
        self.assertFalse(bob.transport.disconnected)
        bob.transport.producer.resumeProducing()
        replies = bob.take()
        self.assertEqual([r["response"] for r in replies], ["info", "history", "message"])
        self.assertEqual(len(replies[1]["content"]), 30)

    def test_legacy_pace_queue_counted(self):
        """
        For a legacy client the paced queue counts too: a legacy reader that
        cannot keep up with the chat is dropped.
        """
        alice = self.logged_in("alice")
        bob = self.connect()
        bob.send("login", "bob", newline=False)
        for _ in range(15):
            alice.send("msg", "z" * 100)
            self.clock.advance(0)
        self.assertTrue(bob.transport.disconnected)

    def test_disconnect_after_queue(self):
        """
        A disconnect while responses wait closes the connection only after
        they are sent; a peer that never drains is aborted after a bound.
        """
        alice = self.logged_in("alice")
        alice.transport.producer.pauseProducing()
        alice.send("logout")
        self.assertFalse(alice.transport.disconnecting)
        alice.transport.producer.resumeProducing()
        self.assertEqual(alice.take()[0]["content"], "Logged out")
        self.assertTrue(alice.transport.disconnecting)
        self.assertIsNone(alice.transport.producer)

        bob = self.logged_in("bob")
        bob.transport.producer.pauseProducing()
        bob.send("logout")
        self.clock.advance(ConnectionLimits.close_timeout)
        self.assertTrue(bob.transport.disconnected)


class FloodTests(LimitsTestsMixin, TestCase):
    limits = Limits(flood_rate=10, flood_burst=5, max_waiting=40)

    def test_bucket(self):
        """
        A token bucket gives C{burst} tokens at once, then C{rate} a second.
        """
        bucket = TokenBucket(2.0, 3, self.clock)
        self.assertEqual([bucket.take() for _ in range(4)], [True, True, True, False])
        self.assertAlmostEqual(bucket.delay(), 0.5)
        self.clock.advance(0.5)
        self.assertTrue(bucket.take())
        self.clock.advance(100)
        self.assertEqual(sum(bucket.take() for _ in range(10)), 3)

    def test_flood_delayed_not_dropped(self):
        """
        Requests beyond the burst wait their turn; all are handled, in
        order, and reading is paused while many wait, then resumed.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        self.clock.advance(10)  # refill the tokens the logins took
        data = b"".join(encode_request("msg", f"n{i}") for i in range(30))
        alice.protocol.dataReceived(data)
        self.clock.advance(0)
        self.assertEqual(len(bob.take()), 5)
        self.assertEqual(alice.transport.producerState, "paused")
        for _ in range(40):
            self.clock.advance(0.1)
        self.assertEqual([r["content"] for r in bob.take()], [f"n{i}" for i in range(5, 30)])
        self.assertEqual(alice.transport.producerState, "producing")
        self.assertEqual([m.content for m in self.store.messages], [f"n{i}" for i in range(30)])

    def test_pause_threshold(self):
        """
        Reading pauses only once L{READ_PAUSE_BACKLOG} requests wait.
        """
        alice = self.logged_in("alice")
        self.clock.advance(10)
        data = b"".join(encode_request("names", None) for _ in range(5 + READ_PAUSE_BACKLOG - 1))
        alice.protocol.dataReceived(data)
        self.assertEqual(alice.transport.producerState, "producing")
        alice.protocol.dataReceived(encode_request("names", None))
        self.assertEqual(alice.transport.producerState, "paused")

    def test_past_bound_error_then_disconnect(self):
        """
        Past the bound of waiting requests, one error answers a run of
        refused requests (in order, after the waiting ones); a client that
        goes on as many again is disconnected.
        """
        alice = self.logged_in("alice")
        self.clock.advance(10)
        data = b"".join(encode_request("names", None) for _ in range(5 + 40 + 10))
        alice.protocol.dataReceived(data)
        for _ in range(100):
            self.clock.advance(0.1)
        replies = alice.take()
        self.assertEqual(len(replies), 5 + 40 + 1)
        self.assertEqual(replies[-1]["response"], "error")
        self.assertIn("Too many requests", replies[-1]["content"])
        self.assertFalse(alice.transport.disconnecting)
        # Now flood past the bound for good.
        data = b"".join(encode_request("names", None) for _ in range(5 + 40 + 41))
        alice.protocol.dataReceived(data)
        self.assertTrue(alice.transport.disconnecting)
        self.assertIn("flooding", alice.take()[-1]["content"])

    def test_refusals_counted_per_run(self):
        """
        Refused requests count towards disconnection only within one run:
        a client that overflows the queue in many bursts, each smaller than
        the bound, with requests let in between, is never disconnected.
        """
        alice = self.logged_in("alice")
        for burst in range(6):  # 6 runs of 30 refusals: 180 > the bound of 40
            self.clock.advance(10)
            data = b"".join(encode_request("names", None) for _ in range(5 + 40 + 30))
            alice.protocol.dataReceived(data)
            for _ in range(100):
                self.clock.advance(0.1)
            replies = alice.take()
            self.assertEqual(replies[-1]["content"][:17], "Too many requests", burst)
            self.assertFalse(alice.transport.disconnecting, burst)

    def test_off_by_default(self):
        """
        The core's default limits do no flood control.
        """
        self.assertEqual(Limits().flood_rate, 0)
        self.service.limits = Limits()
        peer = self.connect()
        for _ in range(100):
            peer.send("help")
        self.assertEqual(len(peer.take()), 100)


class FailingStore(MemoryStore):
    """
    A store whose appends fail with C{error} while C{fail} is set.
    """

    def __init__(self, clock, error):
        super().__init__(clock)
        self.error = error
        self.fail = True

    def append(self, messages):
        if self.fail:
            return fail(self.error)
        return super().append(messages)


class FaultTests(LimitsTestsMixin, TestCase):
    def test_store_error(self):
        """
        A StoreError is logged (not as a traceback), the sender gets an
        error, nobody sees the message, and once the store works again
        messages flow.
        """
        self.store = FailingStore(self.clock, StoreError("database is locked"))
        self.service.store = self.store
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        alice.send("msg", "lost")
        self.clock.advance(0)
        [reply] = alice.take()
        self.assertEqual(reply["response"], "error")
        self.assertEqual(bob.take(), [])
        self.store.fail = False
        alice.send("msg", "kept")
        self.clock.advance(0)
        self.assertEqual(bob.take()[0]["content"], "kept")
        self.assertEqual([m.content for m in self.store.messages], ["kept"])

    def test_unexpected_store_exception(self):
        """
        Any exception from the store is treated like a StoreError, logged
        with its traceback, and the sender's later requests still run.
        """
        self.store = FailingStore(self.clock, ZeroDivisionError("bug"))
        self.service.store = self.store
        alice = self.logged_in("alice")
        alice.send("msg", "lost")
        alice.send("names")
        self.clock.advance(0)
        replies = alice.take()
        self.assertEqual([r["response"] for r in replies], ["error", "info"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ShutdownTests(LimitsTestsMixin, TestCase):
    def test_waits_for_connections(self):
        """
        shutdown() returns a Deferred that fires once every connection has
        closed; what was pending is stored and sent before the info.
        """
        alice = self.logged_in("alice")
        idle = self.connect()
        alice.send("msg", "last")
        done = self.service.shutdown("going away")
        fired = []
        done.addCallback(fired.append)
        self.assertEqual([r["response"] for r in alice.take()], ["message", "info"])
        self.assertEqual([m.content for m in self.store.messages], ["last"])
        self.assertTrue(alice.transport.disconnecting)
        self.assertTrue(idle.transport.disconnecting)
        alice.lose()
        self.assertEqual(fired, [])
        idle.lose()
        self.assertEqual(fired, [None])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bounded(self):
        """
        A connection that never closes does not hold the shutdown forever.
        """
        self.logged_in("alice")
        fired = []
        self.service.shutdown(timeout=2).addCallback(fired.append)
        self.clock.advance(2)
        self.assertEqual(fired, [None])

    def test_requests_after_shutdown_ignored(self):
        """
        Requests that arrive during the shutdown are not handled (nothing is
        stored after the store is closed).
        """
        alice = self.logged_in("alice")
        self.service.shutdown()
        self.service.dispatch(alice.protocol.session, Request("msg", "x"))
        self.clock.advance(0)
        self.assertEqual(self.store.messages, [])

    def test_stop_service_closes_store(self):
        """
        Stopping the twistd service waits for the chat to shut down, then
        closes the store.
        """
        options = Options()
        options.parseOptions(["--database", ":memory:", "--port", "tcp:0:interface=127.0.0.1"])
        reactor = MemoryReactorClock()
        top = makeService(options, reactor=reactor)
        server = top.services[0]
        server.startService()
        d = server.stopService()
        fired = []
        d.addCallback(fired.append)
        self.assertEqual(fired, [None])
        self.assertTrue(server.chat.store.closed)


class IdentityTests(LimitsTestsMixin, TestCase):
    def test_sender_is_server_record(self):
        """
        Extra fields, including "sender", cannot change who a message is
        from.
        """
        alice = self.logged_in("alice")
        bob = self.logged_in("bob")
        alice.protocol.dataReceived(
            b'{"request":"msg","content":"hi","sender":"bob","username":"bob",'
            b'"response":"message","timestamp":"0"}\n'
        )
        self.clock.advance(0)
        [message] = bob.take()
        self.assertEqual(message["sender"], "alice")
        self.assertEqual(self.store.messages[0].sender, "alice")

    def test_no_second_login_under_a_name(self):
        """
        A second connection cannot log in as a name in use, in any case,
        nor send without logging in; a login with a name as content object
        is refused.
        """
        self.logged_in("alice")
        mallory = self.connect(host="10.6.6.6")
        for name in ("alice", "ALICE", " alice ", {"name": "alice"}, ["alice"]):
            mallory.send("login", name)
            self.assertEqual(mallory.take()[0]["response"], "error")
        mallory.send("msg", "I am alice")
        self.clock.advance(0)
        self.assertEqual(mallory.take()[0]["response"], "error")
        self.assertEqual(self.store.messages, [])

    def test_logged_in_cannot_switch(self):
        """
        A logged-in client cannot log in again under another name.
        """
        alice = self.logged_in("alice")
        alice.send("login", "bob")
        self.assertEqual(alice.take()[0]["response"], "error")
        alice.send("msg", "x")
        self.clock.advance(0)
        self.assertEqual(alice.take()[0]["sender"], "alice")


class UnicodeTests(LimitsTestsMixin, TestCase):
    def test_round_trip(self):
        """
        Non-ASCII text, inside and outside the BMP, comes back exactly,
        whatever the chunking of its bytes.
        """
        text = "blåbærsyltetøy ÆØÅ 日本語 😀🎉 𝄞 \u200d é"
        alice = self.logged_in("alice")
        data = encode_request("msg", text)
        for byte in data:
            alice.protocol.dataReceived(bytes([byte]))
        self.clock.advance(0)
        [reply] = alice.take()
        self.assertEqual(reply["content"], text)
        bob = self.connect()
        bob.send("login", "bob")
        history = bob.take()[1]["content"]
        self.assertEqual(json.loads(history[0])["content"], text)

    def test_invalid_utf8(self):
        """
        Invalid UTF-8 gets an error and the connection goes on.
        """
        alice = self.logged_in("alice")
        alice.protocol.dataReceived(b'{"request":"msg","content":"\xff\xfe bad"}\n')
        self.assertEqual(alice.take()[0]["response"], "error")
        alice.send("names")
        self.assertEqual(alice.take()[0]["content"], "alice")

    def test_lone_surrogate(self):
        """
        A lone surrogate written as a JSON escape gets an error; an escaped
        surrogate pair is a real character and is accepted.
        """
        alice = self.logged_in("alice")
        alice.protocol.dataReceived(b'{"request":"msg","content":"a\\ud800b"}\n')
        self.clock.advance(0)
        self.assertEqual(alice.take()[0]["response"], "error")
        alice.protocol.dataReceived(b'{"request":"msg","content":"\\ud83d\\ude00"}\n')
        self.clock.advance(0)
        self.assertEqual(alice.take()[0]["content"], "😀")
        self.assertEqual([m.content for m in self.store.messages], ["😀"])


class OptionsTests(TestCase):
    def test_defaults(self):
        """
        twistd chat has every limit as an option, with the defaults the
        README lists, and they reach the protocol and the core.
        """
        options = Options()
        options.parseOptions([])
        expected = {
            "max-request-size": 65536,
            "max-message-length": 1000,
            "max-username-length": 32,
            "max-connections": 5000,
            "max-connections-per-address": 100,
            "login-timeout": 60,
            "max-send-queue": 262144,
            "flood-rate": 10,
            "flood-burst": 20,
            "max-waiting": 1000,
            "keepalive-idle": 60,
            "keepalive-interval": 10,
            "keepalive-count": 3,
            "max-rooms": 10000,
            "max-rooms-per-user": 50,
        }
        self.assertEqual({k: options[k] for k in expected}, expected)

    def test_passed_through(self):
        """
        Options given on the command line reach the factory and the core.
        """
        options = Options()
        options.parseOptions(
            [
                # A port of its own: the default 9998 may be in use (a server
                # run from this checkout, as README's quick start does).
                "--port=tcp:0:interface=127.0.0.1",
                "--database=:memory:",
                "--max-request-size=100",
                "--max-connections=7",
                "--max-connections-per-address=0",
                "--login-timeout=2.5",
                "--max-send-queue=5000",
                "--flood-rate=0",
                "--flood-burst=3",
                "--max-waiting=9",
                "--keepalive-idle=5",
                "--max-rooms=4",
                "--max-rooms-per-user=2",
            ]
        )
        clock = MemoryReactorClock()
        top = makeService(options, reactor=clock)
        [server] = top.services
        server.startService()
        limits = server.factory.limits
        self.assertEqual(
            (
                limits.max_request_size,
                limits.max_connections,
                limits.max_connections_per_address,
                limits.login_timeout,
                limits.max_send_queue,
                limits.keepalive_idle,
            ),
            (100, 7, 0, 2.5, 5000, 5),
        )
        self.assertEqual(
            (server.chat.limits.flood_rate, server.chat.limits.flood_burst),
            (0, 3),
        )
        self.assertEqual(server.chat.limits.max_waiting, 9)
        self.assertEqual(
            (server.chat.limits.max_rooms, server.chat.limits.max_rooms_per_user), (4, 2)
        )
        peer = Peer(server.factory)
        peer.protocol.dataReceived(b'{"request":"msg","content":"' + b"x" * 200 + b'"}')
        clock.advance(PACING)  # a legacy client: the close waits its turn
        [reply] = peer.take()
        self.assertIn("limit 100", reply["content"])
        self.assertTrue(peer.transport.disconnecting)

    def test_bad_values(self):
        """
        Negative or non-numeric limits are usage errors.
        """
        from twisted.python.usage import UsageError

        for args in (["--max-connections=-1"], ["--login-timeout=x"], ["--max-send-queue=0"]):
            self.assertRaises(UsageError, Options().parseOptions, args)
