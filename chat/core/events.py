"""
What the core tells a client. The core speaks in these events; each
transport turns them into bytes for its client's dialect (the TCP
transport: the standard's responses, paced and split for a legacy client).

Every event is immutable and may go to many clients at once: a
L{Broadcast} is made once per batch of messages and handed to every
recipient, and a L{HistoryWindow} shares one encoded window with every
login. Encodings are computed once, on first use, and kept on the object.

Catalogue:

- L{Notice}: an C{info} or C{error} text for one client.
- L{Names}: the users logged in (an C{info} on the wire).
- L{Broadcast}: one or more chat messages, in order, for everyone.
- L{HistoryWindow}: stored messages, oldest first: the window a login gets,
  or a page of older history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from chat.core.rules import SERVER_NAME
from chat.wire import encode_json, encode_response

#: How a history response carries each message: C{"string"}, the message
#: response encoded as a JSON string (what most clients in the field
#: decode), or C{"object"}, the response itself.
HISTORY_FORMATS = ("string", "object")


def _remembered(memo: Dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """
    C{memo[key]}, made with C{make()} the first time.
    """
    try:
        return memo[key]
    except KeyError:
        value = memo[key] = make()
        return value


class ChatMessage:
    """
    A stored chat message, with its encodings made once for every
    recipient.

    @ivar id: the store's id: stable, larger for later messages of a room.
    @ivar line: the C{message} response, encoded, with its newline.
    """

    __slots__ = ("id", "room", "timestamp", "sender", "content", "line", "_memo")

    def __init__(self, id: int, room: str, timestamp: str, sender: str, content: str) -> None:
        self.id = id
        self.room = room
        self.timestamp = timestamp
        self.sender = sender
        self.content = content
        self.line = encode_response(timestamp, sender, "message", content)
        self._memo: Optional[Dict[Any, Any]] = None

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """
        C{make()}, made once for this message and kept under C{key}: an
        encoding that every recipient shares (a history item, a form
        shortened for a legacy client).
        """
        if self._memo is None:
            self._memo = {}
        return _remembered(self._memo, key, make)

    def item(self, history_format: str) -> bytes:
        """
        This message as an item of a C{history} response's list.
        """
        if history_format not in HISTORY_FORMATS:
            raise ValueError(f"unknown history format {history_format!r}")
        return self.memo(history_format, lambda: self._item(history_format))  # type: ignore[no-any-return]

    def _item(self, history_format: str) -> bytes:
        obj = self.line[:-1]
        if history_format == "string":
            return encode_json(obj.decode("utf-8")).encode("utf-8")
        return obj

    def __repr__(self) -> str:
        return f"<ChatMessage {self.id} {self.room} <{self.sender}> {self.content[:40]!r}>"


@dataclass(frozen=True)
class Notice:
    """
    An C{info} or C{error} for one client.

    @ivar kind: C{"info"} or C{"error"}.
    """

    kind: str
    text: str
    timestamp: str

    def encode(self) -> bytes:
        return encode_response(self.timestamp, SERVER_NAME, self.kind, self.text)


@dataclass(frozen=True)
class Names:
    """
    The names of the users logged in, in the order they logged in.
    """

    names: Tuple[str, ...]
    timestamp: str

    def text(self) -> str:
        return ", ".join(self.names)


class Broadcast:
    """
    Chat messages for every recipient, in order: the batch stored in one
    transaction. One object goes to every recipient, so C{data} (all the
    messages' lines, for a client that reads a stream) is joined once.
    """

    __slots__ = ("messages", "data")

    def __init__(self, messages: Sequence[ChatMessage]) -> None:
        self.messages = tuple(messages)
        # Joined at once: every recipient that reads a stream reads this.
        self.data = (
            self.messages[0].line
            if len(self.messages) == 1
            else b"".join(m.line for m in self.messages)
        )


class HistoryWindow:
    """
    Stored messages, oldest first, for a C{history} response: the window a
    login gets (C{login} true: a one-off burst, which a transport does not
    count against the client's send-queue limit) or a page of older
    history. Made by L{chat.core.history.Window}, which shares one between
    all the logins that see the same window; C{body(format)} is the list's
    encoded inside, joined once per format for all of them, and
    L{memo} keeps any other encoding a transport makes of it (the pieces
    for a legacy client) for all of them too.
    """

    __slots__ = ("messages", "timestamp", "login", "_memo")

    def __init__(self, messages: Sequence[ChatMessage], timestamp: str, login: bool = True) -> None:
        self.messages = tuple(messages)
        self.timestamp = timestamp
        self.login = login
        self._memo: Dict[Any, Any] = {}

    def stamped(self, timestamp: str) -> "HistoryWindow":
        """
        The same window (sharing its encodings) with another timestamp.
        """
        if timestamp == self.timestamp:
            return self
        other = HistoryWindow.__new__(HistoryWindow)
        other.messages, other.timestamp, other.login = self.messages, timestamp, self.login
        other._memo = self._memo
        return other

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """
        C{make()}, made once for this window (whatever its timestamp) and
        kept under C{key}: an encoding that does not depend on the time.
        """
        return _remembered(self._memo, key, make)

    def body(self, history_format: str) -> bytes:
        """
        The items of the C{history} list, encoded and joined by commas.
        """
        return self.memo(
            ("body", history_format),
            lambda: b",".join(m.item(history_format) for m in self.messages),
        )
