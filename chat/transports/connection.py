"""
What every transport's connections share, whatever their framing (TCP
today, WebSocket next): the limits on connections, admission (counting
connections in total and per address, and making room by closing the
oldest connection that has not logged in), the login deadline, and the
send queue that holds what a client has not yet taken, with its bound.
(Flood control is the core's, in L{chat.core.session}.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple, Union

from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from chat.wire import MAX_VALUE_SIZE

_log = Logger(namespace=__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """
    Bounds on connections, enforced by each connection and by L{Admission}.

    @ivar max_request_size: the largest request, in bytes as it came on the
        wire; a larger one gets an C{error} and the connection is closed.
    @ivar max_connections: connections open at once; 0 for no limit.
    @ivar max_connections_per_address: connections open at once from one
        source address; 0 for no limit.
    @ivar login_timeout: seconds a connection may stay without logging in;
        0 for no limit.
    @ivar max_send_queue: bytes that may wait for a client that does not read
        fast enough (beyond the transport's own write buffer, and not
        counting the history sent at login nor an answer that finds nothing
        waiting for a stream client); past it the connection is aborted.
    @ivar keepalive_idle: seconds of silence before TCP keepalive probes
        start; 0 turns keepalive off.
    @ivar keepalive_interval: seconds between two keepalive probes.
    @ivar keepalive_count: unanswered probes after which the peer is dead.
    @ivar close_timeout: seconds a closing connection may take to send what
        it still has before it is aborted.
    """

    max_request_size: int = MAX_VALUE_SIZE
    max_connections: int = 5000
    max_connections_per_address: int = 100
    login_timeout: float = 60.0
    max_send_queue: int = 256 * 1024
    keepalive_idle: int = 60
    keepalive_interval: int = 10
    keepalive_count: int = 3
    close_timeout: float = 10.0


class Admitted(Protocol):
    """
    What L{Admission} needs of a connection.
    """

    admitted: Optional[str]

    @property
    def logged_in(self) -> bool: ...

    def make_room(self) -> None: ...


class Admission:
    """
    Counts connections against L{ConnectionLimits}, in total and per source
    address. Transports that share one instance share the limits.

    A connection that has not logged in never keeps a newcomer out: past a
    limit, the oldest such connection (from the same address, for the
    per-address limit) is closed to make room. Only logged-in users fill
    the server.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.connections = 0
        self.by_address: Dict[str, int] = {}
        # Admitted connections not known to have logged in, oldest first.
        self._unlogged: Dict[Admitted, None] = {}

    def admit(self, connection: Admitted, address: str) -> Optional[str]:
        """
        Count a new connection from C{address}, or say why it is refused.
        """
        limits = self.limits
        if limits.max_connections and self.connections >= limits.max_connections:
            if not self._make_room(None):
                return "Server full: too many connections; try again later"
        if address and limits.max_connections_per_address:
            if self.by_address.get(address, 0) >= limits.max_connections_per_address:
                if not self._make_room(address):
                    return (
                        "Too many connections from your address "
                        f"(limit {limits.max_connections_per_address})"
                    )
        self.connections += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        connection.admitted = address
        self._unlogged[connection] = None
        return None

    def _make_room(self, address: Optional[str]) -> bool:
        """
        Close the oldest admitted connection that has not logged in (from
        C{address}, if given); return whether there was one.
        """
        for connection in list(self._unlogged):
            if connection.logged_in:
                del self._unlogged[connection]  # logged in since: not a candidate
                continue
            if address is None or connection.admitted == address:
                self.release(connection)
                connection.make_room()
                return True
        return False

    def logged_in(self, connection: Admitted) -> None:
        """
        C{connection} has logged in: it is no longer closed to make room.
        """
        self._unlogged.pop(connection, None)

    def release(self, connection: Admitted) -> None:
        """
        C{connection} is gone (or going): it no longer counts.
        """
        address = connection.admitted
        if address is None:
            return
        connection.admitted = None
        self._unlogged.pop(connection, None)
        self.connections -= 1
        count = self.by_address.get(address, 0) - 1
        if count > 0:
            self.by_address[address] = count
        else:
            self.by_address.pop(address, None)


def entry_size(entry: Any) -> int:
    """
    The bytes a send-queue entry stands for: bytes (or a view of some), or
    an object with a C{line} (a chat message kept whole so a transport can
    combine several).
    """
    return len(entry) if isinstance(entry, (bytes, memoryview)) else len(entry.line)


