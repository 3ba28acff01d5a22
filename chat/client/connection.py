"""
The client's side of the network.

- L{ChatClientProtocol}: one connection. It sends requests (compact JSON and
  a newline, one per write, spaced so that no two share a segment), decodes
  responses with L{chat.wire.StreamDecoder}, matches answers to the requests
  it wrote, and hands every value to a view. Over TLS it counts as connected
  only once the handshake has succeeded. It knows nothing of stdio.

  It asks for the extensions (L{chat.client.rooms}) with a C{cap} request,
  the first thing it writes on a connection, and writes nothing else until
  that is answered (or L{CAP_TIMEOUT} has passed), so no answer can be
  taken for another's. The answer is the client's own business and is not
  shown: an C{info} with a C{caps} list grants those extensions; anything
  else (an C{error} from a server that does not know C{cap}, whatever its
  words) grants none, and the client is then the standard client it was.
  A server may also send something of its own before it reads the C{cap}
  (our server's C{error} "Server full", and then it closes): an answer that
  grants nothing is shown after all if the server closes the connection
  before it sends anything else.

  A typed line still waiting to be written when the connection ends is
  named to the user (L{NOT_SENT}), never sent on a later connection.
- L{ChatSession}: the session across connections, on Twisted's
  L{ClientService}. When a connection drops it says so, retries with
  backoff, logs in again under the same name (retrying the login a few
  times while the server still holds the old connection's name), joins
  the rooms it was in again, and carries on; with reconnection off, the
  first drop ends the session.
"""

from __future__ import annotations

import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Set, Tuple

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import error as ierror
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from chat.client.commands import parse_input
from chat.client.display import USERNAME, Entry, field, interpret, names_from, response_word
from chat.client.rooms import PRESENCE_EVENTS, RoomState, granted, rejoin_requests
from chat.wire import DecodeError, StreamDecoder, encode_request

#: The largest single response the client accepts. Servers send the whole
#: history in one response, so this is far above the server's request bound.
MAX_RESPONSE_SIZE = 64 * 1024 * 1024

#: Seconds between two requests. Most servers in the field read one request
#: per C{recv()}; requests written back to back (a pasted or piped script)
#: would share a TCP segment and crash them.
REQUEST_GAP = 0.05

#: Logging in again after a reconnect: how many tries, how many seconds
#: apart. The server may still hold the name for the old connection until
#: it notices that connection is gone.
RELOGIN_ATTEMPTS = 5
RELOGIN_DELAY = 1.0

#: Seconds to wait for the answer to the C{cap} request that opens a
#: connection before sending the rest anyway (a server that answers unknown
#: requests with nothing at all).
CAP_TIMEOUT = 3.0

#: Why a session ends whose server closed the connection when asked for
#: extensions.
CLOSED_ON_CAP = (
    "the server closed the connection when asked for extensions (cap); "
    "try again with --no-extensions"
)

#: How long a session closing as the client stops (SIGTERM, SIGHUP) waits
#: for its logout to go out and the connection to close.
CLOSE_WAIT = 1.0

#: How the user is told of a line entered but never written.
NOT_SENT = "Not sent before the connection ended: "
#: ... and of a line entered once the client was quitting or closing.
NOT_SENT_QUITTING = "Not sent, the client is quitting: "

#: What connectionLost gets when the reason is not given.
_CONNECTION_DONE = Failure(ierror.ConnectionDone())


class IChatView(Interface):
    """
    What the client needs of whatever shows the session.
    """

    def received(value: Any) -> None:
        """
        One value decoded from the server's stream: a JSON value, or a
        L{chat.wire.DecodeError} for data that was not JSON.
        """

    def notice(text: str) -> None:
        """
        A line from the client itself (the connection dropped, reconnecting,
        logged in again).
        """


