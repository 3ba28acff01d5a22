"""
Tests for L{chat.wire}: the stream decoder, request parsing and response
encoding.
"""

import json

from twisted.trial.unittest import TestCase

from chat.wire import (
    DecodeError,
    Request,
    StreamDecoder,
    encode_request,
    encode_response,
    format_timestamp,
    parse_request,
)

# A stream mixing every way clients in the field separate their requests,
# with a non-ASCII name, an escaped quote and braces inside a string.
MIXED = (
    b'{"request":"login","content":"bob"}'
    b'{"request": "msg", "content": "hi \\" } { \xc3\xa6 \xf0\x9f\x98\x80"}\n'
    b'{"request":"names","content":null}\r\n'
    b'  \t{"request":"help"}'
    b'{\n  "request": "logout",\n  "content": ""\n}\n'
)
MIXED_VALUES = [
    {"request": "login", "content": "bob"},
    {"request": "msg", "content": 'hi " } { \xe6 \U0001f600'},
    {"request": "names", "content": None},
    {"request": "help"},
    {"request": "logout", "content": ""},
]


def feed_in_chunks(data, size, decoder=None):
    """
    Feed C{data} to a decoder C{size} bytes at a time; return all it gave.
    """
    decoder = decoder or StreamDecoder()
    out = []
    for i in range(0, len(data), size):
        out.extend(decoder.feed(data[i : i + size]))
    return out


