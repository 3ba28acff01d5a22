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

Extensions (docs/protocol.md, section 7): each function takes the
extensions the client was granted (C{caps}); with none, every response is
exactly the standard's (four keys, the four response words), whatever the
event. With C{rooms}, a room's messages and history and the answers to
room requests carry the room's name; with C{private}, a private message
carries its recipient instead of a mark in its text; with C{presence},
arrivals and departures are C{presence} responses (without it they are not
sent at all).

Everything here is pure: bytes in, bytes out, no transport.
"""

from __future__ import annotations

from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

from chat.core.events import (
    Broadcast,
    Capabilities,
    ChatMessage,
    HistoryWindow,
    Names,
    Notice,
    Presence,
    Private,
    RoomNotice,
)
from chat.core.rules import PRIVATE_PREFIX, SERVER_NAME
from chat.wire import encode_response

Caps = FrozenSet[str]

#: A client that asked for no extension.
STANDARD: Caps = frozenset()

#: What a legacy response should fit in: the smallest C{recv()} in the field.
LEGACY_RESPONSE = 1024

#: What no legacy response may exceed: the usual C{recv(4096)}.
LEGACY_MAX_RESPONSE = 4096

#: How much of a history a legacy client gets at once, in bytes of items:
#: about 0.4 s of paced responses (some 40), so that live messages behind
#: it are not held up for long. Each paced response costs the server about
#: a quarter of a millisecond of CPU (the send, and waking the reader and
#: the reactor): a legacy login costs about 1.5 ms when many log in at
#: once (C{python -m bench login-cpu}; with 48 KiB it was 1.9-2.4 ms),
#: about 10 ms alone. (It can page back for more with C{history}.)
LEGACY_HISTORY_BYTES = 32 * 1024

#: Ends a message shortened to fit a legacy client's read.
SHORTENED = " [\u2026 shortened]"

#: The bytes of a legacy C{history} response besides its one item: its
#: keys and timestamp (89 bytes) and an extension's room or user name (43
#: more for 32 characters), with room to spare. A longer name (as
#: C{--max-username-length} allows) takes more: L{_item_frame}.
_HISTORY_ITEM_FRAME = 160


def history_frame(timestamp: str, extra: Optional[Dict[str, Any]] = None) -> Tuple[bytes, bytes]:
    """
    The bytes before and after the items of a C{history} response.
    """
    template = encode_response(timestamp, SERVER_NAME, "history", [], extra)
    cut = template.index(b'"content":[]') + len(b'"content":[')
    return template[:cut], template[cut:]


def info(timestamp: str, text: str, extra: Optional[Dict[str, Any]] = None) -> bytes:
    return encode_response(timestamp, SERVER_NAME, "info", text, extra)


# What each extension adds


def room_line(message: ChatMessage) -> bytes:
    """
    A room's message as a client with the C{rooms} extension gets it: with
    the room's name (made once per message, for every such recipient).
    """
    return message.memo(  # type: ignore[no-any-return]
        "room-line",
        lambda: encode_response(
            message.timestamp, message.sender, "message", message.content, {"room": message.room}
        ),
    )


def broadcast_lines(event: Broadcast, caps: Caps) -> List[bytes]:
    """
    The lines of a broadcast's messages, for a client granted C{caps}.
    """
    if "rooms" in caps:
        return [room_line(m) for m in event.messages]
    return [m.line for m in event.messages]


def broadcast_data(event: Broadcast, caps: Caps) -> bytes:
    """
    A broadcast as one stream client granted C{caps} reads it, joined once
    for all of them.
    """
    if "rooms" in caps:
        return event.memo("room-data", lambda: b"".join(broadcast_lines(event, caps)))  # type: ignore[no-any-return]
    return event.data


def private_message(event: Private, caps: Caps) -> ChatMessage:
    """
    A private message as one of its two users gets it: without the
    C{private} extension, with its text marked private.
    """
    message = event.message
    if "private" in caps:
        return message
    mark = f"(private to {event.to}) " if event.echo else "(private) "
    return message.memo(  # type: ignore[no-any-return]
        ("private", event.echo),
        lambda: ChatMessage(
            message.id, message.room, message.timestamp, message.sender, mark + message.content
        ),
    )


def private_line(event: Private, caps: Caps) -> bytes:
    message = private_message(event, caps)
    if "private" in caps:
        return encode_response(
            message.timestamp, message.sender, "message", message.content, {"to": event.to}
        )
    return message.line


def presence_line(event: Presence) -> bytes:
    extra = {"room": event.room}
    return encode_response(event.timestamp, event.user, "presence", event.what, extra)


def capabilities_line(event: Capabilities) -> bytes:
    granted = sorted(event.granted)
    text = "Extensions on: " + (", ".join(granted) if granted else "none")
    return info(event.timestamp, text, {"caps": granted})


def room_extra(event: Any, caps: Caps) -> Optional[Dict[str, Any]]:
    """
    The keys the C{rooms} extension adds to an answer to a room request or
    C{names}.
    """
    if "rooms" not in caps:
        return None
    extra: Dict[str, Any] = {"room": event.room}
    if type(event) is RoomNotice and event.rooms is not None:
        extra["rooms"] = dict(event.rooms)
        extra["joined"] = list(event.joined or ())
    return extra


def history_extra(event: HistoryWindow, caps: Caps) -> Optional[Dict[str, Any]]:
    """
    The keys extensions add to a C{history} response: its room, or the
    other user of a private conversation.
    """
    if event.room is not None and "rooms" in caps:
        return {"room": event.room}
    if event.private_with is not None and "private" in caps:
        return {"with": event.private_with}
    return None


# Stream


def stream(event: Any, history_format: str, caps: Caps = STANDARD) -> List[bytes]:
    """
    An event for a client that reads a stream, as the bytes to write in
    order (one response per event; a broadcast's messages' shared lines).
    """
    kind = type(event)
    if kind is Broadcast:
        return broadcast_lines(event, caps)
    if kind is Notice:
        return [event.encode()]
    if kind is Names or kind is RoomNotice:
        return [info(event.timestamp, event.text(), room_extra(event, caps))]
    if kind is HistoryWindow:
        return stream_history(event, history_format, caps)
    if kind is Private:
        return [private_line(event, caps)]
    if kind is Presence:
        return [presence_line(event)] if "presence" in caps else []
    if kind is Capabilities:
        return [capabilities_line(event)]
    raise TypeError(f"not an event: {event!r}")


def stream_history(event: HistoryWindow, history_format: str, caps: Caps = STANDARD) -> List[bytes]:
    """
    A history window for a stream client: one response, as three writes
    (the body is shared by every login that sees the same window).
    """
    prefix, suffix = history_frame(event.timestamp, history_extra(event, caps))
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


def legacy(event: Any, history_format: str, caps: Caps = STANDARD) -> List[object]:
    """
    An event for a legacy client, as its responses in order, each small
    enough for one read; a broadcast's messages stay messages, for the
    pacer to send alone or several as one (L{legacy_batch}), unless the
    client asked for each to carry its room.
    """
    kind = type(event)
    if kind is Broadcast:
        if "rooms" in caps:
            return [room_line(legacy_sized(m)) for m in event.messages]
        return list(event.messages)
    if kind is Notice:
        return legacy_notice(event.kind, event.text, event.timestamp)
    if kind is Names or kind is RoomNotice:
        return legacy_notice("info", event.text(), event.timestamp, room_extra(event, caps))
    if kind is HistoryWindow:
        return legacy_history(event, history_format, caps)
    if kind is Private:
        event = Private(legacy_sized(event.message), event.to, event.echo)
        if "private" in caps:
            return [private_line(event, caps)]
        return [legacy_line(private_message(event, caps))]
    return stream(event, history_format, caps)


def legacy_notice(
    kind: str, text: str, timestamp: str, extra: Optional[Dict[str, Any]] = None
) -> List[bytes]:
    """
    An C{info} or C{error} text as responses that each fit in a legacy read;
    extension keys (C{extra}) go on the last one only, as they may be long
    (the list of rooms) and the client asked for them.
    """

    def fits(piece: str) -> bool:
        return len(encode_response(timestamp, SERVER_NAME, kind, piece)) <= LEGACY_RESPONSE

    pieces = split_text(text, fits)
    last = len(pieces) - 1
    return [
        encode_response(timestamp, SERVER_NAME, kind, piece, extra if i == last else None)
        for i, piece in enumerate(pieces)
    ]


def legacy_line(message: ChatMessage) -> bytes:
    """
    A message's response for a legacy client: as it is when it fits in
    L{LEGACY_MAX_RESPONSE} bytes, else shortened to fit, with L{SHORTENED}.
    """
    if len(message.line) <= LEGACY_MAX_RESPONSE:
        return message.line
    return shortened(message).line


def legacy_sized(message: ChatMessage) -> ChatMessage:
    """
    C{message}, or its shortened form if its response would not fit in
    L{LEGACY_MAX_RESPONSE} bytes.
    """
    if len(message.line) <= LEGACY_MAX_RESPONSE - 64:  # room for extension keys
        return message
    return shortened(message)


def shortened(message: ChatMessage) -> ChatMessage:
    """
    C{message} with its text cut (and marked) so its response fits in
    L{LEGACY_MAX_RESPONSE} bytes, even as a string item of a history. Made
    once per message, for every legacy recipient.
    """
    return message.memo("shortened", lambda: _shorten(message))  # type: ignore[no-any-return]


def _item_frame(message: ChatMessage) -> int:
    """
    The bytes a legacy C{history} response holds besides C{message} as its
    item: the extension may name its room (C{room}) or, for a private
    message, one of the two users in its room key (C{with}).
    """
    longest = max(map(len, message.room.removeprefix(PRIVATE_PREFIX).split(",")))
    return _HISTORY_ITEM_FRAME + max(0, longest - 32)


def _shorten(message: ChatMessage) -> ChatMessage:
    content = message.content
    frame = _item_frame(message)
    low, high = 0, len(content)
    while low < high:
        middle = (low + high + 1) // 2
        candidate = ChatMessage(
            message.id, message.room, message.timestamp, message.sender,
            content[:middle] + SHORTENED,
        )  # fmt: skip
        if len(candidate.item("string")) + frame <= LEGACY_MAX_RESPONSE:
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
    if len(item) + _item_frame(message) <= LEGACY_MAX_RESPONSE:
        return item
    return shortened(message).item(history_format)


def legacy_history(event: HistoryWindow, history_format: str, caps: Caps = STANDARD) -> List[bytes]:
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
    prefix, suffix = history_frame(event.timestamp, history_extra(event, caps))
    frame = len(prefix) + len(suffix)  # (timestamps are of fixed width)
    bodies = event.memo(
        ("legacy", history_format, frame),
        lambda: pack_bodies([legacy_item(m, history_format) for m in event.messages], frame),
    )
    return [prefix + body + suffix for body in bodies]


def pack_bodies(items: Sequence[bytes], frame: Optional[int] = None) -> List[bytes]:
    """
    C{items} in order, joined into as few C{history} lists as fit in
    L{LEGACY_RESPONSE} bytes each with their frame of C{frame} bytes (by
    default the standard's; timestamps are of fixed width); at least one,
    empty for no items.
    """
    if frame is None:
        frame = _FRAME_SIZE
    out: List[bytes] = []
    chunk: List[bytes] = []
    size = frame
    for item in items:
        extra = len(item) + (1 if chunk else 0)
        if chunk and size + extra > LEGACY_RESPONSE:
            out.append(b",".join(chunk))
            chunk, size = [], frame
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
