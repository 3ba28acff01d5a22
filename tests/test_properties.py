"""
Property-based tests (hypothesis) of the stream decoder and of request
handling: random bytes, random JSON values, random chunkings. No exception
may escape, and every complete valid request gets exactly the responses a
simple model of the standard predicts.
"""

import json
import os
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from chat.core.limits import Limits
from chat.core.service import ChatService
from chat.storage import MemoryStore
from chat.testing import FakeClient
from chat.transports.tcp import ChatServerFactory, ConnectionLimits
from chat.wire import DecodeError, Request, StreamDecoder, encode_json, parse_request
from tests.test_docs import EXTENSION_KEYS

#: CHAT_HYPOTHESIS_EXAMPLES=5000 for a deeper search than the suite's.
SETTINGS = settings(
    max_examples=int(os.environ.get("CHAT_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
separators = st.sampled_from(["", "\n", "\r\n", " ", "\t\n ", "\n\n"])
junk = st.text(alphabet="abcxyz0123456789}]:,.-+", min_size=1, max_size=10)


def chunked(data: bytes, cuts):
    """
    C{data} split at the positions C{cuts} (taken modulo its length).
    """
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


def feed_all(decoder, chunks):
    out = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


class DecoderProperties(TestCase):
    @SETTINGS
    @given(st.binary(max_size=300), st.lists(st.integers(min_value=0), max_size=20))
    def test_random_bytes(self, data, cuts):
        """
        Random bytes, chunked at random, never raise, and give the same
        values and errors as the same bytes in one piece.
        """
        whole = StreamDecoder(max_size=64).feed(data)
        pieces = feed_all(StreamDecoder(max_size=64), chunked(data, cuts))
        self.assertEqual(pieces, whole)
        for value in pieces:
            parse_request(value)  # never raises

    @SETTINGS
    @given(
        st.lists(st.tuples(json_objects, separators), max_size=8),
        st.lists(st.integers(min_value=0), max_size=30),
    )
    def test_objects_any_framing(self, items, cuts):
        """
        JSON objects, bare or separated by any whitespace, chunked at any
        byte, come out exactly as they went in (non-ASCII included).
        """
        data = "".join(encode_json(obj) + sep for obj, sep in items).encode("utf-8")
        out = feed_all(StreamDecoder(), chunked(data, cuts))
        self.assertEqual(out, [obj for obj, _ in items])

    @SETTINGS
    @given(
        st.lists(st.one_of(json_objects, junk), max_size=8),
        st.lists(st.integers(min_value=0), max_size=30),
    )
    def test_junk_between(self, items, cuts):
        """
        Junk between objects is reported as errors and skipped; every object
        after it is still found.
        """
        data = " ".join(
            encode_json(item) if isinstance(item, dict) else item for item in items
        ).encode("utf-8")
        out = feed_all(StreamDecoder(), chunked(data, cuts))
        self.assertEqual(
            [v for v in out if not isinstance(v, DecodeError)],
            [item for item in items if isinstance(item, dict)],
        )
        self.assertEqual(
            sum(isinstance(v, DecodeError) for v in out),
            sum(not isinstance(item, dict) for item in items),
        )

    @SETTINGS
    @given(
        json_objects.filter(bool),
        st.integers(min_value=1),
        st.lists(st.integers(min_value=0), max_size=20),
    )
    def test_broken_prefix_never_wedges(self, obj, cut, cuts):
        """
        An object cut off anywhere, then two requests on lines of their own:
        the cut object is reported as an error and the last request is
        always decoded (the first may become part of the broken value where
        a value was due), whatever the chunking.
        """
        text = encode_json(obj)
        broken = text[: 1 + cut % (len(text) - 1)]
        data = (broken + '\n{"request":"help"}\n{"request":"names"}\n').encode("utf-8")
        out = feed_all(StreamDecoder(), chunked(data, cuts))
        self.assertIsInstance(out[0], DecodeError)
        self.assertEqual(out[-1], {"request": "names"})

    @SETTINGS
    @given(st.integers(min_value=10, max_value=200), st.binary(min_size=1, max_size=50))
    def test_bounded(self, limit, filler):
        """
        However a string is fed, the decoder holds at most about its bound
        (plus one chunk) and then fails for good. (Quotes, backslashes and
        control characters are taken out: they end the string or break it.)
        """
        decoder = StreamDecoder(max_size=limit)
        filler = bytes(b if b >= 0x20 and b not in b'"\\' else 0x78 for b in filler)
        out = decoder.feed(b'["')
        for _ in range(100):
            out.extend(decoder.feed(filler * 5))
            self.assertLessEqual(decoder.buffered, limit + 5 * len(filler) + 2)
        self.assertEqual(len(out), 1)
        self.assertTrue(out[0].fatal)


# A model of the standard, to predict the responses of the core.

VALID_NAME = re.compile(r"[A-Za-z0-9]+")

words = st.sampled_from(
    ["login", "LOGIN", "logout", "msg", "Msg", "names", "help", "bogus", "", " help "]
)
contents = st.one_of(
    st.none(),
    st.sampled_from(["alice", "bob", "Alice", "al ice", "æøå", "", "None", " x ", "a" * 40]),
    st.text(max_size=12),
    st.integers(),
    st.lists(st.integers(), max_size=2),
    st.just("y" * 1001),
)
requests = st.lists(st.tuples(st.integers(0, 2), words, contents), max_size=25)


class Model:
    """
    What the standard says each request gets: a list of (client, response,
    content or None) for each request.
    """

    def __init__(self, count):
        self.names = [None] * count
        self.gone = [False] * count
        self.order = []  # names in the order they logged in

    def expect(self, who, word, content):
        word = word.strip().lower()
        name = self.names[who]
        known = {"login", "logout", "msg", "names", "help"}
        if word not in known:
            return [(who, "error", None)]
        if word in ("logout", "msg", "names") and name is None:
            return [(who, "error", None)]
        if word == "help":
            return [(who, "info", None)]
        if word == "names":
            return [(who, "info", ", ".join(self.order))]
        if word == "logout":
            self.order.remove(name)
            self.names[who] = None
            self.gone[who] = True
            return [(who, "info", "Logged out")]
        if word == "login":
            if name is not None or not isinstance(content, str):
                return [(who, "error", None)]
            wanted = content.strip()
            if (
                not wanted
                or len(wanted) > 32
                or not VALID_NAME.fullmatch(wanted)
                or wanted.lower() in [n.lower() for n in self.names if n]
            ):
                return [(who, "error", None)]
            self.names[who] = wanted
            self.order.append(wanted)
            return [(who, "info", None), (who, "history", None)]
        # msg
        if not isinstance(content, str) or not content.strip() or len(content) > 1000:
            return [(who, "error", None)]
        return [(i, "message", content) for i, n in enumerate(self.names) if n]


NO_FLOOD_CONTROL = Limits()


class RequestProperties(TestCase):
    @SETTINGS
    @given(requests)
    def test_core_matches_model(self, sequence):
        """
        Any sequence of requests from three clients gets exactly the
        responses the model of the standard predicts, in order, and a
        message's sender is always who sent it.
        """
        clock = Clock()
        service = ChatService(MemoryStore(clock), clock)
        clients = [FakeClient() for _ in range(3)]
        sessions = [service.connect(c) for c in clients]
        model = Model(3)
        for who, word, content in sequence:
            if model.gone[who]:
                continue
            expected = model.expect(who, word, content)
            sender = model.names[who]
            for c in clients:
                c.events = []
            sessions[who].receive(Request(word.strip().lower(), content))
            clock.advance(0)
            got = []
            for i, c in enumerate(clients):
                for data in c.raw:
                    r = json.loads(data)
                    self.assertEqual(set(r), {"timestamp", "sender", "response", "content"})
                    self.assertIsInstance(r["timestamp"], str)
                    if r["response"] == "message":
                        self.assertEqual(r["sender"], sender)
                    else:
                        self.assertEqual(r["sender"], "server")
                    got.append((i, r["response"], r["content"]))
            want = sorted(expected, key=lambda e: e[0])
            self.assertEqual(
                [(i, resp) for i, resp, _ in sorted(got, key=lambda g: g[0])],
                [(i, resp) for i, resp, _ in want],
            )
            for (_, _, have), (_, _, should) in zip(sorted(got, key=lambda g: g[0]), want):
                if should is not None:
                    self.assertEqual(have, should)
            if model.gone[who]:
                self.assertTrue(clients[who].disconnected)
                sessions[who].lost()

    @SETTINGS
    @given(
        st.lists(st.tuples(words, contents), max_size=12),
        st.lists(st.integers(min_value=0), max_size=40),
        st.sampled_from(["\n", "\r\n", " \n"]),
    )
    def test_chunking_does_not_matter(self, sequence, cuts, sep):
        """
        Over a real protocol, the same requests chunked at random get the
        same responses as the requests fed one by one.
        """
        data = "".join(encode_json({"request": w, "content": c}) + sep for w, c in sequence).encode(
            "utf-8"
        )
        one_by_one = self._serve([data])
        random_chunks = self._serve(chunked(data, cuts))
        self.assertEqual(random_chunks, one_by_one)

    @SETTINGS
    @given(
        st.lists(st.tuples(words, contents), max_size=30),
        st.lists(st.integers(min_value=0), max_size=10),
    )
    def test_flood_control_loses_nothing(self, sequence, cuts):
        """
        With flood control, any requests get the same responses, in the same
        order, as without it: they are only delayed.
        """
        data = "".join(
            encode_json({"request": w, "content": c}) + "\n" for w, c in sequence
        ).encode("utf-8")
        free = self._serve([data])
        slowed = self._serve(chunked(data, cuts), Limits(flood_rate=100, flood_burst=3))
        self.assertEqual(slowed, free)

    @SETTINGS
    @given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=20))
    @example(b'{"request":"cap","":""}', [])
    @example(b'{"request":"cap","content":"rooms"}{"request":"login","content":"a"}'
             b'{"request":"msg","content":"x"}{"request":"rooms"}', [7])  # fmt: skip
    def test_garbage_never_raises(self, data, cuts):
        """
        Random bytes to the server protocol raise nothing, and everything it
        writes is a well-formed response: the standard's four keys, and
        extension keys after them only once a cap request was answered.
        """
        self._serve(chunked(data, cuts))

    def _serve(self, chunks, limits=NO_FLOOD_CONTROL):
        clock = Clock()
        clock.advance(1700000000)
        service = ChatService(MemoryStore(clock), clock, limits=limits)
        factory = ChatServerFactory(service, clock, ConnectionLimits(max_request_size=300))
        transport = StringTransport()
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
            clock.advance(0)
        for _ in range(200):
            clock.advance(0.01)  # let paced and flood-delayed responses out
        out = []
        granted = False  # (random bytes may hold a cap request: then, and
        # only from its answer on, extension keys may follow the four)
        for line in transport.value().splitlines():
            r = json.loads(line)
            granted = granted or (r["response"] == "info" and "caps" in r)
            keys = list(r)
            self.assertEqual(keys[:4], ["timestamp", "sender", "response", "content"])
            if granted:
                self.assertLessEqual(set(keys[4:]), EXTENSION_KEYS)
            else:
                self.assertEqual(len(keys), 4)
            self.assertIsInstance(r["timestamp"], str)
            out.append((r["response"], r["content"]))
        protocol.connectionLost(None)
        return out