class StreamDecoderTests(TestCase):
    def test_every_chunking(self):
        """
        The same values come out whatever the sizes of the pieces the stream
        arrives in, from one byte at a time up to all at once.
        """
        for size in range(1, len(MIXED) + 1):
            self.assertEqual(feed_in_chunks(MIXED, size), MIXED_VALUES, f"chunk size {size}")

    def test_bare_objects_back_to_back(self):
        """
        Objects with nothing between them, as every client in the field
        sends, are split correctly and no newline is recorded.
        """
        decoder = StreamDecoder()
        data = b"".join(
            json.dumps({"request": "msg", "content": str(i)}).encode() for i in range(50)
        )
        values = decoder.feed(data)
        self.assertEqual([v["content"] for v in values], [str(i) for i in range(50)])
        self.assertFalse(decoder.newline_seen)

    def test_newline_seen(self):
        """
        A newline between values marks the peer as a streaming one.
        """
        decoder = StreamDecoder()
        decoder.feed(b'{"request":"help"}')
        self.assertFalse(decoder.newline_seen)
        decoder.feed(b"\r\n")
        self.assertTrue(decoder.newline_seen)

    def test_newline_inside_object_not_counted(self):
        """
        Newlines inside a pretty-printed object do not make a stream peer.
        """
        decoder = StreamDecoder()
        self.assertEqual(decoder.feed(b'{\n"request":\n"help"\n}'), [{"request": "help"}])
        self.assertFalse(decoder.newline_seen)

    def test_partial_waits(self):
        """
        An incomplete object yields nothing until the rest arrives, and a
        partial UTF-8 sequence is held too.
        """
        decoder = StreamDecoder()
        self.assertEqual(decoder.feed(b'{"request":"msg","content":"\xc3'), [])
        self.assertEqual(decoder.feed(b'\xa6"}'), [{"request": "msg", "content": "\xe6"}])
        self.assertEqual(decoder.buffered, 0)

    def test_malformed_is_skipped(self):
        """
        Malformed JSON gives one error and the decoder finds the next
        object, whatever the chunking.
        """
        data = b'{"request": nope}{"request":"help"}'
        for size in range(1, len(data) + 1):
            out = feed_in_chunks(data, size)
            self.assertEqual(len(out), 2)
            self.assertIsInstance(out[0], DecodeError)
            self.assertFalse(out[0].fatal)
            self.assertEqual(out[1], {"request": "help"})

    def test_junk_between_objects(self):
        """
        Bare words or numbers at top level give one error per run, then
        decoding carries on.
        """
        data = b'hello 42 {"request":"help"}'
        for size in range(1, len(data) + 1):
            out = feed_in_chunks(data, size)
            self.assertEqual(
                [type(v) for v in out], [DecodeError, DecodeError, dict], f"chunk size {size}"
            )

    def test_non_objects_are_values(self):
        """
        Arrays and strings are decoded as values (parse_request rejects them).
        """
        self.assertEqual(StreamDecoder().feed(b'[1, "]"] "x}"'), [[1, "]"], "x}"])

    def test_cut_and_invalid_utf8_every_chunking(self):
        """
        Characters cut at any byte, before and after bytes that are not
        UTF-8 and a sequence cut short for good: whatever the chunking,
        each object decodes as it does whole. (The decoder decodes a chunk
        at once unless one ends inside a character, and keeps no
        incremental decoder between chunks that end cleanly.)
        """
        data = (
            b'{"request":"msg","content":"\xf0\x9f\x98\x80 \xc3\xa6"}'
            b'{"request":"msg","content":"\xf0\x9f x"}'
            b'{"request":"msg","content":"\xe2\x82\xac \xff"}'
            b'{"request":"msg","content":"\xf0\x9f\x98\x80"}{"request":"help"}'
        )
        whole = StreamDecoder().feed(data)
        self.assertEqual(whole[0], {"request": "msg", "content": "\U0001f600 \xe6"})
        self.assertIsInstance(whole[1], DecodeError)
        self.assertIsInstance(whole[2], DecodeError)
        self.assertEqual(
            whole[3:], [{"request": "msg", "content": "\U0001f600"}, {"request": "help"}]
        )
        for size in range(1, 12):
            decoder = StreamDecoder()
            self.assertEqual(feed_in_chunks(data, size, decoder), whole, f"chunk size {size}")
            self.assertEqual(decoder.buffered, 0)

    def test_invalid_utf8(self):
        """
        Bytes that are not UTF-8 make an error for the object holding them;
        the next object is still decoded.
        """
        data = b'{"request":"msg","content":"\xff\xfe"}{"request":"help"}'
        for size in (1, 3, len(data)):
            out = feed_in_chunks(data, size)
            self.assertIsInstance(out[0], DecodeError)
            self.assertIn("UTF-8", out[0].reason)
            self.assertEqual(out[1], {"request": "help"})

    def test_oversize_incomplete(self):
        """
        A value that grows past the bound without ending is a fatal error,
        and the decoder then holds nothing and yields nothing more.
        """
        decoder = StreamDecoder(max_size=100)
        self.assertEqual(decoder.feed(b'{"request":"msg","content":"' + b"x" * 50), [])
        out = decoder.feed(b"x" * 60)
        self.assertEqual(len(out), 1)
        self.assertTrue(out[0].fatal)
        self.assertIn("100", out[0].reason)
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decoder.feed(b'{"request":"help"}'), [])

    def test_oversize_complete(self):
        """
        A complete value over the bound, arriving at once, is fatal too,
        after the values before it.
        """
        decoder = StreamDecoder(max_size=100)
        out = decoder.feed(b'{"request":"help"}{"x":"' + b"y" * 200 + b'"}')
        self.assertEqual(out[0], {"request": "help"})
        self.assertTrue(out[1].fatal)

    def test_bound_counts_bytes(self):
        """
        The bound is in bytes as they came on the wire, as the error says:
        a request of 60 two-byte characters (120 bytes) is over a bound of
        100 whatever the chunking, whole or still arriving; one of exactly
        100 bytes is not.
        """
        over = '{"a":"'.encode() + "\u00e9".encode() * 60 + b'"}'
        for data in (over, over[:-2]):
            for size in (1, 2, 7, len(data)):
                out = feed_in_chunks(data, size, StreamDecoder(max_size=100))
                self.assertEqual(len(out), 1, f"{len(data)} bytes, chunk size {size}")
                self.assertTrue(out[0].fatal, f"{len(data)} bytes, chunk size {size}")
                self.assertEqual(out[0].reason, "Request too large (limit 100 bytes)")
        exact = '{"a":"'.encode() + "\u00e9".encode() * 46 + b'"}'
        self.assertEqual(len(exact), 100)
        for size in (1, 3, len(exact)):
            out = feed_in_chunks(exact, size, StreamDecoder(max_size=100))
            self.assertEqual(out, [{"a": "\u00e9" * 46}], f"chunk size {size}")

    def test_broken_past_the_bound_every_chunking(self):
        """
        A value found broken only by characters past the bound (a bare word,
        a bad escape running over it) is too large whatever the chunking,
        not malformed when it arrives at once and too large in pieces.
        """
        for data in (
            b'{"a":' + b"n" * 200 + b"}",
            b'{"a":"' + b"x" * 91 + b'\\u00zz"}',
            b'{"a":"' + b"x" * 94 + b'\\q"}',
        ):
            for size in range(1, len(data) + 1):
                out = feed_in_chunks(data, size, StreamDecoder(max_size=100))
                self.assertEqual(len(out), 1, f"{data[-10:]!r} chunk size {size}")
                self.assertTrue(out[0].fatal, f"{data[-10:]!r} chunk size {size}")

    def test_unterminated_string_bounded(self):
        """
        An endless string, or endless nesting, cannot make the buffer grow
        past the bound.
        """
        for start, filler in ((b'{"a":"', b"z"), (b"[" * 10, b"["), (b"[", b"1,"), (b'"', b"z")):
            decoder = StreamDecoder(max_size=1000)
            out = decoder.feed(start)
            for _ in range(100):
                out += decoder.feed(filler * 50)
                self.assertLessEqual(decoder.buffered, 1000 + 100)
            self.assertTrue(out and out[-1].fatal)

    def test_deep_nesting(self):
        """
        Nesting deeper than the JSON parser may recurse (which depends on the
        Python version) is an error or a value, never a crash, and the next
        request is still found.
        """
        depth = 30000
        out = StreamDecoder().feed(b"[" * depth + b"]" * depth + b'{"request":"help"}')
        self.assertEqual(len(out), 2)
        if not isinstance(out[0], DecodeError):
            self.assertIsInstance(out[0], list)
        self.assertEqual(out[1], {"request": "help"})

    def test_escaped_backslash_at_chunk_end(self):
        """
        A backslash escape split across chunks is scanned correctly.
        """
        data = b'{"request":"msg","content":"a\\\\"}{"request":"help"}'
        for size in range(1, len(data) + 1):
            self.assertEqual(
                feed_in_chunks(data, size),
                [{"request": "msg", "content": "a\\"}, {"request": "help"}],
            )

    def test_broken_object_does_not_swallow_the_next(self):
        """
        An object broken off after a key's value (where a key is due, a
        C{{} cannot continue it) is reported at once, and the request on
        the next line is decoded, whatever the chunking.
        """
        data = b'{"request": "login", \n{"request": "help", "content": null}\n'
        for size in range(1, len(data) + 1):
            out = feed_in_chunks(data, size)
            self.assertEqual(len(out), 2, f"chunk size {size}")
            self.assertIsInstance(out[0], DecodeError)
            self.assertIn("expected a quoted key", out[0].reason)
            self.assertEqual(out[1], {"request": "help", "content": None})

    def test_broken_where_comma_or_colon_due(self):
        """
        A C{{} where a C{,} or a C{:} is due also ends the broken value and
        starts the next one.
        """
        for broken in (b'{"request": "msg", "content": "x"', b'{"request"'):
            out = StreamDecoder().feed(broken + b'\n{"request":"names"}')
            self.assertIsInstance(out[0], DecodeError, broken)
            self.assertEqual(out[1:], [{"request": "names"}], broken)

    def test_line_break_inside_string_ends_value(self):
        """
        A string cut off by the end of its line (a raw line break, which
        JSON forbids inside strings) ends the value, and the next line is
        read afresh, even when it does not start with an object.
        """
        out = StreamDecoder().feed(b'{"request": "msg", "content": "abc\n  {"request":"help"}')
        self.assertEqual(len(out), 2)
        self.assertIn("control character", out[0].reason)
        self.assertEqual(out[1], {"request": "help"})

    def test_line_break_in_string_one_error(self):
        """
        A request whose string a raw line break cuts in two gets one error,
        not one for each piece of its rest.
        """
        out = StreamDecoder().feed(b'{"request":"msg","content":"line one\nline two"}\n')
        self.assertEqual(len(out), 1)
        self.assertIsInstance(out[0], DecodeError)

    def test_rest_of_broken_line_skipped(self):
        """
        After the character that breaks a value, the rest of its line is
        skipped with no further errors.
        """
        out = StreamDecoder().feed(b'{"request": nope, more junk]}\n{"request":"help"}')
        self.assertEqual([type(v) for v in out], [DecodeError, dict])

    def test_pretty_printed_after_compact(self):
        """
        A pretty-printed object spread over lines still decodes after
        newline-terminated compact ones.
        """
        data = b'{"request":"help"}\n{\n  "request": [\n    1,\n    {"a": null}\n  ]\n}\n'
        for size in range(1, len(data) + 1):
            self.assertEqual(
                feed_in_chunks(data, size),
                [{"request": "help"}, {"request": [1, {"a": None}]}],
                f"chunk size {size}",
            )

    def test_scalars_split_anywhere(self):
        """
        Numbers and literals inside a value are waited for while the buffer
        ends inside them, so no chunking breaks them.
        """
        data = b'{"a": -12.5e+3, "b": [true, false, null, NaN, -Infinity], "c": "\\u00e6"}'
        expected = json.loads(data)
        for size in range(1, len(data) + 1):
            out = feed_in_chunks(data, size)
            self.assertEqual(len(out), 1)
            self.assertEqual(json.dumps(out[0]), json.dumps(expected), f"chunk size {size}")


