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
- L{RoomNotice}: an C{info} answering a room request (C{join}, C{leave},
  C{rooms}), with what a client that asked for the C{rooms} extension is
  also told: its current room, and the rooms.
- L{Names}: the users in a room (an C{info} on the wire).
- L{Broadcast}: one or more chat messages of one room, in order, for
  everyone in it.
- L{Private}: a private message, for its recipient or its sender.
- L{Presence}: someone arrived in or left a room (only for a client that
  asked for the C{presence} extension).
- L{Capabilities}: the extensions granted to a client (the answer to
  C{cap}); a transport encodes what follows it accordingly.
- L{HistoryWindow}: stored messages, oldest first: the window a login (or
  a C{join}) gets, a page of older history, or a private conversation.

Which keys and response words a client gets for each is the transport's
business (L{chat.transports.encoding}); a client that asked for no
extension gets exactly the standard's responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional, Sequence, Tuple

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
class RoomNotice:
    """
    An C{info} answering C{join}, C{leave} or C{rooms}.

    @ivar content: what it says.
    @ivar room: the client's current room afterwards, or None if it is in
        none.
    @ivar rooms: for C{rooms}: how many are in each room, by name.
    @ivar joined: for C{rooms}: the client's rooms, in the order it joined.
    """

    content: str
    timestamp: str
    room: Optional[str]
    rooms: Optional[Mapping[str, int]] = None
    joined: Optional[Tuple[str, ...]] = None

    def text(self) -> str:
        return self.content


@dataclass(frozen=True)
class Names:
    """
    The names of the users in a room, in the order they came in.
    """

    names: Tuple[str, ...]
    timestamp: str
    room: Optional[str] = None

    def text(self) -> str:
        return ", ".join(self.names)


@dataclass(frozen=True)
class Private:
    """
    A private message (stored), for its recipient, or as the echo to its
    sender (C{echo} true).

    @ivar to: the recipient's name.
    """

    message: ChatMessage
    to: str
    echo: bool


@dataclass(frozen=True)
class Presence:
    """
    C{user} arrived in or left C{room}; C{what} is one of L{ARRIVALS} or
    L{DEPARTURES}.
    """

    user: str
    room: str
    what: str
    timestamp: str


#: Why someone is now in a room: they logged in (to the lobby) or joined it.
ARRIVALS = ("logged in", "joined")

#: Why someone is no longer in a room: they left it, logged out, their
#: connection closed, or the server dropped it (flooding, not reading).
DEPARTURES = ("left", "logged out", "disconnected", "dropped")


@dataclass(frozen=True)
class Capabilities:
    """
    The extensions granted to a client, in answer to its C{cap}.
    """

    granted: FrozenSet[str]
    timestamp: str


class Broadcast:
    """
    Chat messages of one room for everyone in it, in order: the room's part
    of the batch stored in one transaction. One object goes to every
    recipient, so C{data} (all the messages' lines, for a client that reads
    a stream) is joined once, and L{memo} keeps any other form a transport
    makes of it (the lines with the room's name) for all recipients.
    """

    __slots__ = ("messages", "data", "_memo")

    def __init__(self, messages: Sequence[ChatMessage]) -> None:
        self.messages = tuple(messages)
        # Joined at once: every recipient that reads a stream reads this.
        self.data = (
            self.messages[0].line
            if len(self.messages) == 1
            else b"".join(m.line for m in self.messages)
        )
        self._memo: Optional[Dict[Any, Any]] = None

    def memo(self, key: Any, make: Callable[[], Any]) -> Any:
        """
        C{make()}, made once for this broadcast and kept under C{key}.
        """
        if self._memo is None:
            self._memo = {}
        return _remembered(self._memo, key, make)


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

    __slots__ = ("messages", "timestamp", "login", "room", "private_with", "_memo")

    def __init__(
        self,
        messages: Sequence[ChatMessage],
        timestamp: str,
        login: bool = True,
        room: Optional[str] = None,
        private_with: Optional[str] = None,
    ) -> None:
        self.messages = tuple(messages)
        self.timestamp = timestamp
        self.login = login
        self.room = room  # the room whose messages these are
        self.private_with = private_with  # or the other user of a private conversation
        self._memo: Dict[Any, Any] = {}

    def stamped(self, timestamp: str) -> "HistoryWindow":
        """
        The same window (sharing its encodings) with another timestamp.
        """
        if timestamp == self.timestamp:
            return self
        other = HistoryWindow.__new__(HistoryWindow)
        other.messages, other.timestamp, other.login = self.messages, timestamp, self.login
        other.room, other.private_with = self.room, self.private_with
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
