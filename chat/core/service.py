"""
The chat service: who is logged in, the history window, and the rules of
the standard. It knows nothing of sockets.

Each connection is a L{Session}; the transport gives it what it decoded
(L{chat.wire.Request} or L{chat.wire.DecodeError}) and the core answers
with events (L{chat.core.events}) through the small L{IChatClient}
interface. A broadcast is one L{Broadcast} object for every recipient, and
a login's history is one L{HistoryWindow} shared by every login.

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

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from chat.core.commands import COMMANDS
from chat.core.events import HISTORY_FORMATS, Broadcast, ChatMessage, HistoryWindow, Names
from chat.core.history import DEFAULT_HISTORY_LIMIT, Window, newest_within
from chat.core.interfaces import IChatClient
from chat.core.limits import Limits
from chat.core.rules import NO_ARGUMENT, SERVER_NAME, USERNAME
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

#: The most messages one C{history} request pages back at once.
MAX_PAGE = 500

# A count of messages: ASCII digits only (str.isdigit() also takes "²").
_COUNT = re.compile(r"0*[1-9][0-9]{0,8}")


class ChatService:
    """
    The chat: who is logged in, the history window, and the rules.

    @param store: where messages are kept.
    @param clock: the reactor's time and scheduling.
    @param history_format: how history responses carry each message
        (L{chat.core.events.HISTORY_FORMATS}).
    @param history_limit: how many of the latest messages a login gets.
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
        self.window = Window(history_limit)
        self.stats = Stats()
        self._users: Dict[str, Session] = {}  # folded name -> session
        self._recipients: Optional[Tuple[IChatClient, ...]] = None
        self._pending: List[Tuple[Session, Message]] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._storing = 0  # batches handed to the store and not yet stored
        self._stored_waiters: List[Deferred] = []
        self._sessions: Dict[Session, None] = {}
        self._stopping = False
        self._gone: List[Deferred] = []
        self._loading = False  # requests wait until the window is read

    def now(self) -> str:
        """
        The timestamp of a response made now.
        """
        return format_timestamp(self.clock.seconds())

    # Life cycle

    def load(self) -> Deferred:
        """
        Read the history window from the store (only the window: start-up
        does not grow with the history). Requests wait until it is read.

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
        Read the window (again) from the store: at start-up, and after
        messages were removed from it (retention), so that logins no longer
        see them. Messages stored meanwhile are not lost: the store answers
        in order.

        @return: a Deferred that fires with the number of messages read.
        """

        def loaded(stored: List[StoredMessage]) -> int:
            self.window.replace(_chat_messages(stored))
            return len(stored)

        return self.store.recent(LOBBY, self.window.limit).addCallback(loaded)

    def shutdown(self, reason: str = "Server is shutting down", timeout: float = 5.0) -> Deferred:
        """
        Store what is pending, tell everyone logged in, and disconnect all.
        Requests that arrive from now on are not handled.

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
            self._remove_user(session)
        if self._gone and not self._sessions:
            self._all_gone()

    # The rules

    def dispatch(self, session: Session, request: Union[Request, DecodeError]) -> None:
        if self._stopping:
            return
        stats = self.stats
        if isinstance(request, DecodeError):
            stats.requests["", "malformed"] += 1
            session.error(request.reason, "malformed")
            if request.fatal:
                self.log.info("Disconnecting a client: {reason}", reason=request.reason)
                session.client.disconnect()
            return
        command = COMMANDS.get(request.word)
        if command is None:
            stats.requests["", "unknown"] += 1
            session.error(f"Unknown request {request.word!r}; send help for the list", "unknown")
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
        session.send(Names(tuple(self.usernames()), self.now()))

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
        self._recipients = None
        self.stats.logins += 1
        self.stats.history_windows += 1
        self.log.info("{user} logged in", user=name)
        session.info(f"Login successful. Welcome, {name}!")
        window = self.window.event(self.now(), session.client.history_budget, self.history_format)
        if window.messages:
            session.history_cursor = window.messages[0].id
        session.send(window)

    def logout(self, session: Session) -> None:
        self.stats.logouts += 1
        self.log.info("{user} logged out", user=session.username)
        self._remove_user(session)
        session.info("Logged out")
        session.client.disconnect()

    def _remove_user(self, session: Session) -> None:
        if session.username is not None:
            self._users.pop(session.username.lower(), None)
            self._recipients = None
            session.username = None

    def page(self, session: Session, content: Any) -> None:
        """
        Send the page of history before the oldest message C{session} was
        shown: C{content} is how many messages (a number or a string of
        digits; by default the history limit, at most L{MAX_PAGE}).
        """
        if content in NO_ARGUMENT:
            count = min(self.window.limit, MAX_PAGE) or MAX_PAGE
        elif isinstance(content, int) and not isinstance(content, bool) and content > 0:
            count = min(content, MAX_PAGE)
        elif isinstance(content, str) and _COUNT.fullmatch(content.strip()):
            count = min(int(content), MAX_PAGE)
        else:
            session.error(f"history takes a number of messages, 1 to {MAX_PAGE}: history 50")
            return
        cursor = session.history_cursor
        if cursor is None:
            newest = self.window.newest_id
            if newest is None:
                session.info("No older messages")
                return
            cursor = newest + 1  # shown nothing yet (an empty window at login): from now
        session.wait()

        def got(stored: List[StoredMessage]) -> None:
            budget = session.client.history_budget if session.connected else None
            messages = _chat_messages(stored)
            if budget is not None:
                messages = newest_within(messages, budget, self.history_format)
            if not messages:
                session.info("No older messages")
            else:
                self.stats.history_pages += 1
                session.history_cursor = messages[0].id
                session.send(HistoryWindow(messages, self.now(), login=False))

        def failed(failure: Failure) -> None:
            self._store_failed(failure, "read older history")
            session.error("The server could not read older history; try again later", "store")

        d = self.store.before(LOBBY, cursor, count)
        d.addCallbacks(got, failed)
        d.addBoth(lambda _: session.resume())

    def publish(self, session: Session, text: Any) -> None:
        """
        Store a message, then broadcast it to everyone logged in.
        """
        error = self._message_error(text)
        if error is not None:
            session.error(error)
            return
        assert session.username is not None
        message = Message(LOBBY, self.now(), session.username, text)
        self._pending.append((session, message))
        session.wait()
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
        d = self.store.append([m for _, m in batch])
        d.addCallbacks(self._stored, self._not_stored, (batch,), None, (batch,))
        d.addBoth(self._store_done)

    def _flush_after_reads(self) -> None:
        self._flush_call = self.clock.callLater(0, self.flush)

    def _stored(self, ids: List[int], batch: List[Tuple[Session, Message]]) -> None:
        messages = [
            ChatMessage(id, m.room, m.timestamp, m.sender, m.content)
            for id, (_, m) in zip(ids, batch)
        ]
        self.window.extend(messages)
        self.stats.messages_stored += len(messages)
        # One event for every recipient and for the whole batch: the cost
        # per recipient is paid once per batch, not once per message.
        self._broadcast(Broadcast(messages))
        _resume_senders(batch)

    def _not_stored(self, failure: Failure, batch: List[Tuple[Session, Message]]) -> None:
        self._store_failed(failure, f"store {len(batch)} messages")
        for session, _ in batch:
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

    def _broadcast(self, event: Broadcast) -> None:
        recipients = self._recipients
        if recipients is None:
            recipients = self._recipients = tuple(s.client for s in self._users.values())
        stats = self.stats
        stats.deliveries += len(event.messages) * len(recipients)
        stats.bytes_delivered += len(event.data) * len(recipients)
        for client in recipients:
            try:
                client.send(event)
            except Exception:
                self.log.failure("Delivery to one client failed")


def _resume_senders(batch: List[Tuple[Session, Message]]) -> None:
    """
    Let the senders of a batch go on with their next requests, once each.
    """
    for session in dict.fromkeys(session for session, _ in batch):
        session.resume()


def _chat_messages(stored: List[StoredMessage]) -> List[ChatMessage]:
    return [ChatMessage(m.id, m.room, m.timestamp, m.sender, m.content) for m in stored]
