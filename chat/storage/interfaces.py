"""
What the chat core asks of a message store, and the values it gets back.

Every operation returns a L{Deferred}: a store may do its work on another
thread (SQLite) or another machine (Redis, later), and a store that is slow
or locked must never stall the reactor. Operations take effect in the order
they are called, and a failure is a L{StoreError} whose text is one line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Interface

#: The room of every message stored before rooms existed.
LOBBY = "lobby"

#: 0001-01-01T00:00:00Z, the earliest L{cutoff}.
_YEAR_1 = -62135596800.0


@dataclass(frozen=True)
class Message:
    """
    A message to store: one C{message} response as the server issued it.

    @ivar room: the room, or a private conversation's key; any string.
    @ivar timestamp: the response's timestamp, ISO 8601 UTC
        (C{YYYY-MM-DDTHH:MM:SSZ}).
    """

    room: str
    timestamp: str
    sender: str
    content: str


@dataclass(frozen=True)
class StoredMessage:
    """
    A stored message. C{id} is stable and never reused, even after the
    message is pruned; within a room, a later message has a larger id.
    """

    id: int
    room: str
    timestamp: str
    sender: str
    content: str


class StoreError(Exception):
    """
    The store could not do what was asked (disk full, database locked or in
    use by another server, closed, ...). The text is one line.
    """


class IMessageStore(Interface):
    """
    Where the chat keeps its messages.
    """

    def append(messages: Sequence[Message]) -> Deferred[List[int]]:
        """
        Store C{messages} durably, all or none. Fires with their ids, in
        order, once they would survive the process being killed; fails with
        L{StoreError} if none was stored.
        """

    def recent(room: str, limit: int) -> Deferred[List[StoredMessage]]:
        """
        The last C{limit} messages of C{room}, oldest first.
        """

    def before(room: str, before_id: int, limit: int) -> Deferred[List[StoredMessage]]:
        """
        The last C{limit} messages of C{room} whose id is below
        C{before_id}, oldest first (paging back through older history).
        """

    def prune(keep_days: Optional[float] = None, keep_last: Optional[int] = None) -> Deferred[int]:
        """
        Remove messages older than C{keep_days} days, and all but the last
        C{keep_last} of each room; fires with how many were removed. Safe
        while serving: other operations are not held up for long.
        """

    def backup(path: str) -> Deferred[int]:
        """
        Write a consistent copy of the store to a new SQLite database file
        C{path} (which must not exist); fires with the number of messages
        copied.
        """

    def close() -> Deferred[None]:
        """
        Finish what was asked, then release the store. Later operations
        fail with L{StoreError}.
        """


def check_messages(messages: Sequence[Message]) -> None:
    """
    Raise L{StoreError} unless every item is a L{Message} of strings, so
    that a bad value fails alone instead of the transaction it would share.
    """
    for m in messages:
        if not (
            isinstance(m, Message)
            and type(m.room) is str
            and type(m.timestamp) is str
            and type(m.sender) is str
            and type(m.content) is str
        ):
            raise StoreError(f"not a message of strings: {m!r:.200}")


def check_limit(limit: int) -> None:
    """
    Raise L{ValueError} unless C{limit} is a whole number, 0 or more.
    """
    if type(limit) is not int or limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit!r}")


def check_retention(keep_days: Optional[float], keep_last: Optional[int]) -> None:
    """
    Raise L{ValueError} for a retention that makes no sense.
    """
    if keep_days is None and keep_last is None:
        raise ValueError("prune needs keep_days or keep_last")
    if keep_days is not None and not keep_days >= 0:
        raise ValueError(f"keep_days must be 0 or more, not {keep_days!r}")
    if keep_last is not None and (type(keep_last) is not int or keep_last < 0):
        raise ValueError(f"keep_last must be 0 or more, not {keep_last!r}")


def cutoff(now: float, keep_days: float) -> str:
    """
    The timestamp before which a message is older than C{keep_days} days.
    Timestamps are ISO 8601 UTC of fixed width, so they compare as strings.
    """
    # The same format as the server's response timestamps (chat.wire),
    # with the year in four digits: strftime writes the year 301 as "301",
    # which sorts after "2026". Nothing is older than the year 1, which
    # also keeps a huge keep_days within what gmtime can take.
    moment = time.gmtime(max(now - keep_days * 86400, _YEAR_1))
    return f"{moment.tm_year:04d}" + time.strftime("-%m-%dT%H:%M:%SZ", moment)
