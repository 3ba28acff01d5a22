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

from typing import Any, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from chat.core.commands import COMMANDS
from chat.core.history import History
from chat.core.interfaces import IChatClient, IFlowControlledClient
from chat.core.limits import Limits
from chat.core.rules import SERVER_NAME, USERNAME
from chat.core.session import Session
from chat.store import IMessageStore, Message, StoreError
from chat.wire import DecodeError, Request, encode_response, format_timestamp


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
        limits: Optional[Limits] = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.limits = limits if limits is not None else Limits()
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