class ParseRequestTests(TestCase):
    def test_request(self):
        """
        A well-formed object gives a Request with a lower-cased word.
        """
        self.assertEqual(parse_request({"request": "MSG", "content": "hi"}), Request("msg", "hi"))

    def test_missing_content(self):
        """
        A missing content is None.
        """
        self.assertEqual(parse_request({"request": "names"}), Request("names", None))

    def test_bad_shapes(self):
        """
        Non-objects, a missing request and a non-string request are errors
        with distinct texts.
        """
        reasons = set()
        for value in ([1], "help", 3, None, {"content": "x"}, {"request": 5}, {"request": None}):
            result = parse_request(value)
            self.assertIsInstance(result, DecodeError, value)
            reasons.add(result.reason)
        self.assertEqual(len(reasons), 3)

    def test_lone_surrogate(self):
        """
        Content with a lone surrogate (from a JSON escape) cannot be sent on,
        so it is refused here.
        """
        value = json.loads('{"request":"msg","content":"\\ud800"}')
        self.assertIsInstance(parse_request(value), DecodeError)

    def test_decode_error_passes_through(self):
        """
        A decoder error is returned as it is.
        """
        error = DecodeError("Malformed JSON")
        self.assertIs(parse_request(error), error)


class EncodeTests(TestCase):
    def test_response(self):
        """
        A response is compact UTF-8 JSON with exactly four keys and one
        trailing newline.
        """
        data = encode_response("2026-01-01T00:00:00Z", "alice", "message", "h\xe6 \U0001f600")
        self.assertTrue(data.endswith(b"}\n"))
        self.assertEqual(data.count(b"\n"), 1)
        self.assertNotIn(b": ", data)
        self.assertIn("h\xe6 \U0001f600".encode("utf-8"), data)
        self.assertEqual(
            json.loads(data),
            {
                "timestamp": "2026-01-01T00:00:00Z",
                "sender": "alice",
                "response": "message",
                "content": "h\xe6 \U0001f600",
            },
        )

    def test_line_separators_escaped(self):
        """
        Every character that str.splitlines() ends a line at is escaped in
        a response and in a request, so each is one line for any reader,
        and decodes back to the same text.
        """
        text = "".join(chr(c) for c in range(0x2030) if len(("a" + chr(c) + "b").splitlines()) > 1)
        self.assertIn("\u2028", text)
        for data in (encode_response("t", "s", "message", text), encode_request("msg", text)):
            self.assertEqual(len(data.decode("utf-8").splitlines()), 1)
            self.assertEqual(json.loads(data)["content"], text)

    def test_request(self):
        """
        A request is compact JSON and a newline, with null content allowed.
        """
        self.assertEqual(encode_request("names", None), b'{"request":"names","content":null}\n')

    def test_timestamp_is_string(self):
        """
        Timestamps are ISO 8601 strings in UTC.
        """
        self.assertEqual(format_timestamp(0), "1970-01-01T00:00:00Z")
        self.assertEqual(format_timestamp(1700000000.9), "2023-11-14T22:13:20Z")
