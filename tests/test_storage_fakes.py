"""
The fake stores shipped in chat.storage.testing, and the retention service,
on a fake clock.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from chat.storage import IMessageStore, MemoryStore, Message, StoreError
from chat.storage.retention import RetentionService
from chat.storage.testing import ControlledStore, FailingStore

NOW = 1795557600.0  # 2026-11-24T22:00:00Z


def msg(content: str, timestamp: str = "2026-11-24T21:00:00Z") -> Message:
    return Message("lobby", timestamp, "alice", content)


class ControlledStoreTests(TestCase):
    def setUp(self):
        self.store = ControlledStore(task.Clock())

    def test_interface(self):
        """
        ControlledStore provides IMessageStore.
        """
        self.assertTrue(verifyObject(IMessageStore, self.store))

    def test_operations_wait_for_release(self):
        """
        An operation does nothing and fires nothing until released; then
        it is done, in the order asked, and fires with its result.
        """
        appended = self.store.append([msg("a"), msg("b")])
        read = self.store.recent("lobby", 5)
        self.assertNoResult(appended)
        self.assertEqual([op.name for op in self.store.pending], ["append", "recent"])
        self.assertEqual(self.store.memory.messages, [])
        self.store.release()
        self.assertEqual(self.successResultOf(appended), [1, 2])
        self.assertNoResult(read)
        self.store.release_all()
        self.assertEqual([m.content for m in self.successResultOf(read)], ["a", "b"])

    def test_fail_does_nothing(self):
        """
        fail makes the oldest operation fail with StoreError, undone.
        """
        appended = self.store.append([msg("a")])
        self.store.fail("disk full")
        self.assertEqual(str(self.failureResultOf(appended, StoreError).value), "disk full")
        self.assertEqual(self.store.memory.messages, [])

    def test_close_fails_waiting(self):
        """
        close fails what still waits, and later operations fail at once.
        """
        appended = self.store.append([msg("a")])
        self.successResultOf(self.store.close())
        self.failureResultOf(appended, StoreError)
        self.failureResultOf(self.store.recent("lobby", 1), StoreError)


class FailingStoreTests(TestCase):
    def test_interface(self):
        """
        FailingStore provides IMessageStore.
        """
        self.assertTrue(verifyObject(IMessageStore, FailingStore(task.Clock())))

    def test_fails_what_it_is_told(self):
        """
        The operations named fail with StoreError and are recorded; the
        others work; emptying C{failing} makes it recover.
        """
        store = FailingStore(task.Clock(), failing=["append"], reason="database is locked")
        failure = self.failureResultOf(store.append([msg("a")]), StoreError)
        self.assertEqual(str(failure.value), "database is locked")
        self.assertEqual(self.successResultOf(store.recent("lobby", 5)), [])
        self.assertEqual(store.attempts, ["append"])
        store.failing = set()
        self.assertEqual(self.successResultOf(store.append([msg("b")])), [1])

    def test_fails_everything_by_default(self):
        """
        By default every data operation fails.
        """
        store = FailingStore(task.Clock())
        for d in (
            store.append([msg("a")]),
            store.recent("lobby", 1),
            store.before("lobby", 1, 1),
            store.prune(keep_last=1),
            store.backup("/nonexistent/x.db"),
        ):
            self.failureResultOf(d, StoreError)
        self.assertEqual(store.attempts, ["append", "recent", "before", "prune", "backup"])


class RetentionServiceTests(TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(NOW)

    def test_prunes_at_start_and_every_interval(self):
        """
        The service prunes when it starts and again each interval, by the
        clock's time, and logs what it removed.
        """
        store = MemoryStore(self.clock)
        store.append([msg("old", "2026-11-01T00:00:00Z"), msg("new")])
        service = RetentionService(store, keep_days=7, interval=3600, clock=self.clock)
        with capturedLogs() as events:
            service.startService()
        self.assertEqual([m.content for m in store.messages], ["new"])
        self.assertEqual(events[-1]["removed"], 1)
        self.clock.advance(86400)  # "new" is now a day old: kept
        self.clock.advance(7 * 86400)
        self.assertEqual(store.messages, [])
        self.successResultOf(service.stopService())

    def test_failure_is_logged_and_retried(self):
        """
        A failed prune is logged as an error and the service goes on: the
        next interval prunes again.
        """
        store = FailingStore(self.clock, failing=["prune"])
        service = RetentionService(store, keep_last=10, interval=60, clock=self.clock)
        with capturedLogs() as events:
            service.startService()
            self.clock.advance(60)
        self.assertEqual(store.attempts, ["prune", "prune"])
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 2)
        self.assertEqual(errors[0]["error"], "database or disk is full")
        self.successResultOf(service.stopService())

    def test_stop_waits_for_a_prune(self):
        """
        Stopping waits for a prune under way, so the store can be closed
        after it.
        """
        store = ControlledStore(self.clock)
        service = RetentionService(store, keep_last=1, clock=self.clock)
        service.startService()
        stopped = service.stopService()
        self.assertNoResult(stopped)
        store.release()
        self.successResultOf(stopped)

    def test_needs_a_retention(self):
        """
        A service with no limit is a ValueError.
        """
        self.assertRaises(ValueError, RetentionService, MemoryStore(self.clock))
