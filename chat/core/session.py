"""
One connected client in the core: its name once logged in, the rooms it is
in, the extensions it asked for, its inbox of requests in order, and flood
control.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, FrozenSet, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall

from chat.core.events import Notice
from chat.core.interfaces import IChatClient, IFlowControlledClient
from chat.core.limits import BATCH_SHARE, READ_PAUSE_BACKLOG, TokenBucket
from chat.wire import DecodeError, Request

if TYPE_CHECKING:
    from chat.core.rooms import Room
    from chat.core.service import ChatService


#: The extensions of a client that asked for none: one object for all (an
#: empty frozenset is not shared by Python, and takes 216 bytes).
NO_EXTENSIONS: FrozenSet[str] = frozenset()

#: Stands in the inbox for a run of requests refused for flooding.
_REFUSED = DecodeError("Too many requests waiting; some were not handled. Slow down")


class Session:
    """
    One connected client: its name once logged in, and its inbox of
    requests not yet handled.
    """

    # One per connection, many idle: slots, not a dict of attributes (about
    # 50 bytes less each).
    __slots__ = (
        "service", "client", "username", "connected", "rooms", "caps",
        "departure", "_inbox", "_waiting", "_batch",
        "_joined", "_bucket", "_timer", "_flow", "_reading_paused", "_refused",
        "_head_delayed", "_input_ended", "__weakref__",
    )  # fmt: skip

    def __init__(self, service: "ChatService", client: IChatClient) -> None:
        self.service = service
        self.client = client
        self.username: Optional[str] = None
        self.connected = True
        # The rooms it is in, by name; the last is its current room.
        self.rooms: Dict[str, "Room"] = {}
        # The extensions it asked for and was granted (L{chat.core.rules.EXTENSIONS}).
        self.caps: FrozenSet[str] = NO_EXTENSIONS
        # (Its history cursor in each room is kept by the room: Room.members.)
        # How the connection ended, for those told who comes and goes.
        self.departure = "disconnected"
        # A list, not a deque: an empty deque takes 760 bytes, per connection,
        # and an inbox is short.
        self._inbox: List[Union[Request, DecodeError]] = []
        self._waiting = False
        self._batch = False  # waiting for a message of its own to be stored
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
        self._head_delayed = False  # the first waiting request was counted as delayed
        self._input_ended = False  # the client sends nothing more

    @property
    def room(self) -> Optional["Room"]:
        """
        Its current room (the one it joined or switched to last), or None.
        """
        rooms = self.rooms
        return rooms[next(reversed(rooms))] if rooms else None

    def make_current(self, room: "Room") -> None:
        rooms = self.rooms
        rooms.pop(room.name, None)
        rooms[room.name] = room

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
                self.service.stats.dropped["flooding"] += 1
                self.departure = "dropped"
                self.error("Disconnected for flooding", "flooding")
                self.close()
                return
            if not inbox or inbox[-1] is not _REFUSED:
                inbox.append(_REFUSED)
            return
        inbox.append(request)
        self._drain()
        if self._flow is not None and len(inbox) >= READ_PAUSE_BACKLOG and not self._reading_paused:
            self._reading_paused = True
            self._flow.pause_reading()

    def lost(self, dropped: bool = False) -> None:
        """
        The connection is gone (C{dropped}: the server cut it): log out at
        once, drop what is left.
        """
        if dropped:
            self.departure = "dropped"
        self.connected = False
        self._inbox.clear()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.service.forget(self)

    def input_ended(self) -> None:
        """
        The client sends nothing more (it shut down its side of the
        connection after its last request): handle what it sent, then
        close, once its answers have been written.
        """
        self._input_ended = True
        self._drain()

    def abandon(self) -> None:
        """
        The server stops: hand every request still waiting (behind a
        message being stored, or for flood control) to the service at once,
        which answers each with an error.
        """
        inbox, self._inbox = self._inbox, []
        for request in inbox:
            self.service.dispatch(self, request)

    def close(self) -> None:
        """
        Handle nothing more from the client (it logged out, or is cut off),
        and close the connection once what it was sent has been written.
        """
        self.connected = False
        self._inbox.clear()
        self.client.disconnect()

    def wait(self, batch: bool = False) -> None:
        """
        Hold further requests until L{resume}: while a message of this
        client is being stored (C{batch}: then a valid C{msg} may join its
        batch), or while the answer to a request is read from the store.
        """
        self._waiting = True
        self._batch = batch

    def resume(self) -> None:
        self._waiting = False
        self._joined = 0
        self._drain()

    def _drain(self) -> None:
        inbox = self._inbox
        bucket = self._bucket
        while inbox and self.connected:
            # While a message is being stored, a valid msg right behind it
            # joins the same batch: it is still broadcast after it. (While
            # an answer is read from the store, everything waits.)
            joining = self._waiting
            if joining and (
                not self._batch
                or self._joined >= BATCH_SHARE
                or not self.service.joins_batch(self, inbox[0])
            ):
                break
            if bucket is not None and not bucket.take():
                # Flood control: the rest waits for tokens.
                if not self._head_delayed:
                    self._head_delayed = True
                    self.service.stats.flood_delayed += 1
                if self._timer is None:
                    self._timer = self.service.clock.callLater(bucket.delay(), self._tick)
                break
            if joining:
                self._joined += 1
            self._head_delayed = False
            self.service.dispatch(self, inbox.pop(0))
        if self._reading_paused and not inbox and self.connected:
            self._reading_paused = False
            assert self._flow is not None
            self._flow.resume_reading()
        if self._input_ended and not inbox and not self._waiting and self.connected:
            self.close()

    def _tick(self) -> None:
        self._timer = None
        self._drain()

    def send(self, event: object) -> None:
        if self.connected:
            self.client.send(event)

    def info(self, text: str) -> None:
        self.send(Notice("info", text, self.service.now()))

    def error(self, text: str, kind: str = "invalid") -> None:
        """
        Send an C{error}; C{kind} says what went wrong, for the counters.
        """
        self.service.stats.errors[kind] += 1
        self.send(Notice("error", text, self.service.now()))