@dataclass(frozen=True)
class Ending:
    """
    How a connection (or a session) ended.

    @ivar expected: the user asked for it (quit, end of input, or a
        C{logout} that was sent and answered).
    @ivar reason: a few words for the user.
    @ivar final: reconnecting would not help (the server sent a response too
        large to take).
    """

    expected: bool
    reason: str
    final: bool = False


def same_name(a: Any, b: Any) -> bool:
    """
    Whether two usernames are the same (servers compare them in any case).
    """
    return isinstance(a, str) and isinstance(b, str) and a.strip().lower() == b.strip().lower()


@implementer(IHandshakeListener)
class ChatClientProtocol(Protocol):
    """
    One connection to a chat server.

    Requests go out one per write, each compact JSON and a newline, at least
    L{REQUEST_GAP} seconds apart, and only once the connection is ready (L{when_ready}).
    Responses are decoded as a stream and each value is given to the view.
    L{ended} fires with an L{Ending} when the connection is gone.

    An answer is matched to the oldest request written and not yet answered:
    any response but C{history} and C{presence} answers it, except that a
    C{message} answers a C{msg} or C{pm} only when it comes from the user
    (the broadcast or echo of their own message), so other people's
    messages are not taken for answers; a C{history} answers only a
    C{history} request or a C{pm} with a user and no text (the private
    history), and never when it is the one that follows an accepted
    C{login} or the C{join} of a new room.

    @ivar names: usernames seen (senders and C{names} answers), for
        completion.
    @ivar username: the name of the last login the server accepted.
    @ivar on_reply: called with C{(request, content, response)} for each
        answer (after the view was given the response).
    @ivar rooms: the extensions and rooms of the session, followed from the
        answers before the view is given them; its C{wanted} extensions are
        asked for on connecting (nothing is asked when there are none).
    """

    def __init__(
        self,
        view: Any,
        clock: IReactorTime,
        max_size: int = MAX_RESPONSE_SIZE,
        names: Optional[Set[str]] = None,
        rooms: Optional[RoomState] = None,
    ) -> None:
        self.view = view
        self.clock = clock
        self.decoder = StreamDecoder(max_size)
        self.names: Set[str] = set() if names is None else names
        self.username: Optional[str] = None
        self.login_sent = False
        self.logout_sent = False
        self._ready_waiters: List[Deferred[ChatClientProtocol]] = []
        self.ended: Deferred[Ending] = Deferred()
        self.on_reply: Callable[[str, Any, Any], None] = lambda request, content, value: None
        self.rooms = RoomState(wanted=()) if rooms is None else rooms
        # Requests waiting for their turn (REQUEST_GAP); login_sent and
        # logout_sent count those too. The flag marks the client's own
        # requests (cap), whose answers the view is not given; the line is
        # what the user typed, if the request comes from one.
        self._queue: Deque[Tuple[str, Any, bytes, bool, Optional[str]]] = deque()
        # Requests written and not answered yet, oldest first.
        self._awaiting: Deque[Tuple[str, Any, bool]] = deque()
        # While the opening cap is unanswered: the call that gives up on it.
        self._cap_wait: Optional[IDelayedCall] = None
        self._opening_cap = False
        # The answer to the opening cap when it granted nothing, until the
        # next value arrives: shown if the server closes before that.
        self._withheld: Any = None
        # History responses due after answers (login, join) that are not
        # answers themselves.
        self._histories_due = 0
        # An info that answered names held no names (a broadcast that came
        # first): the next info that does is taken for the answer.
        self._names_owed = False
        self._login_written = False
        self._logout_written = False
        self._logout_answered = False
        self._next_send: Optional[IDelayedCall] = None
        self._last_send: Optional[float] = None
        self._quit_linger: Optional[float] = None
        self._closer: Optional[IDelayedCall] = None
        self._quiet: Optional[Tuple[float, float]] = None
        self._quiet_call: Optional[IDelayedCall] = None
        self._closing = False
        self._failure: Optional[str] = None
        self._connected = False
        self._usable = False

    def when_ready(self) -> Deferred[ChatClientProtocol]:
        """
        A Deferred that fires with this protocol once requests can be sent:
        at once over TCP, after the handshake over TLS. It fails with the
        reason if the connection is lost before.
        """
        d: Deferred[ChatClientProtocol] = Deferred()
        if self._usable:
            d.callback(self)
        elif self.ended.called:
            d.errback(ierror.ConnectionLost("the connection was lost before it was ready"))
        else:
            self._ready_waiters.append(d)
        return d

    @property
    def unanswered(self) -> int:
        """
        How many requests were written and have no answer yet.
        """
        return len(self._awaiting)

    # Sending

    def send_line(self, line: str) -> Optional[Tuple[str, Optional[str]]]:
        """
        Send what the user typed; return the request, or None for a blank
        line.
        """
        request = parse_input(line)
        if request is not None:
            self.send_request(*request, line=line)
        return request

    def send_request(
        self, word: str, content: Any, own: bool = False, line: Optional[str] = None
    ) -> None:
        """
        Queue one request. Nothing is sent once the client is closing or
        quitting (a typed line is named to the user then).

        @param own: the client's own request, whose answer is not shown.
        @param line: the line the user typed for it, named to the user if
            the connection ends before the request is written.
        """
        if self._closing or self._quit_linger is not None:
            if line is not None:
                # Closing on a failure of its own (a response too large) is
                # the connection ending, not the user quitting.
                ending = NOT_SENT if self._failure is not None else NOT_SENT_QUITTING
                self.view.notice(ending + line)
            return
        if word == "login":
            self.login_sent = True
        elif word == "logout":
            self.logout_sent = True
        self._queue.append((word, content, encode_request(word, content), own, line))
        self._kick()

    def send_cap(self) -> None:
        """
        Ask again for the extensions the session wants (its answer is not
        shown).
        """
        self.send_request("cap", self.rooms.cap_content(), own=True)

    def _kick(self) -> None:
        # Send the next request now, or when REQUEST_GAP has passed.
        if self._next_send is None and self._usable and self._cap_wait is None:
            now = self.clock.seconds()
            if self._last_send is None or now - self._last_send >= REQUEST_GAP - 1e-6:
                self._send_next()
            else:
                self._next_send = self.clock.callLater(
                    REQUEST_GAP - (now - self._last_send), self._send_next
                )

    def _send_next(self) -> None:
        self._next_send = None
        if not self._queue or not self._usable or self._cap_wait is not None:
            return
        word, content, data, own, _ = self._queue.popleft()
        self.transport.write(data)
        self._awaiting.append((word, content, own))
        if word == "login":
            self._login_written = True
        elif word == "logout":
            self._logout_written = True
        self._last_send = self.clock.seconds()
        if own and word == "cap" and self._opening_cap:
            # The opening cap: nothing else goes out until it is answered.
            self._opening_cap = False
            self._cap_wait = self.clock.callLater(CAP_TIMEOUT, self._cap_unanswered)
            self._rearm_quiet()
            return
        if self._queue:
            self._next_send = self.clock.callLater(REQUEST_GAP, self._send_next)
        elif self._quit_linger is not None:
            self._start_closer()
        self._rearm_quiet()

    def quit(self, linger: float = 0.0, logout: bool = False) -> None:
        """
        End the session: send what is queued, then close the connection
        C{linger} seconds later (at once if the server closes first).

        @param logout: first send C{logout} if a C{login} went out and no
            C{logout} did, so that a server that cannot take a dropped
            client is not left with one.
        """
        if self._closing or self._quit_linger is not None:
            return
        if logout and self.login_sent and not self.logout_sent:
            self.send_request("logout", None)
        self._quit_linger = linger
        if not self._queue:
            self._start_closer()

    def quit_when_quiet(self, quiet: float, patience: float, logout: bool = False) -> None:
        """
        End the session once every queued request is written, the server
        has answered each, and it has then sent nothing for C{quiet}
        seconds. While answers are missing the wait is C{patience} seconds
        of quiet instead, after which the ending is a failure (no answer).
        Every byte received starts the wait again, so a long history still
        arriving is never cut off.

        @param logout: first send C{logout} as L{quit} does.
        """
        if self._closing:
            return
        if logout and self.login_sent and not self.logout_sent:
            self.send_request("logout", None)
        self._quiet = (quiet, patience)
        self._rearm_quiet()

    def _rearm_quiet(self) -> None:
        if self._quiet is None or self._closing:
            return
        if self._quiet_call is not None and self._quiet_call.active():
            self._quiet_call.cancel()
        self._quiet_call = None
        if self._queue:
            # The last write arms it again.
            return
        quiet, patience = self._quiet
        self._quiet_call = self.clock.callLater(
            patience if self._awaiting else quiet, self._quiet_over
        )

    def _quiet_over(self) -> None:
        self._quiet_call = None
        if self._awaiting:
            words = ", ".join(word for word, *_ in self._awaiting)
            count = len(self._awaiting)
            self._failure = (
                f"no answer from the server to {count} request{'s' if count > 1 else ''} "
                f"({words}) in {self._quiet[1] if self._quiet else 0:g} seconds"
            )
        self.close()

    def _start_closer(self) -> None:
        if self._closer is None and self._quit_linger is not None:
            if self._quit_linger <= 0:
                self.close()
            else:
                self._closer = self.clock.callLater(self._quit_linger, self.close)

    def close(self, logout: bool = False) -> None:
        """
        Close the connection now; the ending is expected.

        @param logout: first write C{logout} at once, if a C{login} was
            written and no C{logout} was (most servers in the field cannot
            take a client that drops without one).
        """
        self._closer = None
        if self._closing:
            return
        self._closing = True
        if self._connected:
            if logout and self._login_written and not self._logout_written:
                self.transport.write(encode_request("logout", None))
                self._logout_written = True
            self.transport.loseConnection()

    # Receiving

    def connectionMade(self) -> None:
        self._connected = True
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:
                pass
        if not ISSLTransport.providedBy(self.transport):
            self._now_usable()

    def handshakeCompleted(self) -> None:
        self._now_usable()

    def _now_usable(self) -> None:
        if self._usable:
            return
        self._usable = True
        if self.rooms.wanted:
            self._opening_cap = True
            content = self.rooms.cap_content()
            self._queue.appendleft(("cap", content, encode_request("cap", content), True, None))
        if self._queue and self._next_send is None:
            self._send_next()
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    def dataReceived(self, data: bytes) -> None:
        for value in self.decoder.feed(data):
            self._withheld = None
            answered = self._note(value)
            if answered is None or not answered[2]:
                self.view.received(value)
            if answered is not None and not answered[2]:
                self.on_reply(answered[0], answered[1], value)
            if isinstance(value, DecodeError) and value.fatal:
                self._failure = "the server sent a response too large to take"
                self._closing = True
                self.transport.loseConnection()
                return
        self._rearm_quiet()

    def _note(self, value: Any) -> Optional[Tuple[str, Any, bool]]:
        # Learn what a value tells (names, answers, rooms); return the
        # request it answers, if any.
        word = response_word(value)
        if word is None:
            return None
        content = field(value, "content")
        if word == "history":
            for entry in interpret(value):
                self._note_sender(entry)
        elif word == "message":
            self._note_sender(Entry(word, sender=field(value, "sender")))
        elif word == "presence":
            event = PRESENCE_EVENTS.get(content if isinstance(content, str) else "")
            if event is not None and event[0]:
                self._note_sender(Entry("message", sender=field(value, "sender")))
            return None
        elif word not in ("info", "error") and isinstance(content, list):
            self.names.update(names_from(content))
        answered = self._match_answer(word, value)
        if word == "info" and self._names_owed and (answered is None or answered[0] != "names"):
            # An info broadcast was taken for the answer to names: this may
            # be the answer.
            self._names_owed = not self._take_names(value)
        return answered

    def _take_names(self, value: Any) -> bool:
        # Learn the names in an answer to names; whether it was one. Once
        # logged in, the user is among the names (an info broadcast such
        # as "bob has joined" is not, and its words are not names).
        found = names_from(field(value, "content"))
        if not found:
            return False
        if self.username is not None and not any(same_name(n, self.username) for n in found):
            return False
        self.names.update(found)
        return True

    def _answers(self, word: str, value: Any, request: str, content: Any) -> bool:
        # Whether a response of the kind `word` answers `request`.
        if word == "history":
            if self._histories_due > 0:
                self._histories_due -= 1
                return False
            return request == "history" or (request == "pm" and _pm_text(content) is None)
        if word == "message":
            if request not in ("msg", "pm"):
                return False
            sender = field(value, "sender")
            if same_name(sender, self.username):
                return True
            # A server that signs messages oddly (an empty, missing or
            # non-name sender): the echo of the very text sent answers it.
            sent = content if request == "msg" else _pm_text(content)
            return not (isinstance(sender, str) and USERNAME.fullmatch(sender.strip())) and (
                field(value, "content") == sent
            )
        return True

    def _match_answer(self, word: str, value: Any) -> Optional[Tuple[str, Any, bool]]:
        if not self._awaiting:
            if word == "history" and self._histories_due > 0:
                self._histories_due -= 1
            return None
        request, content, own = self._awaiting[0]
        if not self._answers(word, value, request, content):
            return None
        self._awaiting.popleft()
        if request == "login" and word == "info" and isinstance(content, str):
            self.username = content.strip()
            self._histories_due += 1
        elif request == "names" and word == "info":
            self._names_owed = not self._take_names(value)
        elif request == "logout":
            self._logout_answered = True
        elif request == "cap":
            self._cap_answered(value)
        if request == "join" and word == "info" and self.rooms.rooms_on:
            # A room joined (not one switched to) sends its history next.
            joining = field(value, "room")
            if isinstance(joining, str) and joining.lower() not in self.rooms.joined:
                self._histories_due += 1
        self.rooms.answered(request, content, value)
        return request, content, own

    def _cap_answered(self, value: Any) -> None:
        extensions = granted(value)
        self.rooms.set_extensions(extensions)
        if self._cap_wait is not None and not extensions:
            self._withheld = value
        self._end_cap_wait()

    def _cap_unanswered(self) -> None:
        # No answer in CAP_TIMEOUT: the server ignores what it does not
        # know. The opening cap is the only request written.
        self._cap_wait = None
        if self._awaiting and self._awaiting[0][0] == "cap":
            self._awaiting.popleft()
        self.rooms.set_extensions(frozenset())
        self._end_cap_wait()

    def _end_cap_wait(self) -> None:
        if self._cap_wait is not None and self._cap_wait.active():
            self._cap_wait.cancel()
        self._cap_wait = None
        if self._queue:
            self._kick()
        else:
            self._rearm_quiet()

    def _note_sender(self, entry: Entry) -> None:
        # Remember usernames for completion.
        if entry.kind == "message" and isinstance(entry.sender, str):
            if USERNAME.fullmatch(entry.sender):
                self.names.add(entry.sender)

    def connectionLost(self, reason: Failure = _CONNECTION_DONE) -> None:
        self._connected = False
        # Closed on the opening cap, before answering it: a server that
        # drops a client for a request it does not know.
        closed_on_cap = self._cap_wait is not None and not self._closing
        for call in (self._next_send, self._closer, self._quiet_call, self._cap_wait):
            if call is not None and call.active():
                call.cancel()
        self._next_send = self._closer = self._quiet_call = self._cap_wait = None
        unsent = [line for *_, line in self._queue if line is not None]
        self._queue.clear()
        if self._withheld is not None and not self._closing:
            # Not an answer to cap after all: the server's reason to close.
            self.view.received(self._withheld)
        self._withheld = None
        for line in unsent:
            # Shown as sent, but never written (it waited for its turn or
            # for the answer to cap): not sent again on a new connection,
            # where it could be stale or land in another room.
            self.view.notice(NOT_SENT + line)
        clean = not isinstance(reason, Failure) or reason.check(ierror.ConnectionDone)
        # A logout counts once it was written and then answered, or the
        # server closed the connection after it (as most servers do).
        logged_out = self._logout_written and (self._logout_answered or clean)
        if self._failure is not None:
            ending = Ending(False, self._failure, final=True)
        elif closed_on_cap:
            # Each new connection would end the same way.
            ending = Ending(False, CLOSED_ON_CAP, final=True)
        elif self._closing or logged_out:
            ending = Ending(True, "connection closed")
        elif not clean:
            ending = Ending(False, f"connection lost: {describe_error(reason.value)}")
        else:
            ending = Ending(False, "the server closed the connection")
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(reason if isinstance(reason, Failure) else _CONNECTION_DONE)
        self.ended.callback(ending)


