"""
The core's events as the standard's responses, for the two dialects of
clients in the field (PROTOCOL.md, section 5):

- A client that reads a stream gets each event whole: a broadcast batch as
  its messages' lines, a history window as one C{history} response.
- A legacy client reads one response per C{recv()}, often C{recv(1024)} or
  C{recv(4096)}: every response to it fits in L{LEGACY_RESPONSE} bytes where
  the content allows (a long history goes as several C{history} responses, a
  long C{names} as several C{info} responses); a single message that would
  not fit in L{LEGACY_MAX_RESPONSE} bytes is shortened, with a visible mark;
  and several chat messages waiting at once are sent as one C{history}
  response (L{legacy_batch}), so a legacy client keeps up with a busy chat
  while it gets one response per read.

Everything here is pure: bytes in, bytes out, no transport.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from chat.core.events import Broadcast, ChatMessage, HistoryWindow, Names, Notice
from chat.core.rules import SERVER_NAME
from chat.wire import encode_response

#: What a legacy response should fit in: the smallest C{recv()} in the field.
LEGACY_RESPONSE = 1024

#: What no legacy response may exceed: the usual C{recv(4096)}.
LEGACY_MAX_RESPONSE = 4096

#: How much of a history a legacy client gets at once, in bytes of items:
#: about half a second of paced responses, so that live messages behind it
#: are not held up for long, and a login costs about 2 ms of CPU. (It can
#: page back for more with C{history}.)
LEGACY_HISTORY_BYTES = 48 * 1024

#: Ends a message shortened to fit a legacy client's read.
SHORTENED = " [\u2026 shortened]"


def history_frame(timestamp: str) -> Tuple[bytes, bytes]:
    """
    The bytes before and after the items of a C{history} response.
    """
    template = encode_response(timestamp, SERVER_NAME, "history", [])
    cut = template.rindex(b"[]") + 1
    return template[:cut], template[cut:]


def info(timestamp: str, text: str) -> bytes:
    return encode_response(timestamp, SERVER_NAME, "info", text)


# Stream


def stream(event: object, history_format: str) -> List[bytes]:
    """
    An event for a client that reads a stream, as the bytes to write in
    order (one response per event; a broadcast's messages' shared lines).
    """
    kind = type(event)
    if kind is Broadcast:
        return [m.line for m in event.messages]  # type: ignore[attr-defined]
    if kind is Notice:
        return [event.encode()]  # type: ignore[attr-defined]
    if kind is Names:
        return [info(event.timestamp, event.text())]  # type: ignore[attr-defined]
    if kind is HistoryWindow:
        return stream_history(event, history_format)  # type: ignore[arg-type]
    raise TypeError(f"not an event: {event!r}")


def stream_history(event: HistoryWindow, history_format: str) -> List[bytes]:
    """
    A history window for a stream client: one response, as three writes
    (the body is shared by every login that sees the same window).
    """
    prefix, suffix = history_frame(event.timestamp)
    body = event.body(history_format)
    return [prefix, body, suffix] if body else [prefix + suffix]


# Legacy


def split_text(text: str, fits) -> List[str]:
    """
    C{text} cut into pieces for which C{fits(piece)} holds, at line breaks
    or after C{", "} where possible, else between characters.
    """
    if fits(text):
        return [text]
    pieces: List[str] = []
    rest = text
    while rest:
        if fits(rest):
            pieces.append(rest)
            break
        # The longest prefix that fits (binary search on its length).
        low, high = 1, len(rest)
        while low < high:
            middle = (low + high + 1) // 2
            if fits(rest[:middle]):
                low = middle
            else:
                high = middle - 1
        cut = low
        for separator in ("\n", ", "):
            at = rest.rfind(separator, 0, cut)
            if at > 0:
                cut = at + len(separator)
                break
        piece = rest[:cut].rstrip("\n")
        pieces.append(piece[:-2] if piece.endswith(", ") else piece)
        rest = rest[cut:]
    return pieces


def legacy(event: object, history_format: str) -> List[object]:
    """
    An event for a legacy client, as its responses in order, each small
    enough for one read; a broadcast's messages stay messages, for the
    pacer to send alone or several as one (L{legacy_batch}).
    """
    kind = type(event)
    if kind is Broadcast:
        return list(event.messages)  # type: ignore[attr-defined]
    if kind is Notice:
        return legacy_notice(event)  # type: ignore[arg-type]
    if kind is Names:
        return legacy_names(event)  # type: ignore[arg-type]
    if kind is HistoryWindow:
        return legacy_history(event, history_format)  # type: ignore[arg-type]
    raise TypeError(f"not an event: {event!r}")


def legacy_notice(event: Notice) -> List[bytes]:
    def fits(text: str) -> bool:
        return len(encode_response(event.timestamp, SERVER_NAME, event.kind, text)) <= (
            LEGACY_RESPONSE
        )

    return [
        encode_response(event.timestamp, SERVER_NAME, event.kind, piece)
        for piece in split_text(event.text, fits)
    ]


def legacy_names(event: Names) -> List[bytes]:
    return legacy_notice(Notice("info", event.text(), event.timestamp))


def legacy_line(message: ChatMessage) -> bytes:
    """
    A message's response for a legacy client: as it is when it fits in
    L{LEGACY_MAX_RESPONSE} bytes, else shortened to fit, with L{SHORTENED}.
    """
    if len(message.line) <= LEGACY_MAX_RESPONSE:
        return message.line
    return shortened(message).line


def shortened(message: ChatMessage) -> ChatMessage:
    """
    C{message} with its text cut (and marked) so its response fits in
    L{LEGACY_MAX_RESPONSE} bytes, even as a string item of a history. Made
    once per message, for every legacy recipient.
    """
    return message.memo("shortened", lambda: _shorten(message))  # type: ignore[no-any-return]


def _shorten(message: ChatMessage) -> ChatMessage:
    content = message.content
    low, high = 0, len(content)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = ChatMessage(
            message.id, message.room, message.timestamp, message.sender,
            content[:middle] + SHORTENED,
        )  # fmt: skip
        if len(candidate.item("string")) + 64 <= LEGACY_MAX_RESPONSE:
            low = middle
        else:
            high = middle - 1
    return ChatMessage(
        message.id, message.room, message.timestamp, message.sender, content[:low] + SHORTENED
    )


def legacy_item(message: ChatMessage, history_format: str) -> bytes:
    """
    A message as a history item that fits in a legacy response.
    """
    item = message.item(history_format)
    frame = 128  # a history response's keys and timestamp, with room to spare
    if len(item) + frame <= LEGACY_MAX_RESPONSE:
        return item
    return shortened(message).item(history_format)


def legacy_history(event: HistoryWindow, history_format: str) -> List[bytes]:
    """
    A history window for a legacy client, as C{history} responses of at
    most L{LEGACY_RESPONSE} bytes each (an item too large for one goes
    alone, shortened if it would pass L{LEGACY_MAX_RESPONSE}), in order;
    always at least one response, empty for an empty window. (The core
    keeps a legacy client's window within L{LEGACY_HISTORY_BYTES}: see
    L{chat.core.interfaces.IChatClient.history_budget}.) The pieces are
    packed once per window, for every login that gets it; each login only
    frames them with its timestamp.
    """
    bodies = event.memo(
        ("legacy", history_format),
        lambda: pack_bodies([legacy_item(m, history_format) for m in event.messages]),
    )
    prefix, suffix = history_frame(event.timestamp)
    return [prefix + body + suffix for body in bodies]


def pack_bodies(items: Sequence[bytes]) -> List[bytes]:
    """
    C{items} in order, joined into as few C{history} lists as fit in
    L{LEGACY_RESPONSE} bytes each with their frame (timestamps are of
    fixed width); at least one, empty for no items.
    """
    out: List[bytes] = []
    chunk: List[bytes] = []
    size = _FRAME_SIZE
    for item in items:
        extra = len(item) + (1 if chunk else 0)
        if chunk and size + extra > LEGACY_RESPONSE:
            out.append(b",".join(chunk))
            chunk, size = [], _FRAME_SIZE
            extra = len(item)
        chunk.append(item)
        size += extra
    out.append(b",".join(chunk))
    return out


def legacy_batch(
    messages: Sequence[ChatMessage], history_format: str, timestamp: str
) -> Tuple[int, bytes]:
    """
    The first of C{messages} (waiting for a legacy client) that fit in one
    response, and that response: one alone as its C{message} response,
    several as one C{history} response of at most L{LEGACY_RESPONSE} bytes
    (a client that renders a login's history renders this too).
    """
    items: List[bytes] = []
    size = _FRAME_SIZE
    for message in messages:
        item = legacy_item(message, history_format)
        size += len(item) + (1 if items else 0)
        if items and size > LEGACY_RESPONSE:
            break
        items.append(item)
    if len(items) == 1:
        return 1, legacy_line(messages[0])
    prefix, suffix = history_frame(timestamp)
    return len(items), prefix + b",".join(items) + suffix


# The bytes of a history response around its items (timestamps are of
# fixed width).
_FRAME_SIZE = sum(map(len, history_frame("2000-01-01T00:00:00Z")))
