"""
Bounds the core enforces on what clients send, and the token bucket of
flood control.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

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
    @ivar max_rooms: rooms that may exist at once (the lobby included); a
        room exists while someone is in it.
    @ivar max_rooms_per_user: rooms one user may be in at once.
    """

    max_username_length: int = 32
    max_message_length: int = 1000
    flood_rate: float = 0.0
    flood_burst: int = 20
    max_waiting: int = 1000
    max_rooms: int = 10000
    max_rooms_per_user: int = 50


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