class _NoticingEndpoint:
    """
    Wraps a client endpoint to remember why the last attempt failed.
    """

    def __init__(self, endpoint: Any, failed: Callable[[Failure], None]) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> Deferred:
        def failed(reason: Failure) -> Failure:
            self._failed(reason)
            return reason

        return self._endpoint.connect(factory).addErrback(failed)


@implementer(IChatView)
class ChatSession:
    """
    The client's session with one server, across connections.

    The front end sends through L{send_line} and L{quit}; the session shows
    what arrives through the front end's L{IChatView}. L{ended} fires with
    an L{Ending} once the session is over: the user quit or logged out, or
    the connection was lost and reconnection is off (or would not help).

    @param reconnect: after a drop, reconnect with backoff and log in again.
    @param retry_policy: seconds to wait before attempt N (L{backoffPolicy}
        from 0.5 s up to 30 s by default).
    @param rooms: the extensions to ask for and the rooms followed (all the
        client knows, by default).
    @ivar username: the name the server accepted at the last login, used to
        log in again after a reconnect.
    """

    def __init__(
        self,
        endpoint: Any,
        view: IChatView,
        clock: IReactorTime,
        reconnect: bool = True,
        retry_policy: Optional[Callable[[int], float]] = None,
        max_size: int = MAX_RESPONSE_SIZE,
        rooms: Optional[RoomState] = None,
    ) -> None:
        self.view = view
        self.clock = clock
        self.reconnect = reconnect
        self.names: Set[str] = set()
        self.rooms = RoomState() if rooms is None else rooms
        # The rooms and current room of the connection lost, to join again.
        self._rejoin: Tuple[List[str], Optional[str]] = ([], None)
        self.username: Optional[str] = None
        self.protocol: Optional[ChatClientProtocol] = None
        self.ended: Deferred[Ending] = Deferred()
        self._policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self._last_failure = "connection failed"
        self._relogin_tries = 0
        self._relogin_call: Optional[IDelayedCall] = None
        self._attached_before = False
        self._stopping = False
        self._max_size = max_size
        self.service = ClientService(
            _NoticingEndpoint(endpoint, self._attempt_failed),
            Factory.forProtocol(self._new_protocol),
            retryPolicy=self._retry_delay,
            clock=clock,
        )

    @property
    def connected(self) -> bool:
        """
        Whether requests can be sent now.
        """
        return self.protocol is not None

    async def start(self) -> None:
        """
        Connect for the first time; fails with the reason if that attempt
        fails (there is no retry before a first success).
        """
        self.service.startService()
        try:
            chat = await self.service.whenConnected(failAfterFailures=1)
            await chat.when_ready()
        except BaseException:
            self._stopping = True
            # Not from inside the service's own call that failed us.
            await deferLater(self.clock, 0, self.service.stopService)
            raise

    # What the protocol tells the session

    def received(self, value: Any) -> None:
        self.view.received(value)

    def notice(self, text: str) -> None:
        self.view.notice(text)

    def _attempt_failed(self, reason: Failure) -> None:
        self._last_failure = describe_error(reason.value)
        return None

    def _new_protocol(self) -> ChatClientProtocol:
        chat = ChatClientProtocol(
            self, self.clock, max_size=self._max_size, names=self.names, rooms=self.rooms
        )
        # Not ClientService's prepareConnection: a connection lost while
        # being prepared (a failed TLS handshake) is a state it cannot take.
        chat.when_ready().addCallbacks(self._attach, self._attempt_failed)
        return chat

    def _attach(self, chat: ChatClientProtocol) -> None:
        if self._stopping:
            chat.close()
            return
        self.protocol = chat
        chat.on_reply = self._replied
        chat.ended.addCallback(self._lost, chat)
        if self._attached_before:
            self.view.notice("Connected again.")
            if self.username is not None:
                self._relogin_tries = 0
                self._relogin()
        self._attached_before = True

    def _retry_delay(self, attempt: int) -> float:
        delay = self._policy(attempt)
        if self._attached_before and not self._stopping:
            self.view.notice(
                f"Cannot connect: {self._last_failure}. Trying again in {delay:.1f} s"
                if attempt > 1
                else f"Reconnecting in {delay:.1f} s (Ctrl-D quits)."
            )
        return delay

    def _lost(self, ending: Ending, chat: ChatClientProtocol) -> None:
        if chat is not self.protocol:
            return
        self.protocol = None
        self._cancel_relogin()
        self._rejoin = self.rooms.connection_lost()
        if ending.expected or ending.final or not self.reconnect or self._stopping:
            self._finish(ending)
            return
        self._last_failure = ending.reason
        reason = ending.reason[:1].upper() + ending.reason[1:]
        self.view.notice(f"{reason}.")

    def _finish(self, ending: Ending) -> None:
        self._stopping = True
        self._cancel_relogin()
        # Not from inside the service's own call that reported the loss.
        d = deferLater(self.clock, 0, self.service.stopService)

        def done(_: Any) -> None:
            if not self.ended.called:
                self.ended.callback(ending)

        d.addBoth(done)

    # Logging in again

    def _replied(self, request: str, content: Any, value: Any) -> None:
        if request != "login" or self.protocol is None:
            return
        word = response_word(value)
        if word == "info":
            again = self._relogin_tries > 0 or self._relogin_call is not None
            if again and same_name(content, self.username):
                self.view.notice(f"Logged in again as {self.protocol.username}.")
                if self.rooms.rooms_on:
                    for word, room in rejoin_requests(*self._rejoin):
                        self.protocol.send_request(word, room)
            self._rejoin = ([], None)
            self.username = self.protocol.username
            self._relogin_tries = 0
        elif self._relogin_tries > 0 and same_name(content, self.username):
            if self._relogin_tries < RELOGIN_ATTEMPTS:
                self._relogin_call = self.clock.callLater(RELOGIN_DELAY, self._relogin)
            else:
                self.view.notice(
                    f"Could not log in again as {self.username}; type login NAME to log in."
                )
                self._relogin_tries = 0

    def _relogin(self) -> None:
        self._relogin_call = None
        if self.protocol is None or self.username is None:
            return
        self._relogin_tries += 1
        self.protocol.send_request("login", self.username)

    def _cancel_relogin(self) -> None:
        if self._relogin_call is not None and self._relogin_call.active():
            self._relogin_call.cancel()
        self._relogin_call = None

    # What the front end asks

    def send_line(self, line: str) -> Optional[Tuple[str, Optional[str]]]:
        """
        Send a typed line; nothing is sent while disconnected, and the user
        is told so (plain mode reads on after the connection ended; the
        interactive front end keeps the line instead of giving it).
        """
        if self.protocol is None:
            if parse_input(line) is not None:
                self.view.notice(NOT_SENT + line)
            return None
        return self.protocol.send_line(line)

    def send_request(self, word: str, content: Any) -> None:
        """
        Send one request; nothing is sent while disconnected.
        """
        if self.protocol is not None:
            self.protocol.send_request(word, content)

    def set_presence(self, on: bool) -> str:
        """
        Show presence lines or not (C{/presence on|off}), asking the server
        again for the extensions (less C{presence} when off); return a line
        for the user saying what is now so.
        """
        self.rooms.set_presence(on)
        asked = self.protocol is not None and bool(self.rooms.extensions)
        if asked and self.protocol is not None:
            self.protocol.send_cap()
        if not on:
            return "Presence lines off."
        if self.protocol is not None and not asked:
            return "Presence lines on, but this server does not send them."
        return "Presence lines on: who joins and leaves your rooms."

    def quit(self, linger: float = 0.0, logout: bool = False) -> None:
        """
        End the session: as L{ChatClientProtocol.quit} when connected; at
        once while reconnecting.
        """
        if self.protocol is not None:
            self.protocol.quit(linger, logout)
        elif not self._stopping:
            self._finish(Ending(True, "quit"))

    def quit_when_quiet(self, quiet: float, patience: float, logout: bool = False) -> None:
        """
        As L{ChatClientProtocol.quit_when_quiet}; at once while disconnected.
        """
        if self.protocol is not None:
            self.protocol.quit_when_quiet(quiet, patience, logout)
        else:
            self.quit()

    def close(self) -> Deferred[None]:
        """
        Close now (the reactor is shutting down: SIGTERM, SIGHUP), logging
        out first: an expected ending. Fires once the connection has
        closed (what was written is then sent), or after L{CLOSE_WAIT}.
        """
        if self.protocol is None:
            self.quit()
            return succeed(None)
        done: Deferred[None] = Deferred()
        # Past CLOSE_WAIT, stop waiting (and succeed: the ending is
        # expected either way).
        done.addTimeout(CLOSE_WAIT, self.clock, onTimeoutCancel=lambda result, timeout: None)

        def closed(result: Any) -> Any:
            if not done.called:
                done.callback(None)
            return result

        self.protocol.ended.addBoth(closed)
        self.protocol.close(logout=True)
        return done


