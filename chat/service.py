"""
The chat core: sessions, the rules of the standard, dispatch, history and
fan-out. It knows nothing of sockets.

Each connection is a L{Session}; the transport gives it what it decoded
(L{chat.wire.Request} or L{chat.wire.DecodeError}) and the core answers
through the small L{IChatClient} interface, always with bytes made by
L{chat.wire.encode_response}. A broadcast is encoded once and the same bytes
go to every recipient.

Requests are dispatched through L{COMMANDS}, the table that also writes the
C{help} text, so the two never disagree.

Messages are stored before they are shown to anyone: a C{msg} joins a batch
that is written to the store in one transaction at the end of the reactor
turn, then broadcast. Until then the sender's later requests wait in its
session's inbox, so each client sees its responses in the order it asked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from chat.store import IMessageStore, Message, StoreError
from chat.wire import DecodeError, Request, encode_json, encode_response, format_timestamp

#: The name the server uses as C{sender} of C{error}, C{info} and C{history}.
SERVER_NAME = "server"

_USERNAME = re.compile(r"[A-Za-z0-9]+")

#: Values of C{content} that clients in the field send for "no argument".
NO_ARGUMENT = (None, "", "None")


class IChatClient(Interface):
    """
    What the core needs of a connected client.
    """

    max_response_size = Attribute(
        "The largest single response, in bytes, this client can take, or None "
        "for no limit. A long history is split into several responses to fit."
    )

    def deliver(data: bytes) -> None:
        """
        Send encoded responses: one or more complete JSON objects, each
        followed by its newline (a broadcast batch comes as one C{data}).
        """

    def disconnect() -> None:
        """
        Close the connection once what was delivered has been sent.
        """


class IFlowControlledClient(IChatClient):
    """
    A client whose transport can be slowed down; the core uses these when a
    client provides them (a test fake need not).
    """

    def pause_reading() -> None:
        """
        Stop reading requests from the client (its requests wait in TCP).
        """

    def resume_reading() -> None:
        """
        Read requests again.
        """

    def deliver_burst(responses: List[bytes]) -> None:
        """
        Send a one-off burst of responses (the history at login), not counted
        against the client's send-queue limit.
        """


#: A session with this many requests waiting stops reading its connection
#: until they are all handled, so a fast sender waits in TCP, not in memory.
READ_PAUSE_BACKLOG = 16

#: Messages one client may add to a batch behind its first: enough to share
#: a transaction and a broadcast, few enough that a client sending as fast
#: as it can (with flood control off) delays the others only a little.
BATCH_SHARE = 16


@dataclass(frozen=True)
class Limits:
    """
    Bounds the core enforces on what clients send.

    @ivar flood_rate: requests per second a client may make in the long run;
        0 turns flood control off (the default here, for embedding and tests;
        C{twistd chat} turns it on).
    @ivar flood_burst: requests a client may make at once before its rate
        applies.
    @ivar max_waiting: requests that may wait in one client's inbox; past it
        a request is refused with an C{error}, and a client that goes on
        sending that many more is disconnected.
    """

    max_username_length: int = 32
    max_message_length: int = 1000
    flood_rate: float = 0.0
    flood_burst: int = 20
    max_waiting: int = 1000


class TokenBucket:
    """
    A token bucket: C{burst} tokens at most, refilled at C{rate} a second.
    """

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self._stamp = clock.seconds()

    def take(self) -> bool:
        """
        Take a token if there is one.
        """
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def delay(self) -> float:
        """
        Seconds until the next token (at least a millisecond: clock times
        near 1.7e9 have a resolution of about 2e-7 seconds, and a shorter
        wait could see no time pass at all).
        """
        return max(0.001, (1 - self.tokens) / self.rate)


class History:
    """
    Every message the server issued, kept encoded the way a C{history}
    response carries it, so a login costs one copy and no JSON encoding.

    @param item_format: C{"string"}: each item is the message response
        encoded as a JSON string (what most clients in the field expect);
        C{"object"}: each item is the message response itself.
    """

    def __init__(self, item_format: str = "string") -> None:
        if item_format not in ("string", "object"):
            raise ValueError(f"unknown history format {item_format!r}")
        self.item_format = item_format
        self._items: List[bytes] = []
        self._body = bytearray()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, message_line: bytes) -> None:
        """
        Add a message, given as its encoded C{message} response line.
        """
        obj = message_line.rstrip(b"\n")
        if self.item_format == "string":
            item = encode_json(obj.decode("utf-8")).encode("utf-8")
        else:
            item = obj
        if self._items:
            self._body += b","
        self._body += item
        self._items.append(item)

    def responses(self, timestamp: str, max_size: Optional[int] = None) -> List[bytes]:
        """
        The C{history} responses for a login: one, or with C{max_size} as many
        as needed to keep each under it (an item that alone is larger goes
        alone), in order.
        """
        template = encode_response(timestamp, SERVER_NAME, "history", [])
        cut = template.rindex(b"[]") + 1
        prefix, suffix = template[:cut], template[cut:]
        overhead = len(prefix) + len(suffix)
        if max_size is None or overhead + len(self._body) <= max_size:
            return [b"".join((prefix, self._body, suffix))]  # one copy of the body
        out: List[bytes] = []
        chunk: List[bytes] = []
        size = overhead
        for item in self._items:
            extra = len(item) + (1 if chunk else 0)
            if chunk and size + extra > max_size:
                out.append(prefix + b",".join(chunk) + suffix)
                chunk, size = [], overhead
                extra = len(item)
            chunk.append(item)
            size += extra
        out.append(prefix + b",".join(chunk) + suffix)
        return out


@dataclass(frozen=True)
class Command:
    """
    One row of the dispatch table.

    @ivar word: the request word.
    @ivar argument: how C{help} names the argument, or None if there is none.
    @ivar summary: what the request does, for C{help}.
    @ivar login_required: whether the client must be logged in.
    @ivar handler: called with the session and the request's content.
    """

    word: str
    argument: Optional[str]
    summary: str
    login_required: bool
    handler: Callable[["Session", Any], None]

    def usage(self) -> str:
        return f"{self.word} <{self.argument}>" if self.argument else self.word


def _login(session: "Session", content: Any) -> None:
    session.service.login(session, content)


def _logout(session: "Session", content: Any) -> None:
    session.service.logout(session)


def _msg(session: "Session", content: Any) -> None:
    session.service.publish(session, content)


def _names(session: "Session", content: Any) -> None:
    session.info(", ".join(session.service.usernames()))


def _help(session: "Session", content: Any) -> None:
    session.info(help_text())


COMMANDS: Dict[str, Command] = {
    c.word: c
    for c in [
        Command("login", "username", "log in (letters A-Z, a-z and digits only)", False, _login),
        Command("logout", None, "log out and disconnect", True, _logout),
        Command("msg", "message", "send a message to everyone in the chat", True, _msg),
        Command("names", None, "list the users logged in", True, _names),
        Command("help", None, "show this help", False, _help),
    ]
}


def help_text() -> str:
    """
    The C{help} answer, made from L{COMMANDS}.
    """
    width = max(len(c.usage()) for c in COMMANDS.values())
    lines = ["Requests this server supports:"]
    lines += [f"  {c.usage().ljust(width)}  {c.summary}" for c in COMMANDS.values()]
    return "\n".join(lines)


#: Stands in the inbox for a run of requests refused for flooding.
_REFUSED = DecodeError("Too many requests waiting; some were not handled. Slow down")


class Session:
    """
    One connected client: its name once logged in, and its inbox of
    requests not yet handled.
    """

    def __init__(self, service: "ChatService", client: IChatClient) -> None:
        self.service = service
        self.client = client
        self.username: Optional[str] = None
        self.connected = True
        # A list, not a deque: an empty deque takes 760 bytes, per connection,
        # and an inbox is short.
        self._inbox: List[Union[Request, DecodeError]] = []
        self._waiting = False
        self._joined = 0  # messages added to the batch behind the first
        limits = service.limits
        self._bucket: Optional[TokenBucket] = None
        if limits.flood_rate > 0:
            self._bucket = TokenBucket(limits.flood_rate, limits.flood_burst, service.clock)
        self._timer: Optional[IDelayedCall] = None
        self._flow: Optional[IFlowControlledClient] = (
            client if IFlowControlledClient.providedBy(client) else None  # type: ignore[assignment]
        )
        self._reading_paused = False
        self._refused = 0

    @property
    def backlog(self) -> int:
        """
        How many requests wait to be handled.
        """
        return len(self._inbox)

    def receive(self, request: Union[Request, DecodeError]) -> None:
        """
        Handle a request from the client, after those before it.

        Past L{Limits.max_waiting} waiting requests, a request is refused:
        one C{error} answers a run of refused requests, in order, and a
        client that has as many again refused in one run (with no request
        let in between) is disconnected.
        """
        inbox = self._inbox
        bound = self.service.limits.max_waiting
        if len(inbox) < bound:
            self._refused = 0  # a run of refusals ends when one gets in
        else:
            self._refused += 1
            if self._refused > bound:
                self.service.log.warn(
                    "Disconnecting {user} for flooding", user=self.username or "a client"
                )
                self.error("Disconnected for flooding")
                self.connected = False
                inbox.clear()
                self.client.disconnect()
                return
            if not inbox or inbox[-1] is not _REFUSED:
                inbox.append(_REFUSED)
            return
        inbox.append(request)
        self._drain()
        if self._flow is not None and len(inbox) >= READ_PAUSE_BACKLOG and not self._reading_paused:
            self._reading_paused = True
            self._flow.pause_reading()

    def lost(self) -> None:
        """
        The connection is gone: log out at once, drop what is left.
        """
        self.connected = False
        self._inbox.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.service.forget(self)

    def wait(self) -> None:
        """
        Hold further requests until L{resume} (a message is being stored).
        """
        self._waiting = True

    def resume(self) -> None:
        self._waiting = False
        self._joined = 0
        self._drain()

    def _drain(self) -> None:
        inbox = self._inbox
        bucket = self._bucket
        while inbox and self.connected:
            # While a message is being stored, a valid msg right behind it
            # joins the same batch: it is still broadcast after it.
            joining = self._waiting
            if joining and (
                self._joined >= BATCH_SHARE or not self.service.joins_batch(self, inbox[0])
            ):
                break
            if bucket is not None and not bucket.take():
                # Flood control: the rest waits for tokens.
                if self._timer is None:
                    self._timer = self.service.clock.callLater(bucket.delay(), self._tick)
                break
            if joining:
                self._joined += 1
            self.service.dispatch(self, inbox.pop(0))
        if self._reading_paused and not inbox and self.connected:
            self._reading_paused = False
            assert self._flow is not None
            self._flow.resume_reading()

    def _tick(self) -> None:
        self._timer = None
        self._drain()

    def send(self, response: str, content: Any) -> None:
        if self.connected:
            self.client.deliver(self.service.response(response, content))

    def info(self, text: str) -> None:
        self.send("info", text)

    def error(self, text: str) -> None:
        self.send("error", text)


class ChatService:
    """
    The chat: who is logged in, the history, and the rules.

    @param store: where messages are kept.
    @param clock: the reactor's time and scheduling.
    """

    log = Logger()

    def __init__(
        self,
        store: IMessageStore,
        clock: IReactorTime,
        history_format: str = "string",
        limits: Limits = Limits(),
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits
        self.history = History(history_format)
        self._users: Dict[str, Session] = {}  # folded name -> session
        self._recipients: Optional[Tuple[IChatClient, ...]] = None
        self._pending: List[Tuple[Session, Message]] = []
        self._flush_call: Optional[IDelayedCall] = None
        self._sessions: Dict[Session, None] = {}
        self._stopping = False
        self._gone: List[Deferred] = []

    # Life cycle

    def load(self) -> None:
        """
        Load the history from the store.
        """
        for m in self.store.load():
            self.history.append(encode_response(m.timestamp, m.sender, "message", m.content))
        self.log.info("Loaded {count} messages of history", count=len(self.history))

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
        self.flush()
        for session in list(self._sessions):
            if session.username is not None:
                session.info(reason)
            session.client.disconnect()
        done: Deferred = Deferred()
        if not self._sessions:
            done.callback(None)
            return done
        self._gone.append(done)
        timer = self.clock.callLater(timeout, self._all_gone)

        def stop_timer(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        done.addBoth(stop_timer)
        return done

    def _all_gone(self) -> None:
        waiting, self._gone = self._gone, []
        if self._sessions:
            self.log.warn(
                "Stopping with {count} connections not yet closed", count=len(self._sessions)
            )
        for d in waiting:
            d.callback(None)

    # Connections

    def connect(self, client: IChatClient) -> Session:
        session = Session(self, client)
        self._sessions[session] = None
        return session

    def forget(self, session: Session) -> None:
        self._sessions.pop(session, None)
        if session.username is not None:
            self.log.info("{user} disconnected", user=session.username)
            self._remove_user(session)
        if self._gone and not self._sessions:
            self._all_gone()

    # The rules

    def response(self, response: str, content: Any, sender: str = SERVER_NAME) -> bytes:
        """
        Encode a response stamped with the current time.
        """
        return encode_response(format_timestamp(self.clock.seconds()), sender, response, content)

    def dispatch(self, session: Session, request: Union[Request, DecodeError]) -> None:
        if self._stopping:
            return
        if isinstance(request, DecodeError):
            session.error(request.reason)
            if request.fatal:
                self.log.info("Disconnecting a client: {reason}", reason=request.reason)
                session.client.disconnect()
            return
        command = COMMANDS.get(request.word)
        if command is None:
            session.error(f"Unknown request {request.word!r}; send help for the list")
            return
        if command.login_required and session.username is None:
            session.error("Not logged in: log in first with login <username>")
            return
        content = request.content
        if command.argument is None:
            content = None
        command.handler(session, content)

    def usernames(self) -> List[str]:
        return [s.username for s in self._users.values() if s.username]

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
        if not _USERNAME.fullmatch(name):
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
        self.log.info("{user} logged in", user=name)
        session.info(f"Login successful. Welcome, {name}!")
        timestamp = format_timestamp(self.clock.seconds())
        responses = self.history.responses(timestamp, session.client.max_response_size)
        client = session.client
        if IFlowControlledClient.providedBy(client):
            client.deliver_burst(responses)
        else:
            for data in responses:
                client.deliver(data)

    def logout(self, session: Session) -> None:
        self.log.info("{user} logged out", user=session.username)
        self._remove_user(session)
        session.info("Logged out")
        session.client.disconnect()

    def _remove_user(self, session: Session) -> None:
        if session.username is not None:
            self._users.pop(session.username.lower(), None)
            self._recipients = None
            session.username = None

    def publish(self, session: Session, text: Any) -> None:
        """
        Store a message, then broadcast it to everyone logged in.
        """
        error = self._message_error(text)
        if error is not None:
            session.error(error)
            return
        assert session.username is not None
        message = Message(format_timestamp(self.clock.seconds()), session.username, text)
        self._pending.append((session, message))
        session.wait()
        if self._flush_call is None:
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
        Store the pending messages in one transaction, then broadcast them.
        """
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self.store.append([m for _, m in batch])
        except Exception as e:
            if isinstance(e, StoreError):
                self.log.error(
                    "Could not store {count} messages: {error}", count=len(batch), error=e
                )
            else:
                self.log.failure("Could not store {count} messages", count=len(batch))
            for session, _ in batch:
                session.error("The server could not store your message; it was not sent")
        else:
            lines = []
            for _, m in batch:
                data = encode_response(m.timestamp, m.sender, "message", m.content)
                self.history.append(data)
                lines.append(data)
            # One delivery per recipient for the whole batch: the per-recipient
            # cost is paid once per reactor turn, not once per message.
            self._broadcast(b"".join(lines))
        for session in dict.fromkeys(session for session, _ in batch):
            session.resume()

    def _broadcast(self, data: bytes) -> None:
        recipients = self._recipients
        if recipients is None:
            recipients = self._recipients = tuple(s.client for s in self._users.values())
        for client in recipients:
            try:
                client.deliver(data)
            except Exception:
                self.log.failure("Delivery to one client failed")
