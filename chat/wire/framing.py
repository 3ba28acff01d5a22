"""
Framing: a byte stream to JSON values, bounded.

Peers in the field send JSON objects with no delimiter at all, so framing
cannot rely on newlines: L{StreamDecoder} finds where each top-level value
ends, whatever the chunking, following JSON's grammar so that one broken
value never swallows the next, and it is bounded so that no peer can make
it buffer without limit. Server and client both read through it.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from typing import Any, List, Optional, Pattern, Union

#: Default bound on the size of one JSON value, in bytes as they came.
MAX_VALUE_SIZE = 64 * 1024

_WHITESPACE = re.compile(r"[ \t\r\n]*")
# Junk at top level is skipped up to white space or a value; after a broken
# value, up to the next object (the rest of a string cut by a line break
# would otherwise make more errors for one request).
_TOP_LEVEL_JUNK = re.compile(r'[^ \t\r\n{\["]*')
_BROKEN_JUNK = re.compile(r"[^{]*")
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f]*')
_ESCAPES = '"\\/bfnrt'
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_SCALAR_START = frozenset("-0123456789tfnNI")
_SCALAR_RUN = re.compile(r"[A-Za-z0-9.+\-]*")
_SCALAR = re.compile(
    r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null|NaN|-?Infinity"
)

# What the grammar wants next, outside strings; _STRING: inside one.
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE, _STRING = range(7)
_EXPECTED = {
    _VALUE: "expected a value",
    _VALUE_OR_CLOSE: "expected a value or ']'",
    _KEY: "expected a quoted key",
    _KEY_OR_CLOSE: "expected a quoted key or '}'",
    _COLON: "expected ':' after a key",
    _COMMA_OR_CLOSE: "expected ',' or the end of the object or array",
    _STRING: "a raw control character or a bad escape in a string",
}
_BROKEN = -1
# Bytes that were not valid UTF-8 become these lone surrogates under the
# "surrogateescape" error handler; JSON escapes such as "\udc80" do not, as
# they are plain ASCII in the raw text.
_UNDECODABLE = re.compile("[\udc80-\udcff]")

_decoder = json.JSONDecoder()


@dataclass(frozen=True)
class DecodeError:
    """
    Something in the stream that is not a usable JSON value.

    @ivar reason: a sentence for the peer.
    @ivar fatal: the stream cannot go on (the value is over the size bound).
    """

    reason: str
    fatal: bool = False


class StreamDecoder:
    """
    Split a byte stream into JSON values.

    Values may be separated by nothing, by newlines (LF or CRLF) or by any
    JSON whitespace, and may be split across L{feed} calls at any byte.
    Anything that is not a JSON value is reported as a L{DecodeError} and
    skipped, so the values after it are still found.

    A value that is incomplete is waited for only while it can still become
    valid JSON: the scanner follows JSON's grammar, so the first character
    that cannot continue the value (a C{{} where a key, a C{,} or a C{:} is
    due, a raw line break inside a string, ...) ends it as malformed. A
    C{{} that ends a value starts the next one; after any other such
    character everything is skipped up to the next C{{}. So one broken
    request gets one error and never swallows the requests after it, and
    pretty-printed objects over several lines still work.

    @ivar max_size: the bound on one value, in bytes as they came (UTF-8):
        a value over it is a fatal L{DecodeError}.
    @ivar newline_seen: whether a newline has been seen between two values,
        which tells a streaming peer from a legacy one that sends bare JSON.
    """

    # One per connection, most of them idle: slots, not a dictionary.
    __slots__ = (
        "max_size", "newline_seen", "_utf8", "_buffer", "_failed", "_start",
        "_scanned", "_stack", "_expect", "_in_string", "_key", "_junk",
        "_broken_at", "_broken_seen", "_counted", "_counted_bytes",
    )  # fmt: skip

    def __init__(self, max_size: int = MAX_VALUE_SIZE) -> None:
        self.max_size = max_size
        self.newline_seen = False
        # Made when a chunk ends inside a character (or holds bytes that
        # are not UTF-8), and dropped once it holds nothing again.
        self._utf8: Optional[codecs.IncrementalDecoder] = None
        self._buffer = ""
        self._reset_value()
        self._failed = False

    def _reset_value(self) -> None:
        # Where the value being scanned starts (None: between values), how far
        # the scan got, and the grammar's state at that point: the open
        # containers, what is due next, and whether the scan is in a string
        # (and whether that string is a key).
        self._start: Optional[int] = None
        self._scanned = 0
        self._stack: Optional[List[str]] = None  # made when a scan starts
        self._expect = _VALUE
        self._in_string = False
        self._key = False
        # Skipping junk: at top level up to white space, after a broken
        # value up to the next line or object.
        self._junk: Optional[Pattern[str]] = None
        # The bytes of the value being scanned, counted up to _counted
        # (None: not yet), so that a value that arrives in many pieces is
        # encoded once in all, not once per piece (see _waiting_over).
        self._counted: Optional[int] = None
        self._counted_bytes = 0

    @property
    def buffered(self) -> int:
        """
        How many characters are held waiting for the rest of a value.
        """
        return len(self._buffer)

    def feed(self, data: bytes) -> List[Union[Any, DecodeError]]:
        """
        Add bytes to the stream.

        @return: the values completed by these bytes, in order, each either a
            decoded JSON value or a L{DecodeError}. After a fatal error the
            decoder returns nothing more.
        """
        if self._failed:
            return []
        self._buffer += self._decode(data)
        results: List[Union[Any, DecodeError]] = []
        buf = self._buffer
        pos = 0
        while True:
            if self._junk is not None:
                match = self._junk.match(buf, pos)
                assert match is not None
                pos = match.end()
                if pos >= len(buf):
                    break
                self._junk = None
            if self._start is None:
                pos = self._skip_whitespace(buf, pos)
                if pos >= len(buf):
                    break
                char = buf[pos]
                if char not in '{["':
                    self._junk = _TOP_LEVEL_JUNK
                    results.append(DecodeError("Malformed JSON: expected an object"))
                    continue
                if char == "{":
                    # The usual case: a whole object in the buffer.
                    try:
                        value, end = _decoder.raw_decode(buf, pos)
                    except (ValueError, RecursionError):
                        pass
                    else:
                        if self._over(buf, pos, end):
                            return self._fail(results)
                        results.append(self._checked(buf, pos, end, value))
                        pos = end
                        continue
                self._start = self._scanned = pos
                self._stack = []
            end = self._scan(buf)
            if end is None:
                if self._waiting_over(buf):
                    return self._fail(results)
                break
            if end == _BROKEN:
                broken = self._broken_at
                # Bounded by what had to be read to know (as a chunk that
                # ended there would have been while it waited for more).
                if self._over(buf, self._start, self._broken_seen):
                    return self._fail(results)
                results.append(DecodeError(f"Malformed JSON: {_EXPECTED[self._expect]}"))
                self._reset_value()
                # What follows is skipped, up to a "{" (which may be there
                # already: then it starts the next value).
                pos = broken
                self._junk = _BROKEN_JUNK
                continue
            if self._over(buf, self._start, end):
                return self._fail(results)
            try:
                value = json.loads(buf[self._start : end])
            except (ValueError, RecursionError):
                results.append(DecodeError("Malformed JSON"))
            else:
                results.append(self._checked(buf, self._start, end, value))
            pos = end
            self._reset_value()
        # Keep only what is still needed, shifting indices to match.
        keep = self._start if self._start is not None else pos
        keep = min(keep, len(buf))
        self._buffer = buf[keep:]
        if self._start is not None:
            self._start -= keep
            self._scanned -= keep
            if self._counted is not None:
                self._counted -= keep
        return results

    def _decode(self, data: bytes) -> str:
        """
        The text of C{data}: bytes that are not UTF-8 become lone surrogates
        (found by L{_checked}), and a character cut at the end of a chunk
        waits for the rest of it in the next.
        """
        utf8 = self._utf8
        if utf8 is None:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                utf8 = self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        text = utf8.decode(data)
        if not utf8.getstate()[0]:
            self._utf8 = None  # nothing held back
        return text

    def _checked(self, buf: str, start: int, end: int, value: Any) -> Any:
        if _UNDECODABLE.search(buf, start, end):
            return DecodeError("Invalid UTF-8 in request")
        return value

    def _over(self, buf: str, start: int, end: int) -> bool:
        """
        Whether C{buf[start:end]} is over the bound, counted in UTF-8 bytes
        as it came (a byte that was not UTF-8 is one character, and one
        byte, of the buffer). Text all ASCII (which Python knows without
        looking), or too short to be over at four bytes a character, is
        not encoded to count.
        """
        chars = end - start
        if chars > self.max_size:
            return True
        if buf.isascii() or 4 * chars <= self.max_size:
            return False
        return len(buf[start:end].encode("utf-8", "surrogateescape")) > self.max_size

    def _waiting_over(self, buf: str) -> bool:
        """
        Whether the value still arriving (from C{self._start} to the end of
        C{buf}) is over the bound: as L{_over}, but counting only what came
        since the last count.
        """
        start = self._start
        assert start is not None
        chars = len(buf) - start
        if chars > self.max_size:
            return True
        if buf.isascii() or 4 * chars <= self.max_size:
            return False
        counted = self._counted
        if counted is None:
            counted, self._counted_bytes = start, 0
        self._counted_bytes += len(buf[counted:].encode("utf-8", "surrogateescape"))
        self._counted = len(buf)
        return self._counted_bytes > self.max_size

    def _fail(self, results: List[Union[Any, DecodeError]]) -> List[Union[Any, DecodeError]]:
        self._failed = True
        self._buffer = ""
        results.append(DecodeError(f"Request too large (limit {self.max_size} bytes)", fatal=True))
        return results

    def _skip_whitespace(self, buf: str, pos: int) -> int:
        match = _WHITESPACE.match(buf, pos)
        assert match is not None
        end = match.end()
        if not self.newline_seen and "\n" in buf[pos:end]:
            self.newline_seen = True
        return end

    def _scan(self, buf: str) -> Optional[int]:
        """
        Continue scanning the current value by JSON's grammar.

        @return: the value's end; None if the buffer ends first (the state is
            kept for the next call); or L{_BROKEN}, with C{self._broken_at}
            the first character that cannot continue the value,
            C{self._broken_seen} how far the scan had to wait to know it, and
            C{self._expect} what was due there.
        """
        i = self._scanned
        length = len(buf)
        stack = self._stack
        assert stack is not None
        expect = self._expect
        while True:
            if self._in_string:
                match = _STRING_RUN.match(buf, i)
                assert match is not None
                i = match.end()
                if i >= length:
                    break
                char = buf[i]
                if char == '"':
                    self._in_string = False
                    i += 1
                    if self._key:
                        expect = _COLON
                        continue
                elif char == "\\":
                    if i + 1 >= length:
                        break
                    escape = buf[i + 1]
                    if escape in _ESCAPES:
                        i += 2
                        continue
                    if escape == "u":
                        if i + 6 > length:
                            break
                        if _HEX4.match(buf, i + 2):
                            i += 6
                            continue
                        return self._broken(i, _STRING, i + 5)
                    return self._broken(i, _STRING, i + 1)
                else:
                    return self._broken(i, _STRING)  # a raw control character
            else:
                match = _WHITESPACE.match(buf, i)
                assert match is not None
                i = match.end()
                if i >= length:
                    break
                char = buf[i]
                if expect == _VALUE or expect == _VALUE_OR_CLOSE:
                    if char == "{":
                        stack.append("{")
                        expect = _KEY_OR_CLOSE
                        i += 1
                        continue
                    if char == "[":
                        stack.append("[")
                        expect = _VALUE_OR_CLOSE
                        i += 1
                        continue
                    if char == '"':
                        self._in_string, self._key = True, False
                        i += 1
                        continue
                    if char == "]" and expect == _VALUE_OR_CLOSE:
                        stack.pop()
                        i += 1
                    elif char in _SCALAR_START:
                        match = _SCALAR_RUN.match(buf, i)
                        assert match is not None
                        if match.end() >= length:
                            break  # the number or word may go on
                        if not _SCALAR.fullmatch(buf, i, match.end()):
                            return self._broken(i, expect, match.end())
                        i = match.end()
                    else:
                        return self._broken(i, expect)
                elif expect == _KEY or expect == _KEY_OR_CLOSE:
                    if char == '"':
                        self._in_string, self._key = True, True
                        i += 1
                        continue
                    if char != "}" or expect != _KEY_OR_CLOSE:
                        return self._broken(i, expect)
                    stack.pop()
                    i += 1
                elif expect == _COLON:
                    if char != ":":
                        return self._broken(i, expect)
                    expect = _VALUE
                    i += 1
                    continue
                else:
                    top = stack[-1]
                    if char == ",":
                        expect = _KEY if top == "{" else _VALUE
                        i += 1
                        continue
                    if not (char == "}" and top == "{" or char == "]" and top == "["):
                        return self._broken(i, expect)
                    stack.pop()
                    i += 1
            # A value ended at i: the whole one, or one inside a container.
            if not stack:
                return i
            expect = _COMMA_OR_CLOSE
        self._scanned = i
        self._expect = expect
        return None

    def _broken(self, at: int, expect: int, seen: Optional[int] = None) -> int:
        self._broken_at = at
        self._broken_seen = at if seen is None else seen
        self._expect = expect
        return _BROKEN
