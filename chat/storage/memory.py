"""
The in-memory message store: nothing kept after exit. For tests and for a
server started with C{--database :memory:}. Its Deferreds have fired by the
time they are returned.
"""

from __future__ import annotations

import bisect
from typing import Any, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from chat.storage.interfaces import (
    IMessageStore,
    Message,
    StoredMessage,
    StoreError,
    check_limit,
    check_messages,
    check_retention,
    cutoff,
)


@implementer(IMessageStore)
class MemoryStore:
    """
    An L{IMessageStore} in a dict of lists, one per room.

    @param clock: the time for L{prune} (an L{IReactorTime}).
    @ivar closed: whether L{close} was called.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._rooms: Dict[str, List[StoredMessage]] = {}
        # Ids per room, parallel to _rooms, for bisecting.
        self._ids: Dict[str, List[int]] = {}
        self._last_id = 0
        self.closed = False

    @property
    def messages(self) -> List[StoredMessage]:
        """
        Every stored message in id order (for tests).
        """
        return sorted((m for ms in self._rooms.values() for m in ms), key=lambda m: m.id)

    def _closed_error(self) -> Optional[Deferred]:
        return fail(StoreError("store is closed")) if self.closed else None

    def append(self, messages: Sequence[Message]) -> Deferred[List[int]]:
        messages = list(messages)
        try:
            check_messages(messages)
        except StoreError:
            return fail()
        closed = self._closed_error()
        if closed is not None:
            return closed
        ids = []
        for m in messages:
            self._last_id += 1
            ids.append(self._last_id)
            self._rooms.setdefault(m.room, []).append(
                StoredMessage(self._last_id, m.room, m.timestamp, m.sender, m.content)
            )
            self._ids.setdefault(m.room, []).append(self._last_id)
        return succeed(ids)

    def recent(self, room: str, limit: int) -> Deferred[List[StoredMessage]]:
        return self.before(room, self._last_id + 1, limit)

    def before(self, room: str, before_id: int, limit: int) -> Deferred[List[StoredMessage]]:
        check_limit(limit)
        closed = self._closed_error()
        if closed is not None:
            return closed
        end = bisect.bisect_left(self._ids.get(room, []), before_id)
        return succeed(self._rooms.get(room, [])[max(0, end - limit) : end])

    def prune(
        self, keep_days: Optional[float] = None, keep_last: Optional[int] = None
    ) -> Deferred[int]:
        check_retention(keep_days, keep_last)
        closed = self._closed_error()
        if closed is not None:
            return closed
        older_than = cutoff(self._clock.seconds(), keep_days) if keep_days is not None else None
        removed = 0
        for room in list(self._rooms):
            kept = self._rooms[room]
            if keep_last is not None:
                kept = kept[max(0, len(kept) - keep_last) :]
            if older_than is not None:
                kept = [m for m in kept if m.timestamp >= older_than]
            removed += len(self._rooms[room]) - len(kept)
            if kept:
                self._rooms[room] = kept
                self._ids[room] = [m.id for m in kept]
            else:
                del self._rooms[room], self._ids[room]
        return succeed(removed)

    def backup(self, path: str) -> Deferred[int]:
        """
        Write the messages to a new SQLite database at C{path}, in the
        current schema, ids included.
        """
        from chat.storage.backup import write_database

        closed = self._closed_error()
        if closed is not None:
            return closed
        try:
            return succeed(write_database(path, self.messages, self._last_id))
        except StoreError:
            return fail()

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)
