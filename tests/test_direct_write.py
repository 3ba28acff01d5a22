"""
Tests of the server's direct socket write (L{ChatServerProtocol._write}):
when Twisted's buffer for a TCP connection is empty, a delivery is sent on
the socket at once. These run the real L{twisted.internet.tcp.Connection}
over a fake socket that takes only part of each send (or nothing, as a full
socket buffer does), and check that every byte arrives once and in order
however the writes, the partial sends and Twisted's own buffering interleave.
"""

import errno
import itertools
import json

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import TestCase

from chat.core.commands import help_text
from chat.core.service import ChatService
from chat.storage import MemoryStore
from chat.transports.tcp import PACING, ChatServerFactory
from chat.wire import encode_request


class PartialSocket:
    """
    A non-blocking socket whose C{send} takes at most the next of
    C{capacities} bytes (0: it would block), and records what it took.
    """

    def __init__(self, capacities):
        self.capacities = itertools.cycle(capacities)
        self.sent = bytearray()
        self.sends = 0
        self.reactor_writing = False  # set while Twisted's doWrite runs
        self.partial_direct = 0  # direct sends (not from doWrite) cut short

    def send(self, data):
        self.sends += 1
        size = next(self.capacities)
        taken = bytes(data[:size])
        if len(taken) < len(data) and not self.reactor_writing:
            self.partial_direct += 1
        if size == 0:
            raise BlockingIOError(errno.EWOULDBLOCK, "would block")
        self.sent += taken
        return len(taken)

    def fileno(self):
        return 99

    def setblocking(self, flag):
        pass

    def setsockopt(self, *args):
        pass


class SocketConnection(tcp.Connection):
    """
    Twisted's TCP connection (the class the direct write looks for) over a
    L{PartialSocket}, with a reactor that only records readers and writers.
    """

    def __init__(self, sock, protocol):
        super().__init__(sock, protocol, MemoryReactor())
        self.connected = True

    def getPeer(self):
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self):
        return IPv4Address("TCP", "127.0.0.1", 9998)

    def flush_once(self):
        """
        What the reactor does when the socket is writable.
        """
        if self.dataBuffer or self._tempDataLen:
            self.socket.reactor_writing = True
            try:
                self.doWrite()
            finally:
                self.socket.reactor_writing = False

    def drain(self):
        while self.dataBuffer or self._tempDataLen:
            self.flush_once()


class DirectWriteTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.service = ChatService(MemoryStore(self.clock), self.clock)
        self.factory = ChatServerFactory(self.service, self.clock)
        sender = self.factory.buildProtocol(None)
        sender.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 1)))
        sender.dataReceived(encode_request("login", "alice"))
        self.sender = sender
        # A reader on an ordinary transport: what every reader must get.
        witness = self.factory.buildProtocol(None)
        self.witness = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.2", 1))
        witness.makeConnection(self.witness)
        witness.dataReceived(encode_request("login", "witness"))

    def reader(self, capacities, legacy=False, caps=None):
        protocol = self.factory.buildProtocol(None)
        sock = PartialSocket(capacities)
        transport = SocketConnection(sock, protocol)
        protocol.makeConnection(transport)
        self.readers = getattr(self, "readers", 0) + 1
        if caps is not None:
            protocol.dataReceived(encode_request("cap", caps))
        login = encode_request("login", f"bob{self.readers}")
        protocol.dataReceived(login.rstrip(b"\n") if legacy else login)
        for _ in range(5):
            self.clock.advance(PACING)
            transport.drain()  # the login's replies
        return protocol, transport, sock

    def messages(self, sock):
        """
        The contents of the message responses the socket took, in order,
        after checking that the stream is made of whole responses and that
        they are byte for byte those a reader on an ordinary transport got:
        a lost, doubled or misplaced byte shows.
        """
        data = bytes(sock.sent)
        self.assertTrue(data.endswith(b"\n"), "the stream ends with a whole response")
        lines = [line for line in data.splitlines() if b'"response":"message"' in line]
        expected = [
            line for line in self.witness.value().splitlines() if b'"response":"message"' in line
        ]
        for i, (got, want) in enumerate(zip(lines, expected)):
            if got != want:  # (a list comparison's diff would take minutes)
                self.fail(f"message {i} differs:\n{got[:300]!r}\n{want[:300]!r}")
        return [json.loads(line)["content"] for line in lines]

    def exercise(self, capacities, size, drain_every, write_every=1):
        """
        Alice sends 300 messages of about C{size} bytes; the reactor gets to
        write to bob's socket once after every C{write_every} of them, and
        to write all it holds after every C{drain_every}, so that
        deliveries arrive while Twisted's buffer is empty (sent directly,
        often only in part), while it holds data it has not tried to send
        yet, and while it holds the rest of a send; then everything is
        written out.
        """
        protocol, transport, sock = self.reader(capacities)
        texts = [f"{i} " + "x" * size for i in range(300)]
        for i, text in enumerate(texts):
            self.sender.dataReceived(encode_request("msg", text))
            self.clock.advance(0)
            if i % write_every == 0:
                transport.flush_once()
            if i % drain_every == 0:
                transport.drain()
        for _ in range(100000):
            if not (transport.dataBuffer or transport._tempDataLen or protocol._queue):
                break
            transport.flush_once()
        got = self.messages(sock)
        self.assertEqual(len(got), len(texts))
        self.assertTrue(got == texts, "every message, in order")
        return protocol, sock

    def test_partial_sends_in_order(self):
        """
        A socket that takes a few bytes of many sends: every byte arrives,
        once, in order, whether a delivery found Twisted's buffer empty
        (and was sent in part directly) or holding an earlier one's rest.
        """
        for drain_every, write_every in ((1, 1), (3, 1), (1000, 1), (4, 2), (6, 3)):
            _, sock = self.exercise([7, 1, 300, 2, 1 << 20], 60, drain_every, write_every)
            if drain_every < 1000:
                self.assertGreater(sock.partial_direct, 10, drain_every)

    def test_blocked_socket_buffers(self):
        """
        A socket that often takes nothing (its buffer is full): what is not
        sent waits in Twisted's buffer and comes out in order.
        """
        _, sock = self.exercise([0, 0, 5000, 0, 13, 1 << 20], 200, 2)
        self.assertGreater(sock.partial_direct, 10)

    def test_legacy_paced_writes_in_order(self):
        """
        A legacy client's paced responses also go straight to the socket
        when Twisted's buffer is empty: with a socket that takes a few
        bytes of many sends, or nothing, every response arrives whole, once
        and in order (message responses and coalesced history responses).
        """
        protocol, transport, sock = self.reader([5, 1 << 20, 0, 3, 1 << 20, 1], legacy=True)
        sock.sent.clear()
        texts = [f"{i:03d} " + "y" * 200 for i in range(120)]
        for i, text in enumerate(texts):
            self.sender.dataReceived(encode_request("msg", text))
            self.clock.advance(0)
            if i % 3 == 0:
                transport.flush_once()
            self.clock.advance(PACING)
        for _ in range(100000):
            if not (transport.dataBuffer or transport._tempDataLen or protocol._queue):
                break
            transport.flush_once()
            self.clock.advance(PACING)
        data = bytes(sock.sent)
        self.assertTrue(data.endswith(b"\n"))
        got = []
        for line in data.splitlines():
            response = json.loads(line)
            if response["response"] == "message":
                got.append(response["content"])
            elif response["response"] == "history":
                got += [json.loads(item)["content"] for item in response["content"]]
        self.assertTrue(got == texts, "every message, once, in order")
        self.assertGreater(sock.partial_direct, 5)

    def test_direct_when_buffer_empty(self):
        """
        With a socket that takes everything, each delivery goes straight
        to the socket (one send each, no reactor write) - the shortcut this
        protects is really taken.
        """
        protocol, transport, sock = self.reader([1 << 20])
        before = sock.sends
        for i in range(10):
            self.sender.dataReceived(encode_request("msg", f"m{i}"))
            self.clock.advance(0)
            self.assertFalse(transport.dataBuffer or transport._tempDataLen)
        self.assertEqual(sock.sends - before, 10)
        self.assertEqual(self.messages(sock), [f"m{i}" for i in range(10)])

    def test_answers_direct_when_buffer_empty(self):
        """
        The answers to a stream client's own requests (the login's, help,
        names) go straight to its socket too when Twisted's buffer is
        empty: one send each, and the reactor is never asked to write (an
        idle connection whose login answer went through Twisted's buffer
        would keep a dictionary of about 800 bytes).
        """
        protocol = self.factory.buildProtocol(None)
        sock = PartialSocket([1 << 20])
        transport = SocketConnection(sock, protocol)
        protocol.makeConnection(transport)
        requests = [("login", "carol"), ("help", None), ("names", None)]
        protocol.dataReceived(b"".join(encode_request(*r) for r in requests))
        self.assertEqual(transport.reactor.getWriters(), [])
        self.assertFalse(transport.dataBuffer or transport._tempDataLen)
        responses = [json.loads(line) for line in bytes(sock.sent).splitlines()]
        self.assertEqual(
            [(r["response"], r["content"]) for r in responses],
            [
                ("info", "Login successful. Welcome, carol!"),
                ("history", []),
                ("info", help_text()),
                ("info", "alice, witness, carol"),
            ],
        )
        self.assertEqual(sock.sends, len(responses))

    def test_answers_and_messages_partial_sends_in_order(self):
        """
        With a socket that takes a few bytes of many sends, a stream
        client's answers to its own requests and the messages broadcast
        between them all arrive whole, once and in the order they were
        sent, whether each found Twisted's buffer empty or not.
        """
        protocol, transport, sock = self.reader([5, 1, 300, 0, 2, 1 << 20])
        sock.sent.clear()
        texts = [f"{i} " + "w" * 40 for i in range(120)]
        expected = []
        for i, text in enumerate(texts):
            self.sender.dataReceived(encode_request("msg", text))
            self.clock.advance(0)
            expected.append(("message", text))
            if i % 4 == 0:
                protocol.dataReceived(encode_request("help", None))
                expected.append(("info", help_text()))
            if i % 3 == 0:
                transport.flush_once()
            if i % 5 == 0:
                transport.drain()  # the next one finds the buffer empty
        transport.drain()
        responses = [json.loads(line) for line in bytes(sock.sent).splitlines()]
        got = [(r["response"], r["content"]) for r in responses]
        self.assertTrue(got == expected, "every response, once, in order")
        self.assertGreater(sock.partial_direct, 10)

    def test_direct_and_partial_sends_with_the_room(self):
        """
        A reader granted the rooms extension gets, on the direct path (a
        socket that takes everything: one send per message) and with
        partial sends alike, every message once, in order, each with its
        room (a broadcast's lines with the room, not the standard ones).
        """
        for capacities in ([1 << 20], [9, 1, 500, 0, 1 << 20]):
            protocol, transport, sock = self.reader(capacities, caps="rooms")
            sock.sent.clear()
            texts = [f"{i} " + "z" * 80 for i in range(200)]
            sends = sock.sends
            for i, text in enumerate(texts):
                self.sender.dataReceived(encode_request("msg", text))
                self.clock.advance(0)
                if i % 2 == 0:
                    transport.flush_once()
            transport.drain()
            if len(capacities) == 1:
                self.assertEqual(sock.sends - sends, len(texts))
            else:
                self.assertGreater(sock.partial_direct, 10)
            responses = [json.loads(line) for line in bytes(sock.sent).splitlines()]
            self.assertTrue([r["content"] for r in responses] == texts, "every message, in order")
            self.assertEqual({r.get("room") for r in responses}, {"lobby"})

    def test_paused_transport_queues(self):
        """
        Messages large enough to fill Twisted's 64 KiB buffer pause the
        protocol's producer; what comes then waits in the protocol's queue
        and follows in order once the socket drains.
        """
        protocol, sock = self.exercise([0, 0, 0, 0, 2000], 900, 1000)
        self.assertFalse(protocol._write_paused)
