"""
Fake stores for testing code that uses an L{IMessageStore} (the chat core):
L{ControlledStore}, whose operations wait until the test releases them, and
L{FailingStore}, whose operations fail. Both keep their data in a
L{MemoryStore}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from chat.storage.interfaces import IMessageStore, Message, StoredMessage, StoreError
from chat.storage.memory import MemoryStore

#: The operations of L{IMessageStore} that do something with the data.
OPERATIONS = ("append", "recent", "before", "prune", "backup")


@dataclass
class Operation:
    """
    An operation asked of a L{ControlledStore} and not yet released.
    """

    name: str
    args: Tuple[Any, ...]
    kwargs: dict
    deferred: Deferred = field(default_factory=Deferred)


@implementer(IMessageStore)
class ControlledStore:
    """
    A store whose operations wait, in the order asked, until the test calls
    L{release} (done then, on L{memory}) or L{fail} (not done).

    @ivar pending: the operations waiting, oldest first.
    @ivar memory: the L{MemoryStore} that holds the data.
    """

    def __init__(self, clock: Any) -> None:
        self.memory = MemoryStore(clock)
        self.pending: List[Operation] = []

    def _hold(self, name: str, *args: Any, **kwargs: Any) -> Deferred:
        if self.memory.closed:
            return fail(StoreError("store is closed"))
        held = Operation(name, args, kwargs)
        self.pending.append(held)
        return held.deferred

    def append(self, messages: Sequence[Message]) -> Deferred[List[int]]:
        return self._hold("append", list(messages))

    def recent(self, room: str, limit: int) -> Deferred[List[StoredMessage]]:
        return self._hold("recent", room, limit)

    def before(self, room: str, before_id: int, limit: int) -> Deferred[List[StoredMessage]]:
        return self._hold("before", room, before_id, limit)

    def prune(
        self, keep_days: Optional[float] = None, keep_last: Optional[int] = None
    ) -> Deferred[int]:
        return self._hold("prune", keep_days=keep_days, keep_last=keep_last)

    def backup(self, path: str) -> Deferred[int]:
        return self._hold("backup", path)

    def release(self, count: int = 1) -> None:
        """
        Do the oldest C{count} waiting operations and fire their Deferreds.
        """
        for _ in range(count):
            held = self.pending.pop(0)
            getattr(self.memory, held.name)(*held.args, **held.kwargs).chainDeferred(held.deferred)

    def release_all(self) -> None:
        """
        Do every waiting operation, including any that their callbacks ask.
        """
        while self.pending:
            self.release()

    def fail(self, reason: str = "database is locked") -> None:
        """
        Fail the oldest waiting operation with L{StoreError}(C{reason}).
        """
        self.pending.pop(0).deferred.errback(StoreError(reason))

    def close(self) -> Deferred[None]:
        """
        Close at once; operations still waiting fail.
        """
        while self.pending:
            self.fail("store is closed")
        return self.memory.close()


@implementer(IMessageStore)
class FailingStore(MemoryStore):
    """
    A L{MemoryStore} whose operations named in C{failing} (all by default)
    fail with L{StoreError}(C{reason}) without doing anything. Change
    C{failing} to make it recover.

    @ivar attempts: the names of the operations that failed, in order.
    """

    def __init__(
        self,
        clock: Any,
        failing: Iterable[str] = OPERATIONS,
        reason: str = "database or disk is full",
    ) -> None:
        super().__init__(clock)
        self.failing = set(failing)
        self.reason = reason
        self.attempts: List[str] = []

    def _fails(self, name: str) -> Optional[Deferred]:
        if name not in self.failing:
            return None
        self.attempts.append(name)
        return fail(StoreError(self.reason))

    def append(self, messages: Sequence[Message]) -> Deferred[List[int]]:
        return self._fails("append") or super().append(messages)

    def recent(self, room: str, limit: int) -> Deferred[List[StoredMessage]]:
        return self._fails("recent") or super().recent(room, limit)

    def before(self, room: str, before_id: int, limit: int) -> Deferred[List[StoredMessage]]:
        return self._fails("before") or super().before(room, before_id, limit)

    def prune(
        self, keep_days: Optional[float] = None, keep_last: Optional[int] = None
    ) -> Deferred[int]:
        return self._fails("prune") or super().prune(keep_days, keep_last)

    def backup(self, path: str) -> Deferred[int]:
        return self._fails("backup") or super().backup(path)
