"""
Messages: one decoded JSON value to a request, and every response and
request to bytes.

Message catalogue (see PROTOCOL.md, sections 2 and 3, and docs/protocol.md
for the extensions)::

    request   {"request": "login"|"logout"|"msg"|"names"|"help"|..., "content": ...}
    response  {"timestamp": str, "sender": str, "response": "error"|"info"
               |"message"|"history", "content": ...}

- L{parse_request} is the single decode point: one value to a L{Request}, or
  a L{DecodeError} that says why not.
- L{encode_response} is the single encode point of every response: compact
  JSON, UTF-8, exactly four keys, a string timestamp and one trailing
  newline, with every character a line splitter breaks at escaped.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from chat.wire.framing import DecodeError

# Characters outside ASCII's controls that a line splitter may take for a
# line end (Python's str.splitlines() does): NEL, LINE and PARAGRAPH SEPARATOR.
_LINE_BREAKS = re.compile("[\x85\u2028\u2029]")

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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
    whole = int(seconds)
    if whole != _last_second[0]:
        _last_second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(whole))]
    return _last_second[1]  # type: ignore[no-any-return]


# The last second formatted, and its text: every response of a busy second
# shares one formatting.
_last_second: list = [None, ""]


def _escape_line_break(match: "re.Match[str]") -> str:
    return f"\\u{ord(match.group()):04x}"


def encode_json(value: Any) -> str:
    """
    Compact JSON text for C{value}, non-ASCII characters kept as they are,
    except those that some line splitter takes for a line end: JSON escapes
    the control characters among them, and this escapes the rest (NEL,
    U+2028, U+2029), so that every encoded value is one line for every
    reader, Python's C{str.splitlines()} included.
    """
    text = _encoder.encode(value)
    if text.isascii() or _LINE_BREAKS.search(text) is None:  # (isascii is O(1))
        return text
    return _LINE_BREAKS.sub(_escape_line_break, text)


def encode_response(
    timestamp: str,
    sender: str,
    response: str,
    content: Any,
    extra: Optional[Mapping[str, Any]] = None,
) -> bytes:
    """
    Encode one response: compact UTF-8 JSON with the four keys of the
    standard, in the standard's order, followed by one newline. C{extra}
    adds the keys of extensions a client asked for after those four (see
    docs/protocol.md); without it a response has exactly the four keys.
    """
    value = {"timestamp": timestamp, "sender": sender, "response": response, "content": content}
    if extra:
        for key in extra:
            if key in value:
                raise ValueError(f"an extension key may not replace {key!r}")
        value.update(extra)
    return encode_json(value).encode("utf-8") + b"\n"


def encode_request(request: str, content: Any) -> bytes:
    """
    Encode one request as compact UTF-8 JSON followed by one newline.
    """
    return encode_json({"request": request, "content": content}).encode("utf-8") + b"\n"