def _pm_text(content: Any) -> Optional[str]:
    # The text of a pm request's content ("bob hello" -> "hello"), or None
    # when it names only a user (a request for the private history).
    parts = content.split(None, 1) if isinstance(content, str) else []
    return parts[1] if len(parts) == 2 else None


def describe_error(exc: BaseException) -> str:
    """
    A short phrase for a connection error.
    """
    if isinstance(exc, ierror.ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, (ierror.DNSLookupError, ierror.UnknownHostError)):
        return "host not found"
    if isinstance(exc, (ierror.TimeoutError, ierror.TCPTimedOutError)):
        return "timed out"
    if isinstance(exc, ierror.NoRouteError):
        return "no route to host"
    if isinstance(exc, ierror.ConnectionLost):
        return "the connection broke"
    if type(exc).__module__.startswith("OpenSSL") and exc.args and isinstance(exc.args[0], list):
        reasons = [str(e[-1]) for e in exc.args[0] if isinstance(e, tuple) and e and e[-1]]
        return "TLS error: " + (", ".join(reasons) or "handshake failed")
    if isinstance(exc, ierror.ConnectError):
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, str) and detail.strip():
            return detail.strip().rstrip(".").lower()
        if isinstance(exc.osError, int):
            return os.strerror(exc.osError).lower()
    text = str(exc).strip().rstrip(".")
    text = re.sub(r"\s+", " ", text)
    return text or type(exc).__name__
