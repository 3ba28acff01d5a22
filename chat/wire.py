"""
The wire format of the KTN chat protocol: bytes to JSON values and back.

Message catalogue (see PROTOCOL.md, sections 2 and 3)::

    request   {"request": "login"|"logout"|"msg"|"names"|"help"|..., "content": ...}
    response  {"timestamp": str, "sender": str, "response": "error"|"info"
               |"message"|"history", "content": ...}

This module is the single decode point and the single encode point of the
project; both the server and the client use it.

- L{StreamDecoder} splits a byte stream into JSON values. Peers in the field
  send objects with no delimiter at all, so framing cannot rely on newlines:
  the decoder finds where each top-level value ends, whatever the chunking,
  and it is bounded so that no peer can make it buffer without limit.
- L{parse_request} turns one decoded value into a L{Request} or says why it
  cannot.
- L{encode_response} builds every response the server sends: compact JSON,
  UTF-8, exactly four keys, a string timestamp and one trailing newline.
"""

from __future__ import annotations

import codecs
import json
import re
import time
from dataclasses import dataclass
from typing import Any, List, Optional, Union

#: Default bound on the size of one JSON value (in characters).
MAX_VALUE_SIZE = 64 * 1024

_WHITESPACE = re.compile(r"[ \t\r\n]*")
_STRUCTURE = re.compile(r'["{}\[\]]')
_STRING_STOP = re.compile(r'["\\]')
_JUNK = re.compile(r'[^ \t\r\n{\["]*')
# Bytes that were not valid UTF-8 become these lone surrogates under the
# "surrogateescape" error handler; JSON escapes such as "\udc80" do not, as
# they are plain ASCII in the raw text.
_UNDECODABLE = re.compile("[\udc80-\udcff]")

_decoder = json.JSONDecoder()
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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

    @ivar newline_seen: whether a newline has been seen between two values,
        which tells a streaming peer from a legacy one that sends bare JSON.
    """

    def __init__(self, max_size: int = MAX_VALUE_SIZE) -> None:
        self.max_size = max_size
        self.newline_seen = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._buffer = ""
        self._reset_value()
        self._failed = False

    def _reset_value(self) -> None:
        # Where the value being scanned starts (None: between values), how far
        # the scan got, and the scanner's state at that point.
        self._start: Optional[int] = None
        self._scanned = 0
        self._depth = 0
        self._in_string = False
        self._in_junk = False

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
        self._buffer += self._utf8.decode(data)
        results: List[Union[Any, DecodeError]] = []
        buf = self._buffer
        pos = 0
        while True:
            if self._start is None:
                pos = self._skip_whitespace(buf, pos)
                if pos >= len(buf):
                    break
                char = buf[pos]
                if char not in '{["':
                    self._in_junk = True
                    self._start = pos
                    results.append(DecodeError("Malformed JSON: expected an object"))
                elif char == "{":
                    # The usual case: a whole object in the buffer.
                    try:
                        value, end = _decoder.raw_decode(buf, pos)
                    except (ValueError, RecursionError):
                        pass
                    else:
                        if end - pos > self.max_size:
                            return self._fail(results)
                        results.append(self._checked(buf, pos, end, value))
                        pos = end
                        continue
                if self._start is None:
                    self._start = pos
                    self._scanned = pos
            if self._in_junk:
                match = _JUNK.match(buf, pos)
                assert match is not None
                pos = match.end()
                if pos >= len(buf):
                    break
                self._reset_value()
                continue
            end = self._scan(buf)
            if end is None:
                if len(buf) - self._start > self.max_size:
                    return self._fail(results)
                break
            if end - self._start > self.max_size:
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
        return results

    def _checked(self, buf: str, start: int, end: int, value: Any) -> Any:
        if _UNDECODABLE.search(buf, start, end):
            return DecodeError("Invalid UTF-8 in request")
        return value

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
        Continue scanning the current value; return its end, or None if the
        buffer ends first (the state is kept for the next call).
        """
        i = self._scanned
        length = len(buf)
        if i == self._start and not self._in_string:
            # First character of the value: '{', '[' or '"'.
            if buf[i] == '"':
                self._in_string = True
            else:
                self._depth = 1
            i += 1
        while i < length:
            if self._in_string:
                match = _STRING_STOP.search(buf, i)
                if match is None:
                    i = length
                    break
                if match.group() == "\\":
                    if match.end() >= length:
                        i = match.start()
                        break
                    i = match.end() + 1
                    continue
                self._in_string = False
                i = match.end()
                if self._depth == 0:
                    return i
                continue
            match = _STRUCTURE.search(buf, i)
            if match is None:
                i = length
                break
            char = match.group()
            i = match.end()
            if char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return i
        self._scanned = i
        return None


@dataclass(frozen=True)
class Request:
    """
    One client request: the lower-cased request word and its content.
    """

    word: str
    content: Any


def parse_request(value: Any) -> Union[Request, DecodeError]:
    """
    Turn one decoded JSON value into a L{Request}, or say what is wrong.

    Request words are accepted in any letter case. Validating C{content} for
    a particular request is the chat core's job; this only checks the shape.
    """
    if isinstance(value, DecodeError):
        return value
    if not isinstance(value, dict):
        return DecodeError(
            'A request must be a JSON object like {"request": "help", "content": null}'
        )
    word = value.get("request")
    if word is None:
        return DecodeError('The request has no "request" field')
    if not isinstance(word, str):
        return DecodeError('The "request" field must be a string')
    content = value.get("content")
    if isinstance(content, str) and not is_encodable(content):
        return DecodeError("Invalid Unicode in content (lone surrogate)")
    return Request(word.strip().lower(), content)


def is_encodable(text: str) -> bool:
    """
    Whether C{text} can be sent as UTF-8 (it has no lone surrogates).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def format_timestamp(seconds: float) -> str:
    """
    The timestamp string of a response: ISO 8601 in UTC, to the second.
    """
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def encode_json(value: Any) -> str:
    """
    Compact JSON text for C{value}, non-ASCII characters kept as they are.
    """
    return _encoder.encode(value)


def encode_response(timestamp: str, sender: str, response: str, content: Any) -> bytes:
    """
    Encode one response: compact UTF-8 JSON with exactly the four keys of
    the standard, followed by one newline.
    """
    return (
        _encoder.encode(
            {
                "timestamp": timestamp,
                "sender": sender,
                "response": response,
                "content": content,
            }
        ).encode("utf-8")
        + b"\n"
    )


def encode_request(request: str, content: Any) -> bytes:
    """
    Encode one request as compact UTF-8 JSON followed by one newline.
    """
    return _encoder.encode({"request": request, "content": content}).encode("utf-8") + b"\n"
