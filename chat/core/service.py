"""
The chat service: who is logged in, the rooms and their history windows,
and the rules of the standard and its extensions. It knows nothing of
sockets.

Each connection is a L{Session}; the transport gives it what it decoded
(L{chat.wire.Request} or L{chat.wire.DecodeError}) and the core answers
with events (L{chat.core.events}) through the small L{IChatClient}
interface. A broadcast is one L{Broadcast} object for every recipient in
its room, and a login's history is one L{HistoryWindow} shared by every
login.

Rooms (L{chat.core.rooms}): every client is put in the lobby at login (the
standard's single chat, whose history is everything stored before rooms
existed); C{msg}, C{names} and C{history} act on its current room. Private
messages are stored under a key of their two users (L{private_key}) and go
to those two only. A client that asked for no extension (C{cap}) is told
only what the standard can say: the transport encodes each event for the
extensions its client was granted.

Requests are dispatched through L{COMMANDS}, the table that also writes the
C{help} text, so the two never disagree.

Messages are stored before they are shown to anyone: a C{msg} joins a batch
that is handed to the store (which works off the reactor thread) at the end
of the reactor turn, and broadcast once the store says it is durable. While
a batch is being stored the next one gathers, so the store sees one
transaction per batch however slow it is. Until its message is stored the
sender's later requests wait in its session's inbox, so each client sees
its responses in the order it asked.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.core.commands import COMMANDS
from chat.core.events import (
    HISTORY_FORMATS,
    Broadcast,
    Capabilities,
    ChatMessage,
    HistoryWindow,
    Names,
    Presence,
    Private,
    RoomNotice,
)
from chat.core.history import DEFAULT_HISTORY_LIMIT, Window, newest_within
from chat.core.interfaces import IChatClient
from chat.core.limits import Limits
from chat.core.rooms import Room
from chat.core.rules import (
    EXTENSIONS,
    NO_ARGUMENT,
    ROOM_NAME,
    SERVER_NAME,
    USERNAME,
    private_key,
)
from chat.core.session import Session
from chat.core.stats import Stats
from chat.storage import LOBBY, IMessageStore, Message, StoredMessage, StoreError
from chat.wire import DecodeError, Request, format_timestamp

#: Batches the store may have at once. One: the messages that arrive while
#: it writes gather into the next batch, which also takes the replies to
#: the broadcast of this one (see L{ChatService._store_done}). With two, the
#: few that arrived during a write went as a batch of their own, and the
#: messages in flight split into smaller broadcasts, each a send to every
#: recipient (20 in flight to 100 recipients: 9 messages a broadcast
#: instead of 15-18; bench/README.rst).
MAX_STORING = 1

#: A word from the client named in an error (an unknown request, a user
#: no one can be) is shown up to this many characters, then cut with an
#: ellipsis: one error of a line, not pages of it.
MAX_WORD_SHOWN = 40

#: The most messages one C{history} request pages back at once.
MAX_PAGE = 500

# A count of messages: ASCII digits only (str.isdigit() also takes "²").
_COUNT = re.compile(r"0*[1-9][0-9]{0,8}")

# A private message: the user, then (after one space or line break) the text.
_PRIVATE = re.compile(r"\s*(\S+)(?:\s(.*))?", re.DOTALL)

# What waits to be stored: who sent it, the message, and for a private
# message the name of its recipient (None for a room's).
_Pending = Tuple[Session, Message, Optional[str]]


class ChatService:
    """
    The chat: who is logged in, the rooms, and the rules.

    @param store: where messages are kept.
    @param clock: the reactor's time and scheduling.
    @param history_format: how history responses carry each message
        (L{chat.core.events.HISTORY_FORMATS}).
    @param history_limit: how many of the latest messages of a room a
        login or a C{join} gets.
    """

    log = Logger()

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        history_format: str = "string",
        limits: Optional[Limits] = None,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> None:
        if history_format not in HISTORY_FORMATS:
            raise ValueError(f"unknown history format {history_format!r}")
        self.store = store
        self.clock = clock
        self.history_format = history_format
        self.limits = limits if limits is not None else Limits()
        self.history_limit = history_limit
        self.lobby = Room(LOBBY, history_limit)
        self.stats = Stats()
        self._users: Dict[str, Session] = {}  # folded name -> session
        self._rooms: Dict[str, Room] = {LOBBY: self.lobby}
        self._pending: List[_Pending] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._storing = 0  # batches handed to the store and not yet stored
        self._stored_waiters: List[Deferred] = []
        self._sessions: Dict[Session, None] = {}
        self._stopping = False
        self._gone: List[Deferred] = []
        self._loading = False  # requests wait until the window is read

    @property
    def window(self) -> Window:
        """
        The lobby's history window.
        """
        return self.lobby.window

    def rooms(self) -> List[Room]:
        """
        The rooms that exist (with someone in them or on the way in), the
        lobby first.
        """
        return list(self._rooms.values())

    def now(self) -> str:
        """
        The timestamp of a response made now.
        """
        return format_timestamp(self.clock.seconds())

    # Life cycle

    def load(self) -> Deferred:
        """
        Read the lobby's history window from the store (only the window:
        start-up does not grow with the history). Requests wait until it is
        read.

        @return: a Deferred that fires with the number of messages read.
        """
        self._loading = True

        def loaded(count: int) -> int:
            self.log.info("Loaded the last {count} messages of history", count=count)
            return count

        def ready(result: object) -> object:
            self._loading = False
            for session in list(self._sessions):
                session.resume()
            return result

        return self.reload_window().addCallback(loaded).addBoth(ready)

    def reload_window(self) -> Deferred:
        """
        Read the windows of the rooms (again) from the store: at start-up,
        and after messages were removed (retention), so that logins no
        longer see them. Messages stored meanwhile are not lost: the store
        answers in order.

        @return: a Deferred that fires with the number of messages read.
        """
        rooms = [room for room in self._rooms.values() if room.joining is None]
        reads = [self._read_window(room) for room in rooms]
        return gatherResults(reads, consumeErrors=True).addCallback(sum)

    def _read_window(self, room: Room) -> Deferred:
        def loaded(stored: List[StoredMessage]) -> int:
            room.window.replace(_chat_messages(stored))
            return len(stored)

        return self.store.recent(room.name, room.window.limit).addCallback(loaded)

    def shutdown(self, reason: str = "Server is shutting down", timeout: float = 5.0) -> Deferred:
        """
        Store what is pending, tell everyone logged in, and disconnect all.
        Requests not handled yet (waiting behind a message being stored, or
        for flood control) and those that arrive from now on are answered
        with an error, in order, so no client takes one for done.

        @return: a Deferred that fires when every connection has closed, or
            after C{timeout} seconds, whichever is first.
        """
        # Stop handling requests first, so the sessions the flush resumes
        # start nothing new that would be stored but never shown.
        self._stopping = True
        done: Deferred = Deferred()
        timer = self.clock.callLater(timeout, self._all_gone)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        self._gone.append(done)

        def stored(_: object) -> None:
            for session in list(self._sessions):
                session.abandon()
                if session.username is not None:
                    session.info(reason)
                session.client.disconnect()
            if not self._sessions:
                self._all_gone()

        self.flush()
        self.when_stored().addCallback(stored)
        return done

    def when_stored(self) -> Deferred:
        """
        A Deferred that fires once no message is waiting to be stored.
        """
        d: Deferred = Deferred()
        if not self._storing and not self._pending:
            d.callback(None)
        else:
            self._stored_waiters.append(d)
        return d

    def _all_gone(self) -> None:
        waiting, self._gone = self._gone, []
        if self._sessions:
            self.log.warn(
                "Stopping with {count} connections not yet closed", count=len(self._sessions)
            )
        for d in waiting:
            if not d.called:
                d.callback(None)

    # Connections

    def connect(self, client: IChatClient) -> Session:
        session = Session(self, client)
        self._sessions[session] = None
        if self._loading:
            session.wait()  # until the history window is read
        return session

    def forget(self, session: Session) -> None:
        self._sessions.pop(session, None)
        if session.username is not None:
            self.log.info("{user} disconnected", user=session.username)
            self._remove_user(session, session.departure)
        if self._gone and not self._sessions:
            self._all_gone()

    # The rules

    def dispatch(self, session: Session, request: Union[Request, DecodeError]) -> None:
        if self._stopping:
            session.error("Not handled: the server is shutting down", "shutdown")
            return
        stats = self.stats
        if isinstance(request, DecodeError):
            stats.requests["", "malformed"] += 1
            session.error(request.reason, "malformed")
            if request.fatal:
                # The server cuts it, as for flooding: through the one
                # close path, so nothing queued behind it is handled.
                self.log.info("Disconnecting a client: {reason}", reason=request.reason)
                stats.dropped["too_large"] += 1
                session.departure = "dropped"
                session.close()
            return
        command = COMMANDS.get(request.word)
        if command is None:
            stats.requests["", "unknown"] += 1
            session.error(
                f"Unknown request {_shown(request.word)!r}; send help for the list", "unknown"
            )
            return
        if command.login_required and session.username is None:
            stats.requests[command.word, "not_logged_in"] += 1
            session.error("Not logged in: log in first with login <username>", "not_logged_in")
            return
        stats.requests[command.word, "handled"] += 1
        content = request.content
        if command.argument is None:
            content = None
        command.handler(session, content)

    def usernames(self) -> List[str]:
        return [s.username for s in self._users.values() if s.username]

    def names(self, session: Session) -> None:
        room = session.room
        if room is None:
            self._no_room(session)
            return
        session.send(Names(tuple(room.usernames()), self.now(), room.name))

    def login(self, session: Session, name: Any) -> None:
        if session.username is not None:
            session.error(f"Already logged in as {session.username}")
            return
        if not isinstance(name, str) or not name.strip():
            session.error("Login needs a username: login <username>")
            return
        name = name.strip()
        limit = self.limits.max_username_length
        if len(name) > limit:
            session.error(f"Username too long (at most {limit} characters)")
            return
        if not USERNAME.fullmatch(name):
            session.error("Invalid username: use only letters A-Z, a-z and digits 0-9")
            return
        folded = name.lower()
        if folded == SERVER_NAME:
            session.error(
                f"The name {name!r} is reserved: the server signs its own notices with it"
            )
            return
        if folded in self._users:
            session.error("Username taken")
            return
        session.username = name
        self._users[folded] = session
        self.stats.logins += 1
        self.log.info("{user} logged in", user=name)
        session.info(f"Login successful. Welcome, {name}!")
        self._enter(session, self.lobby, "logged in")
        self._send_window(session, self.lobby)

    def logout(self, session: Session) -> None:
        self.stats.logouts += 1
        self.log.info("{user} logged out", user=session.username)
        self._remove_user(session, "logged out")
        session.info("Logged out")
        session.close()

    def _remove_user(self, session: Session, why: str) -> None:
        if session.username is not None:
            for room in list(session.rooms.values()):
                self._exit(session, room, why)
            self._users.pop(session.username.lower(), None)
            session.username = None

    # Rooms

    def _enter(self, session: Session, room: Room, why: str) -> None:
        room.add(session)
        session.make_current(room)
        self._tell_presence(session, room, why)

    def _exit(self, session: Session, room: Room, why: str) -> None:
        room.remove(session)
        del session.rooms[room.name]
        self._tell_presence(session, room, why)
        self._drop_if_empty(room)

    def _tell_presence(self, session: Session, room: Room, why: str) -> None:
        watchers = room.watchers()
        if watchers:
            assert session.username is not None
            event = Presence(session.username, room.name, why, self.now())
            for watcher in watchers:
                if watcher is not session:
                    watcher.send(event)

    def _send_window(self, session: Session, room: Room) -> None:
        """
        Send C{session} the history window of C{room}, as at login.
        """
        self.stats.history_windows += 1
        window = room.window.event(self.now(), session.client.history_budget, self.history_format)
        room.set_cursor(session, window.messages[0].id if window.messages else None)
        session.send(window)

    def _no_room(self, session: Session) -> None:
        session.error("You are in no room: join one first (join lobby)")

    def _room_name(self, session: Session, content: Any, word: str) -> Optional[str]:
        """
        The room C{content} names, in lower case; or None, once C{session}
        was told why it names none.
        """
        if not isinstance(content, str) or not content.strip():
            session.error(f"{word} needs a room name: {word} <room>")
            return None
        name = content.strip()
        limit = self.limits.max_username_length
        if name.lower() == LOBBY:
            return LOBBY  # (whatever the limit: it is where everyone starts)
        if len(name) > limit or not ROOM_NAME.fullmatch(name):
            session.error(
                f"Invalid room name: use only letters A-Z, a-z and digits 0-9 (at most {limit})"
            )
            return None
        return name.lower()

    def join(self, session: Session, content: Any) -> None:
        """
        Put C{session} in a room (made if new) and make it its current
        room; or, if it is in it already, only make it current.
        """
        name = self._room_name(session, content, "join")
        if name is None:
            return
        room = session.rooms.get(name)
        if room is not None:
            session.make_current(room)
            session.send(RoomNotice(f"{name} is now your current room", self.now(), name))
            return
        limits = self.limits
        if len(session.rooms) >= limits.max_rooms_per_user:
            session.error(f"You are in too many rooms (at most {limits.max_rooms_per_user})")
            return
        room = self._rooms.get(name)
        if room is None:
            if len(self._rooms) >= limits.max_rooms:
                session.error(f"Too many rooms on this server (at most {limits.max_rooms})")
                return
            # A room made anew: read its window from the store first (its
            # history outlives it); whoever joins meanwhile waits too.
            room = self._rooms[name] = Room(name, self.history_limit)
            room.joining = [session]
            session.wait()
            d = self._read_window(room)  # (a store may answer at once)
            d.addBoth(self._window_read, room)
        elif room.joining is not None:
            room.joining.append(session)
            session.wait()
        else:
            self._come_in(session, room)

    def _come_in(self, session: Session, room: Room) -> None:
        self._enter(session, room, "joined")
        session.send(RoomNotice(f"Joined {room.name}", self.now(), room.name))
        self._send_window(session, room)

    def _window_read(self, result: Union[int, Failure], room: Room) -> None:
        """
        A new room's window was read (or could not be): let in those who
        waited for it (or tell them why not), and let them go on.
        """
        joining, room.joining = room.joining or [], None
        if isinstance(result, Failure):
            self._store_failed(result, f"read the history of {room.name}")
        for session in joining:
            if isinstance(result, Failure):
                session.error(
                    f"The server could not read the history of {room.name}; try again later",
                    "store",
                )
            elif session.connected and session.username is not None:
                self._come_in(session, room)
        self._drop_if_empty(room)
        for session in joining:
            session.resume()

    def _drop_if_empty(self, room: Room) -> None:
        """
        Forget a room nobody is in or on the way into (its history stays in
        the store); never the lobby.
        """
        if room.empty and room is not self.lobby and self._rooms.get(room.name) is room:
            del self._rooms[room.name]

    def leave(self, session: Session, content: Any) -> None:
        """
        Take C{session} out of the room C{content} names, or its current one.
        """
        if content in NO_ARGUMENT:
            room = session.room
            if room is None:
                session.error("You are in no room")
                return
        else:
            name = self._room_name(session, content, "leave")
            if name is None:
                return
            room = session.rooms.get(name)
            if room is None:
                session.error(f"You are not in {name}")
                return
        self._exit(session, room, "left")
        current = session.room
        if current is None:
            text = f"Left {room.name}; you are in no room now: join one to chat"
        else:
            text = f"Left {room.name}; your current room is {current.name}"
        session.send(RoomNotice(text, self.now(), current.name if current else None))

    def list_rooms(self, session: Session) -> None:
        """
        Tell C{session} the rooms and how many are in each: the lobby
        first, then by name.
        """
        counts = {LOBBY: len(self.lobby.members)}
        for name in sorted(self._rooms):
            members = len(self._rooms[name].members)
            if members and name != LOBBY:
                counts[name] = members
        text = "Rooms: " + ", ".join(f"{name} ({count})" for name, count in counts.items())
        current = session.room
        session.send(
            RoomNotice(
                text,
                self.now(),
                current.name if current else None,
                rooms=counts,
                joined=tuple(session.rooms),
            )
        )

    # Extensions

    def capabilities(self, session: Session, content: Any) -> None:
        """
        Grant C{session} the extensions it names that this server has (and
        only those, replacing what it had).
        """
        if content in NO_ARGUMENT:
            asked: List[str] = []
        elif isinstance(content, str):
            asked = content.replace(",", " ").split()
        elif isinstance(content, list) and all(isinstance(name, str) for name in content):
            asked = content
        else:
            session.error("cap takes the names of extensions: cap rooms private presence")
            return
        granted = frozenset(name.strip().lower() for name in asked) & EXTENSIONS
        session.caps = granted
        for room in session.rooms.values():
            room.update_watcher(session)
        session.send(Capabilities(granted, self.now()))

    def private(self, session: Session, content: Any) -> None:
        """
        Store a private message, then send it to its recipient and its
        sender; C{pm <user>} alone: the conversation with that user.
        """
        match = _PRIVATE.fullmatch(content) if isinstance(content, str) else None
        if match is None:
            session.error("pm needs a user and a text: pm <user> <text>")
            return
        user, text = match.groups()
        assert session.username is not None
        if (
            len(user) > self.limits.max_username_length
            or not USERNAME.fullmatch(user)
            or user.lower() == SERVER_NAME
        ):
            session.error(f"No user can be called {_shown(user)!r}: pm <user> <text>")
            return
        if user.lower() == session.username.lower():
            session.error("You cannot send a private message to yourself")
            return
        target = self._users.get(user.lower())
        if text is None:
            self._conversation(session, target.username if target is not None else user)
            return
        if target is None or target.username is None:
            session.error(f"{user} is not logged in")
            return
        error = self._message_error(text)
        if error is not None:
            session.error(error)
            return
        key = private_key(session.username, target.username)
        self._queue(session, Message(key, self.now(), session.username, text), target.username)

    def _conversation(self, session: Session, other: str) -> None:
        assert session.username is not None
        key = private_key(session.username, other)
        session.wait()

        def got(stored: List[StoredMessage]) -> None:
            messages = self._within_budget(session, _chat_messages(stored))
            session.send(HistoryWindow(messages, self.now(), login=False, private_with=other))

        def failed(failure: Failure) -> None:
            self._store_failed(failure, "read a private conversation")
            session.error("The server could not read the conversation; try again later", "store")

        d = self.store.recent(key, min(self.history_limit, MAX_PAGE) or MAX_PAGE)
        d.addCallbacks(got, failed)
        d.addBoth(lambda _: session.resume())

    def _within_budget(self, session: Session, messages: List[ChatMessage]) -> List[ChatMessage]:
        budget = session.client.history_budget if session.connected else None
        if budget is not None:
            return newest_within(messages, budget, self.history_format)
        return messages

    def page(self, session: Session, content: Any) -> None:
        """
        Send the page of history before the oldest message C{session} was
        shown: C{content} is how many messages (a number or a string of
        digits; by default the history limit, at most L{MAX_PAGE}).
        """
        room = session.room
        if room is None:
            self._no_room(session)
            return
        if content in NO_ARGUMENT:
            count = min(room.window.limit, MAX_PAGE) or MAX_PAGE
        elif isinstance(content, int) and not isinstance(content, bool) and content > 0:
            count = min(content, MAX_PAGE)
        elif isinstance(content, str) and _COUNT.fullmatch(content.strip()):
            # int() of the stripped text: str.strip() also removes the
            # separators U+001C to U+001F, which int() does not accept.
            count = min(int(content.strip()), MAX_PAGE)
        else:
            session.error(f"history takes a number of messages, 1 to {MAX_PAGE}: history 50")
            return
        cursor = room.cursor(session)
        if cursor is None and room.window.limit:
            newest = room.window.newest_id
            if newest is None:
                session.info("No older messages")
                return
            cursor = newest + 1  # shown nothing yet (an empty window at login): from now
        session.wait()

        def got(stored: List[StoredMessage]) -> None:
            messages = self._within_budget(session, _chat_messages(stored))
            if not messages:
                session.info("No older messages")
            else:
                self.stats.history_pages += 1
                room.set_cursor(session, messages[0].id)
                session.send(HistoryWindow(messages, self.now(), login=False, room=room.name))

        def failed(failure: Failure) -> None:
            self._store_failed(failure, "read older history")
            session.error("The server could not read older history; try again later", "store")

        if cursor is None:
            # No window is kept (a history limit of 0): from the newest stored.
            d = self.store.recent(room.name, count)
        else:
            d = self.store.before(room.name, cursor, count)
        d.addCallbacks(got, failed)
        d.addBoth(lambda _: session.resume())

    def publish(self, session: Session, text: Any) -> None:
        """
        Store a message, then broadcast it to everyone in the sender's room.
        """
        error = self._message_error(text)
        if error is not None:
            session.error(error)
            return
        room = session.room
        if room is None:
            self._no_room(session)
            return
        assert session.username is not None
        self._queue(session, Message(room.name, self.now(), session.username, text), None)

    def _queue(self, session: Session, message: Message, to: Optional[str]) -> None:
        """
        Add a message to the next batch; its sender waits until it is stored.
        """
        self._pending.append((session, message, to))
        # A msg behind it may join the batch only behind a room's message:
        # a private one is delivered after the batch's broadcasts, so a msg
        # joined behind it would be shown first.
        session.wait(batch=to is None)
        if self._flush_call is None and self._storing < MAX_STORING:
            self._flush_call = self.clock.callLater(0, self.flush)

    def _message_error(self, text: Any) -> Optional[str]:
        """
        Why C{text} cannot be sent as a message, or None if it can.
        """
        if not isinstance(text, str):
            return "msg needs a text: msg <message>"
        if not text.strip():
            return "Message is empty"
        limit = self.limits.max_message_length
        if len(text) > limit:
            return f"Message too long (at most {limit} characters)"
        return None

    def joins_batch(self, session: Session, request: Union[Request, DecodeError]) -> bool:
        """
        Whether C{request}, queued behind a message of C{session} that is
        being stored, can join the same batch: a valid C{msg} can, as it is
        answered only by the broadcast, which comes after the first one's.
        """
        return (
            isinstance(request, Request)
            and request.word == "msg"
            and session.username is not None
            and bool(session.rooms)
            and self._message_error(request.content) is None
        )

    def flush(self) -> None:
        """
        Hand the pending messages to the store as one batch, unless it
        already has L{MAX_STORING} (then they go when one is done).
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._storing >= MAX_STORING or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._storing += 1
        d = self.store.append([m for _, m, _ in batch])
        d.addCallbacks(self._stored, self._not_stored, (batch,), None, (batch,))
        d.addBoth(self._store_done)

    def _flush_after_reads(self) -> None:
        self._flush_call = self.clock.callLater(0, self.flush)

    def _stored(self, ids: List[int], batch: List[_Pending]) -> None:
        # A room's messages of the batch, in order.
        rooms: Dict[str, List[ChatMessage]] = {}
        private: List[Tuple[Session, ChatMessage, str]] = []
        for id, (session, m, to) in zip(ids, batch):
            message = ChatMessage(id, m.room, m.timestamp, m.sender, m.content)
            if to is not None:
                private.append((session, message, to))
            else:
                messages = rooms.get(m.room)
                if messages is None:
                    rooms[m.room] = [message]
                else:
                    messages.append(message)
        self.stats.messages_stored += len(batch)
        for name, messages in rooms.items():
            room = self._rooms.get(name)
            if room is not None:  # (else all left while it was stored)
                room.window.extend(messages)
                # One event for every recipient and for the room's part of
                # the batch: the cost per recipient is paid once per batch,
                # not once per message.
                self._broadcast(room, Broadcast(messages))
        for session, message, to in private:
            self._deliver_private(session, message, to)
        _resume_senders(batch)

    def _deliver_private(self, sender: Session, message: ChatMessage, to: str) -> None:
        """
        Show a stored private message to its recipient and, as an echo, to
        its sender; if the recipient left while it was stored, tell the
        sender so instead (the message stays in their conversation).
        """
        recipient = self._users.get(to.lower())
        delivered = 0
        if recipient is None or not recipient.connected:
            sender.error(
                f"{to} left before your private message reached them; "
                f"it is kept in your conversation (pm {to})",
                "recipient_left",
            )
        else:
            for session, echo in ((recipient, False), (sender, True)):
                if session.connected:
                    session.send(Private(message, to, echo))
                    delivered += 1
        self.stats.deliveries += delivered
        self.stats.bytes_delivered += delivered * len(message.line)

    def _not_stored(self, failure: Failure, batch: List[_Pending]) -> None:
        self._store_failed(failure, f"store {len(batch)} messages")
        for session, _, _ in batch:
            session.error("The server could not store your message; it was not sent", "store")
        _resume_senders(batch)

    def _store_failed(self, failure: Failure, what: str) -> None:
        if failure.check(StoreError):
            self.log.error("Could not {what}: {error}", what=what, error=failure.value)
        else:
            self.log.failure("Could not {what}", failure, what=what)

    def _store_done(self, result: object) -> None:
        self._storing -= 1
        if self._pending:
            # What gathered while the store worked goes as the next batch,
            # after the reactor has read what arrived during the broadcast
            # just made, so that the replies it prompts join this batch
            # rather than make one more. A store on a thread answers in a
            # thread call, which a reactor's turn runs before its timed
            # calls (those made meanwhile included) and then polls; a
            # timed call made by a timed call waits for the next turn, so
            # two steps put the flush after the poll.
            if self._flush_call is None:
                self._flush_call = self.clock.callLater(0, self._flush_after_reads)
        elif not self._storing:
            waiters, self._stored_waiters = self._stored_waiters, []
            for d in waiters:
                d.callback(None)

    def _broadcast(self, room: Room, event: Broadcast) -> None:
        recipients = room.recipients()
        stats = self.stats
        stats.deliveries += len(event.messages) * len(recipients)
        stats.bytes_delivered += len(event.data) * len(recipients)
        for client in recipients:
            try:
                client.send(event)
            except Exception:
                self.log.failure("Delivery to one client failed")


def _shown(word: str) -> str:
    """
    C{word} as an error names it: cut after L{MAX_WORD_SHOWN} characters.
    """
    return word if len(word) <= MAX_WORD_SHOWN else word[:MAX_WORD_SHOWN] + "\u2026"


def _resume_senders(batch: List[_Pending]) -> None:
    """
    Let the senders of a batch go on with their next requests, once each.
    """
    for session in dict.fromkeys(session for session, _, _ in batch):
        session.resume()


def _chat_messages(stored: List[StoredMessage]) -> List[ChatMessage]:
    return [ChatMessage(m.id, m.room, m.timestamp, m.sender, m.content) for m in stored]