class SendQueue:
    """
    What waits to be written to one client, in order, with the bytes it
    holds counted against a bound. Entries pushed as a C{burst} (the
    history at login) are counted apart and do not count against the
    bound, so a long history never gets a new user dropped.

    A list with a moving head, not a deque: an empty deque takes 760
    bytes, per connection; and while the queue is empty, not even a list
    (56 bytes), but one empty tuple shared by all.
    """

    __slots__ = ("_entries", "_head", "queued", "_burst")

    def __init__(self) -> None:
        self._entries: Union[List[Any], Tuple[()]] = ()
        self._head = 0
        self.queued = 0  # bytes waiting
        self._burst = 0  # of which, bytes exempt from the bound

    def __bool__(self) -> bool:
        return self._head < len(self._entries)

    def __len__(self) -> int:
        return len(self._entries) - self._head

    @property
    def counted(self) -> int:
        """
        The bytes that count against the bound.
        """
        return self.queued - self._burst

    def push(self, entries: Sequence[Any], burst: bool = False) -> None:
        size = 0
        for entry in entries:
            size += entry_size(entry)
        if self._entries:
            self._entries.extend(entries)  # type: ignore[union-attr]
        else:
            self._entries = list(entries)  # (the head is 0 while it is empty)
        self.queued += size
        if burst:
            self._burst += size

    def peek(self, index: int = 0) -> Any:
        return self._entries[self._head + index]

    def pop(self, count: int = 1) -> List[Any]:
        """
        Take the first C{count} entries.
        """
        head = self._head
        taken = self._entries[head : head + count]
        head += len(taken)
        size = 0
        for entry in taken:
            size += entry_size(entry)
        self.queued -= size
        # What was pushed first is sent first: the burst goes out before
        # anything counted behind it.
        self._burst = max(0, self._burst - size)
        if head >= len(self._entries):
            self._entries = ()
            head = 0
        elif head > 64 and head * 2 > len(self._entries):
            del self._entries[:head]  # type: ignore[union-attr]
            head = 0
        self._head = head
        return taken

    def skip(self, kind: type, bound: int, notice: Callable[[int], bytes]) -> int:
        """
        Take out the oldest waiting entries of type C{kind} (chat messages),
        past the burst, until the counted bytes are within C{bound}; put
        C{notice(count)} where the first of them was. Returns how many were
        taken out (0: nothing changed).
        """
        excess = self.counted - bound
        entries = self._entries[self._head :]
        kept: List[Any] = []
        count = size = 0
        at = -1
        # The burst (a login's history) was pushed first: skip past it.
        burst = self._burst
        for entry in entries:
            if burst > 0:
                burst -= entry_size(entry)
            elif type(entry) is kind and size < excess:
                if at < 0:
                    at = len(kept)
                count += 1
                size += entry_size(entry)
                continue
            kept.append(entry)
        if not count:
            return 0
        line = notice(count)
        kept.insert(at, line)
        self._entries = kept
        self._head = 0
        self.queued += len(line) - size
        return count

    def clear(self) -> None:
        self._entries = ()
        self._head = 0
        self.queued = self._burst = 0


class LoginDeadline(TimeoutMixin):
    """
    The part of a connection's protocol that any transport shares about
    logging in: a connection that has not logged in by the deadline is told
    and closed, and one that the L{Admission} picks to make room is told
    and closed too. A protocol using it has C{session} (the core's
    L{Session}, or None), C{disconnect()} and C{describe()} (who is at the
    other end, for the log), calls L{start_login_deadline} when it starts
    serving and L{logged_in_now} when its session has logged in, and calls
    C{setTimeout(None)} when the connection is lost.
    """

    session: Any
    _ending: bool
    _deadline_clock: Any

    def start_login_deadline(self, seconds: float, clock: Any) -> None:
        self._deadline_clock = clock
        if seconds > 0:
            self._login_timeout = seconds
            self.setTimeout(seconds)

    def callLater(self, delay: float, call: Any, *args: Any, **kwargs: Any) -> Any:
        # TimeoutMixin schedules with this. A method, not the clock's bound
        # method kept per connection (64 bytes each).
        return self._deadline_clock.callLater(delay, call, *args, **kwargs)

    def logged_in_now(self, admission: "Admission") -> None:
        if self.timeOut is not None:
            self.setTimeout(None)
        admission.logged_in(self)  # type: ignore[arg-type]

    def timeoutConnection(self) -> None:
        self._close_unlogged(
            "No login from {peer} in time",
            f"No login within {getattr(self, '_login_timeout', 0):g} seconds; closing",
        )

    def make_room(self) -> None:
        """
        Close this connection, which has not logged in, to let a newcomer in
        while the server is full (the admission counts it gone at once).
        """
        self._close_unlogged(
            "Closing {peer}, which has not logged in, to make room",
            "Server full: connections that do not log in are closed to make room; "
            "log in right after connecting",
        )

    def _close_unlogged(self, log_format: str, reason: str) -> None:
        session = self.session
        if session is None or session.username is not None or self._ending:
            return
        _log.info(log_format, peer=self.describe())  # type: ignore[attr-defined]
        session.error(reason)
        session.close()
