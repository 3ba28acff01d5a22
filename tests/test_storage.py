"""
The message stores of chat.storage: the behaviour every L{IMessageStore}
shares, tested on L{MemoryStore} and on L{SQLiteStore} (a real database
file, on its real thread), then what only SQLite has: the schema and its
upgrade, the query plans, the lock, group commit, work off the reactor
thread, and backups.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time

from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from chat.storage import (
    IMessageStore,
    MemoryStore,
    Message,
    SQLiteStore,
    StoredMessage,
    StoreError,
    open_store,
)
from chat.storage import sqlite as sqlite_module
from chat.storage.backup import backup_database
from chat.storage.sqlite import VERSION, schema_script

#: 2026-11-24T22:00:00Z, the clock's time in these tests.
NOW = 1795557600.0


def stamp(days_ago: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - days_ago * 86400))


def msg(content: str, room: str = "lobby", days_ago: float = 0, sender: str = "alice") -> Message:
    return Message(room, stamp(days_ago), sender, content)


def contents(stored) -> list:
    return [m.content for m in stored]


def v1_database(path: str, count: int) -> list:
    """
    A database as the first release (chat/store.py) made it, from v1.sql
    exactly, with C{count} messages and gaps in the ids as deletes leave
    them; returns its rows (id, timestamp, sender, content) in order.
    """
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=1000")
    db.executescript(schema_script(1))
    db.executemany(
        "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
        [(stamp(count - i), f"user{i % 7}", f"old message {i}") for i in range(count)],
    )
    # The newest message removed too: its id must not come back.
    db.execute("DELETE FROM messages WHERE id % 10 = 3 OR id = ?", (count,))
    rows = db.execute("SELECT id, timestamp, sender, content FROM messages ORDER BY id").fetchall()
    db.close()
    return rows


class StoreContract:
    """
    What every store does; a subclass says how to make one.
    """

    def make_store(self) -> defer.Deferred:
        raise NotImplementedError

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "chat.db")

    @defer.inlineCallbacks
    def store(self):
        store = yield self.make_store()
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_interface(self):
        """
        The store provides IMessageStore.
        """
        store = yield self.store()
        self.assertTrue(verifyObject(IMessageStore, store))

    @defer.inlineCallbacks
    def test_append_gives_ids_and_recent_returns_them(self):
        """
        Appends fire with increasing ids, one per message; recent returns
        the messages oldest first with those ids and every field intact.
        """
        store = yield self.store()
        first = yield store.append([msg("a"), msg("b", sender="bob")])
        second = yield store.append([msg("c")])
        self.assertEqual(len(first + second), 3)
        self.assertEqual(first + second, sorted(set(first + second)))
        got = yield store.recent("lobby", 10)
        self.assertEqual(
            got,
            [
                StoredMessage(first[0], "lobby", stamp(0), "alice", "a"),
                StoredMessage(first[1], "lobby", stamp(0), "bob", "b"),
                StoredMessage(second[0], "lobby", stamp(0), "alice", "c"),
            ],
        )

    @defer.inlineCallbacks
    def test_recent_is_the_last_window(self):
        """
        recent returns only the last C{limit} messages, oldest first; a
        limit of 0 returns none, an unknown room none.
        """
        store = yield self.store()
        yield store.append([msg(str(i)) for i in range(10)])
        self.assertEqual(contents((yield store.recent("lobby", 3))), ["7", "8", "9"])
        self.assertEqual((yield store.recent("lobby", 0)), [])
        self.assertEqual((yield store.recent("nowhere", 5)), [])

    @defer.inlineCallbacks
    def test_rooms_are_separate_and_any_key_works(self):
        """
        Each room has its own window; a room is any string (a private
        conversation's key later), stored exactly.
        """
        store = yield self.store()
        odd = "dm:alice\x00bob ✓ 𝄞"
        yield store.append([msg("l1"), msg("o1", room=odd), msg("l2"), msg("k1", room="kitchen")])
        self.assertEqual(contents((yield store.recent("lobby", 10))), ["l1", "l2"])
        got = yield store.recent(odd, 10)
        self.assertEqual([(m.room, m.content) for m in got], [(odd, "o1")])
        self.assertEqual(contents((yield store.recent("kitchen", 10))), ["k1"])

    @defer.inlineCallbacks
    def test_text_round_trips(self):
        """
        Text outside the BMP, NUL and line separators come back exactly.
        """
        store = yield self.store()
        text = "nul\x00 emoji 😀 astral 𝄞 sep \u2028\u2029 bidi \u202e end"
        yield store.append([Message("lobby", stamp(0), "ælice", text)])
        [got] = yield store.recent("lobby", 1)
        self.assertEqual((got.sender, got.content), ("ælice", text))

    @defer.inlineCallbacks
    def test_before_pages_back_through_everything(self):
        """
        Paging back with before, from the window's oldest id, returns every
        older message of the room exactly once, in order, then nothing.
        """
        store = yield self.store()
        for i in range(25):
            yield store.append([msg(f"m{i}"), msg(f"other{i}", room="kitchen")])
        page = yield store.recent("lobby", 4)
        seen = contents(page)
        while page:
            page = yield store.before("lobby", page[0].id, 4)
            self.assertLessEqual(len(page), 4)
            seen = contents(page) + seen
        self.assertEqual(seen, [f"m{i}" for i in range(25)])

    @defer.inlineCallbacks
    def test_empty_append(self):
        """
        Appending nothing fires with no ids and stores nothing.
        """
        store = yield self.store()
        self.assertEqual((yield store.append([])), [])
        self.assertEqual((yield store.recent("lobby", 5)), [])

    @defer.inlineCallbacks
    def test_bad_message_fails_alone(self):
        """
        An append holding something that is not a message of strings fails
        with StoreError and stores none of its messages.
        """
        store = yield self.store()
        bad = [msg("fine"), Message("lobby", stamp(0), "alice", 42)]
        yield self.assertFailure(store.append(bad), StoreError)
        yield self.assertFailure(store.append([("lobby", "t", "a", "b")]), StoreError)
        yield store.append([msg("after")])
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["after"])

    @defer.inlineCallbacks
    def test_bad_limits_raise(self):
        """
        A negative or non-integer limit is a ValueError.
        """
        store = yield self.store()
        self.assertRaises(ValueError, store.recent, "lobby", -1)
        self.assertRaises(ValueError, store.before, "lobby", 5, 2.5)

    @defer.inlineCallbacks
    def test_prune_by_age(self):
        """
        prune(keep_days) removes exactly the messages whose timestamp is
        older than that many days before the clock's time, in every room.
        """
        store = yield self.store()
        yield store.append(
            [
                msg("old", days_ago=10),
                msg("edge", days_ago=7),
                msg("new", days_ago=1),
                msg("old kitchen", room="kitchen", days_ago=8),
                msg("out of order old", days_ago=30),
                msg("now"),
            ]
        )
        removed = yield store.prune(keep_days=7)
        self.assertEqual(removed, 3)
        self.assertEqual(contents((yield store.recent("lobby", 10))), ["edge", "new", "now"])
        self.assertEqual((yield store.recent("kitchen", 10)), [])

    @defer.inlineCallbacks
    def test_prune_by_age_further_back_than_the_calendar(self):
        """
        A keep_days that reaches back before the year 1000, or past what
        the platform's time can hold (even infinity), removes nothing: a
        cutoff in the year 301 is not "301-..." (after "2026-..." as
        strings, which removed every message), nor an OverflowError.
        """
        store = yield self.store()
        yield store.append([msg("old", days_ago=3000), msg("new")])
        for keep_days in (630000, 1e7, 1e12, 1e300, float("inf")):
            self.assertEqual((yield store.prune(keep_days=keep_days)), 0, keep_days)
        self.assertEqual(contents((yield store.recent("lobby", 10))), ["old", "new"])

    @defer.inlineCallbacks
    def test_prune_by_count(self):
        """
        prune(keep_last) keeps the last N messages of each room.
        """
        store = yield self.store()
        yield store.append([msg(f"l{i}") for i in range(6)])
        yield store.append([msg(f"k{i}", room="kitchen") for i in range(2)])
        yield store.append([msg(f"z{i}", room="zoo") for i in range(4)])
        removed = yield store.prune(keep_last=3)
        self.assertEqual(removed, 3 + 0 + 1)
        self.assertEqual(contents((yield store.recent("lobby", 10))), ["l3", "l4", "l5"])
        self.assertEqual(contents((yield store.recent("kitchen", 10))), ["k0", "k1"])
        self.assertEqual(contents((yield store.recent("zoo", 10))), ["z1", "z2", "z3"])
        self.assertEqual((yield store.prune(keep_last=0)), 8)
        self.assertEqual((yield store.recent("lobby", 10)), [])

    @defer.inlineCallbacks
    def test_prune_by_both(self):
        """
        With both limits a message goes if either says so.
        """
        store = yield self.store()
        yield store.append([msg("a", days_ago=9), msg("b", days_ago=2), msg("c"), msg("d")])
        self.assertEqual((yield store.prune(keep_days=5, keep_last=3)), 1)
        self.assertEqual((yield store.prune(keep_days=1, keep_last=3)), 1)
        self.assertEqual(contents((yield store.recent("lobby", 10))), ["c", "d"])

    @defer.inlineCallbacks
    def test_prune_needs_a_sensible_retention(self):
        """
        prune with no limit, a negative one or a non-integer count is a
        ValueError.
        """
        store = yield self.store()
        for kwargs in ({}, {"keep_days": -1}, {"keep_last": -2}, {"keep_last": 1.5}):
            self.assertRaises(ValueError, store.prune, **kwargs)

    @defer.inlineCallbacks
    def test_ids_never_reused(self):
        """
        After every message is pruned, the next id is still above every id
        given before.
        """
        store = yield self.store()
        ids = yield store.append([msg("a", days_ago=3), msg("b", days_ago=3)])
        self.assertEqual((yield store.prune(keep_days=1)), 2)
        [new] = yield store.append([msg("c")])
        self.assertGreater(new, max(ids))

    @defer.inlineCallbacks
    def test_closed_store_fails(self):
        """
        After close every operation fails with StoreError.
        """
        store = yield self.store()
        yield store.close()
        yield self.assertFailure(store.append([msg("x")]), StoreError)
        yield self.assertFailure(store.recent("lobby", 1), StoreError)
        yield self.assertFailure(store.before("lobby", 9, 1), StoreError)
        yield self.assertFailure(store.prune(keep_last=1), StoreError)
        yield self.assertFailure(store.backup(self.path + ".copy"), StoreError)

    @defer.inlineCallbacks
    def test_backup_opens_as_a_store(self):
        """
        A backup is a database file that a store opens with the same
        messages and ids, and whose next id follows the last one given.
        """
        store = yield self.store()
        yield store.append([msg("a"), msg("k", room="kitchen"), msg("b")])
        ids = yield store.append([msg("newest", days_ago=2)])
        yield store.prune(keep_days=1)
        copy = os.path.join(self.directory, "backup.db")
        self.assertEqual((yield store.backup(copy)), 3)
        yield self.assertFailure(store.backup(copy), StoreError)
        restored = yield SQLiteStore.open(copy, reactor)
        try:
            self.assertEqual(
                (yield restored.recent("lobby", 10)), (yield store.recent("lobby", 10))
            )
            self.assertEqual(contents((yield restored.recent("kitchen", 10))), ["k"])
            [new] = yield restored.append([msg("c")])
            self.assertGreater(new, ids[0])
        finally:
            yield restored.close()


class MemoryStoreTests(StoreContract, TestCase):
    def make_store(self):
        return open_store(":memory:", reactor, self.clock)

    def test_is_memory(self):
        """
        open_store gives a MemoryStore for :memory:, whose results are
        ready at once.
        """
        d = open_store(":memory:", reactor, self.clock)
        store = self.successResultOf(d)
        self.assertIsInstance(store, MemoryStore)
        self.assertEqual(self.successResultOf(store.append([msg("x")])), [1])


class SQLiteFileStoreTests(StoreContract, TestCase):
    def make_store(self):
        return open_store(self.path, reactor, self.clock)


class SQLiteMemoryStoreTests(StoreContract, TestCase):
    """
    An SQLite store in memory behaves the same (and backs up from its own
    connection).
    """

    def make_store(self):
        return SQLiteStore.open(":memory:", reactor, self.clock)


class SQLiteTests(TestCase):
    """
    What only the SQLite store has.
    """

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "chat.db")

    @defer.inlineCallbacks
    def open(self, path=None, **kwargs):
        store = yield SQLiteStore.open(path or self.path, reactor, **kwargs)
        self.addCleanup(store.close)
        return store

    def connect(self, path=None):
        db = sqlite3.connect(path or self.path, isolation_level=None)
        self.addCleanup(db.close)
        return db

    @defer.inlineCallbacks
    def test_new_database(self):
        """
        A new database is in WAL mode at the current schema version, with
        the room index; the store's connection syncs NORMAL and waits for
        locks.
        """
        store = yield self.open(busy_timeout=2.5)
        db = self.connect()
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], VERSION)
        self.assertIn(
            "messages_by_room",
            [row[1] for row in db.execute("PRAGMA index_list(messages)")],
        )
        settings = yield store._call(
            lambda: [
                store._db.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("synchronous", "busy_timeout")
            ]
        )
        self.assertEqual(settings, [1, 2500])  # 1 is NORMAL

    def test_v1_is_the_first_release_schema(self):
        """
        v1.sql is byte for byte the schema the first release created
        (chat/schema.sql): the upgrade path starts from what is really on
        disk. Change the schema with a new vN.sql, never by editing one.
        """
        digest = hashlib.sha256(schema_script(1).encode("utf-8")).hexdigest()
        self.assertEqual(digest, "442ff7dd944b3561923161a57d3c6bd6252472feb014b8bf75e65a5029378179")

    @defer.inlineCallbacks
    def test_upgrade_keeps_every_message(self):
        """
        A database made by the first release opens, upgraded, with every
        message in the lobby with its id and in its order; an id deleted
        before the upgrade is not given out again.
        """
        rows = v1_database(self.path, 500)
        store = yield self.open()
        got = yield store.recent("lobby", 1000)
        self.assertEqual([(m.id, m.timestamp, m.sender, m.content) for m in got], rows)
        self.assertEqual({m.room for m in got}, {"lobby"})
        [new] = yield store.append([msg("new")])
        self.assertEqual(new, 501)
        self.assertEqual(self.connect().execute("PRAGMA user_version").fetchone()[0], VERSION)

    @defer.inlineCallbacks
    def test_failed_upgrade_changes_nothing(self):
        """
        An upgrade that fails half way is rolled back whole: the open fails
        with a one-line StoreError, and the database is as it was.
        """
        rows = v1_database(self.path, 20)
        db = self.connect()
        # The upgrade's index name is taken, so its second statement fails
        # after the first has added the room column.
        db.execute("CREATE TABLE other (x)")
        db.execute("CREATE INDEX messages_by_room ON other (x)")
        failure = yield self.assertFailure(SQLiteStore.open(self.path, reactor), StoreError)
        self.assertIn(repr(self.path), str(failure))
        self.assertNotIn("\n", str(failure))
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 0)
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
        self.assertEqual(columns, ["id", "timestamp", "sender", "content"])
        self.assertEqual(
            db.execute("SELECT id, timestamp, sender, content FROM messages").fetchall(), rows
        )
        # And the lock was let go: a fixed database opens.
        db.execute("DROP TABLE other")
        store = yield self.open()
        self.assertEqual(len((yield store.recent("lobby", 100))), len(rows))

    @defer.inlineCallbacks
    def test_newer_schema_refused(self):
        """
        A database from a newer server is refused with a one-line error
        naming the file and both versions, and left as it was.
        """
        db = self.connect()
        db.execute(f"PRAGMA user_version = {VERSION + 1}")
        failure = yield self.assertFailure(SQLiteStore.open(self.path, reactor), StoreError)
        self.assertIn(repr(self.path), str(failure))
        self.assertIn(f"schema version {VERSION + 1}", str(failure))
        self.assertEqual(db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0], 0)

    def test_not_a_database(self):
        """
        A file that is not a database is a one-line StoreError naming it.
        """
        with open(self.path, "wb") as f:
            f.write(b"this is not sqlite\n" * 200)
        d = SQLiteStore.open(self.path, reactor)
        return self.assertFailure(d, StoreError).addCallback(
            lambda e: self.assertIn(repr(self.path), str(e))
        )

    @defer.inlineCallbacks
    def test_query_plans_use_the_room_index(self):
        """
        The statements recent and before run search the room index in id
        order: no scan of the table, no sort, so they cost O(limit).
        """
        store = yield self.open()
        yield store.append([msg(str(i), room=f"r{i % 5}") for i in range(200)])
        seen = []
        yield store._call(lambda: store._db.set_trace_callback(seen.append))
        yield store.recent("r1", 10)
        yield store.before("r1", 100, 10)
        yield store._call(lambda: store._db.set_trace_callback(None))
        self.assertEqual(len(seen), 2)
        db = self.connect()
        for sql in seen:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            self.assertEqual(len(plan), 1, plan)
            self.assertRegex(plan[0], r"^SEARCH messages USING INDEX messages_by_room \(room=\?")

    @defer.inlineCallbacks
    def test_second_store_on_a_file_is_refused(self):
        """
        While a store has a database file open, opening it again fails at
        once with a one-line StoreError naming the file; once the first is
        closed it opens.
        """
        first = yield SQLiteStore.open(self.path, reactor)
        d = SQLiteStore.open(self.path, reactor)
        failure = self.failureResultOf(d, StoreError)
        self.assertIn(repr(self.path), str(failure.value))
        self.assertIn("in use by another chat server", str(failure.value))
        self.assertNotIn("\n", str(failure.value))
        yield first.append([msg("kept")])
        yield first.close()
        second = yield self.open()
        self.assertEqual(contents((yield second.recent("lobby", 5))), ["kept"])

    @defer.inlineCallbacks
    def test_backup_while_locked(self):
        """
        The backup command works on a database a store holds.
        """
        store = yield self.open()
        yield store.append([msg("a"), msg("b")])
        copy = os.path.join(self.directory, "copy.db")
        count = yield defer.maybeDeferred(backup_database, self.path, copy)
        self.assertEqual(count, 2)

    @defer.inlineCallbacks
    def test_close_waits_for_a_backup(self):
        """
        close lets a backup under way finish (and keeps the file's lock
        until then); the copy is complete.
        """
        store = yield SQLiteStore.open(self.path, reactor)
        yield store.append([msg(f"m{i}") for i in range(5000)])
        copy = os.path.join(self.directory, "copy.db")
        backup = store.backup(copy)
        yield store.close()
        self.assertTrue(backup.called)
        self.assertEqual((yield backup), 5000)

    def only_the_file(self, name):
        """
        A copy of the database file alone, without its log: what a
        checkpoint has copied into it.
        """
        copy = os.path.join(self.directory, name)
        with open(self.path, "rb") as source, open(copy, "wb") as dest:
            dest.write(source.read())
        return self.connect(copy)

    @defer.inlineCallbacks
    def test_checkpoint_from_the_side(self):
        """
        The store's own connection leaves checkpoints to the side (its log
        may grow to WAL_BACKSTOP pages first): after appends of about
        CHECKPOINT_EVERY pages a checkpoint from another connection copies
        the log into the database file, which then holds every message
        appended before it began.
        """
        self.assertEqual(sqlite_module.log_pages([msg("m0")]), 3)
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 3 * 20)
        store = yield self.open()
        (limit,) = yield store._call(
            lambda: store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
        )
        self.assertEqual(limit, sqlite_module.WAL_BACKSTOP)
        for i in range(19):
            yield store.append([msg(f"m{i}")])
        self.assertIsNone(store._checkpointing)
        self.assertEqual(
            self.only_the_file("before.db").execute("PRAGMA user_version").fetchone(), (0,)
        )
        yield store.append([msg("m19")])
        self.assertIsNotNone(store._checkpointing)
        yield store._checkpointing
        rows = self.only_the_file("after.db").execute("SELECT content FROM messages").fetchall()
        self.assertEqual([r[0] for r in rows], [f"m{i}" for i in range(20)])

    @defer.inlineCallbacks
    def test_big_batches_count_their_pages(self):
        """
        A commit of many messages counts as the pages it fills: one batch
        of 96 messages starts a checkpoint due after 4 pages.
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 4)
        store = yield self.open()
        yield store.append([msg(f"m{i}") for i in range(3 * sqlite_module.ROWS_PER_PAGE)])
        self.assertIsNotNone(store._checkpointing)
        yield store._checkpointing

    @defer.inlineCallbacks
    def test_checkpoint_starts_when_the_log_holds_about_that_many_pages(self):
        """
        What counts toward a checkpoint is what the log really holds: when
        one starts, after one-message commits of short and of long
        messages, the log's frames are CHECKPOINT_EVERY, give or take a
        quarter (not three times as many, as when a commit counted one).
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 80)
        started = []
        self.patch(sqlite_module, "checkpoint_database", lambda *a: started.append(1) or 0)
        for text in ("x" * 100, "\U0001f600" * 1000):
            path = os.path.join(self.mktemp() + ".db")
            store = yield self.open(path)
            before = _log_frames(path)
            while not started:
                yield store.append([msg(text)])
            yield store._checkpointing
            del started[:]
            frames = _log_frames(path) - before
            self.assertGreaterEqual(frames, 80 * 0.75, text[:3])
            self.assertLessEqual(frames, 80 * 1.25, text[:3])

    @defer.inlineCallbacks
    def test_failed_append_starts_a_checkpoint(self):
        """
        An append that fails (a full disk) starts a checkpoint, so that the
        log's space can be used again when a little room comes back; while
        appends keep failing, at most one a second; and the first append
        that succeeds again starts one at once.
        """
        clock = task.Clock()
        tries = []
        self.patch(sqlite_module, "checkpoint_database", lambda *a: tries.append(1) or 0)
        store = yield self.open(clock=clock)
        yield store.append([msg("stored")])
        self.assertEqual(tries, [])

        def full(groups):
            raise sqlite3.OperationalError("database or disk is full")

        self.patch(store, "_write", full)
        for _ in range(3):
            yield self.assertFailure(store.append([msg("lost")]), StoreError)
            if store._checkpointing is not None:
                yield store._checkpointing
        self.assertEqual(tries, [1])
        clock.advance(sqlite_module.CHECKPOINT_AFTER_FAILURE)
        yield self.assertFailure(store.append([msg("lost")]), StoreError)
        yield store._checkpointing
        self.assertEqual(tries, [1, 1])
        # Room again: the first append that succeeds copies the log at once,
        # before more appends fill that room; the next ones do not.
        del store._write
        yield store.append([msg("stored again")])
        yield store._checkpointing
        self.assertEqual(tries, [1, 1, 1])
        yield store.append([msg("and again")])
        self.assertIsNone(store._checkpointing)
        self.assertEqual(
            contents((yield store.recent("lobby", 5))), ["stored", "stored again", "and again"]
        )

    @defer.inlineCallbacks
    def test_prunes_count_their_pages(self):
        """
        Removing messages writes to the log too: a prune that removes
        ROWS_PER_PAGE * CHECKPOINT_EVERY messages starts a checkpoint,
        after which the database file alone holds what is left.
        """
        store = yield self.open()
        yield store.append([msg(f"m{i}") for i in range(4 * sqlite_module.ROWS_PER_PAGE)])
        if store._checkpointing is not None:
            yield store._checkpointing
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 3)
        store._unchecked = 0
        removed = yield store.prune(keep_last=sqlite_module.ROWS_PER_PAGE)
        self.assertEqual(removed, 3 * sqlite_module.ROWS_PER_PAGE)
        self.assertIsNotNone(store._checkpointing)
        yield store._checkpointing
        pruned = self.only_the_file("pruned.db")
        (count,) = pruned.execute("SELECT count(*) FROM messages").fetchone()
        self.assertEqual(count, sqlite_module.ROWS_PER_PAGE)

    @defer.inlineCallbacks
    def test_failed_checkpoint_is_logged_and_loses_nothing(self):
        """
        A checkpoint that fails is logged as a warning; appends go on, and
        the next one is tried once enough pages are appended again.
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 3 * 5)  # five short commits
        tries = []

        def broken(path, busy_timeout):
            tries.append(path)
            raise sqlite3.OperationalError("disk I/O error")

        self.patch(sqlite_module, "checkpoint_database", broken)
        store = yield self.open()
        with capturedLogs() as events:
            for i in range(5):
                yield store.append([msg(f"m{i}")])
            yield store._checkpointing
        self.assertEqual(len(tries), 1)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertIn("disk I/O error", formatEvent(events[0]))
        self.assertIn(self.path, formatEvent(events[0]))
        for i in range(5, 10):
            yield store.append([msg(f"m{i}")])
        yield store._checkpointing
        self.assertEqual(len(tries), 2)
        self.assertEqual(contents((yield store.recent("lobby", 20))), [f"m{i}" for i in range(10)])

    @defer.inlineCallbacks
    def test_checkpoint_of_any_file_name(self):
        """
        The checkpoint opens the database by a URI (so as never to make
        it): a name with characters that mean something in a URI is
        quoted, and the checkpoint copies the log into that very file.
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 1)
        self.path = os.path.join(self.directory, "a b?c#d%20e.db")
        store = yield self.open()
        yield store.append([msg("one")])
        copied = yield store._checkpointing
        self.assertGreater(copied, 0)
        self.assertEqual(sorted(os.listdir(self.directory))[0], "a b?c#d%20e.db")
        rows = self.only_the_file("copy.db").execute("SELECT content FROM messages").fetchall()
        self.assertEqual(rows, [("one",)])

    @defer.inlineCallbacks
    def test_checkpoint_never_makes_the_file(self):
        """
        If the database file was removed while the server runs, a checkpoint
        (here, the one a refused append starts) fails, logged, instead of
        making an empty database in its place; what was stored is still
        read.
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 1)
        store = yield self.open()
        yield store.append([msg("one")])
        yield store._checkpointing
        os.remove(self.path)
        with capturedLogs() as events:
            yield self.assertFailure(store.append([msg("two")]), StoreError)
            self.assertIsNotNone(store._checkpointing)
            yield store._checkpointing
        self.assertFalse(os.path.exists(self.path))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["one"])

    @defer.inlineCallbacks
    def test_close_waits_for_a_checkpoint(self):
        """
        close lets a checkpoint under way finish before it releases the
        file's lock (closing that descriptor would drop the checkpoint's
        POSIX locks).
        """
        self.patch(sqlite_module, "CHECKPOINT_EVERY", 1)
        gate = threading.Event()
        real = sqlite_module.checkpoint_database

        def slow(path, busy_timeout):
            gate.wait(10)
            return real(path, busy_timeout)

        self.patch(sqlite_module, "checkpoint_database", slow)
        store = yield SQLiteStore.open(self.path, reactor)
        yield store.append([msg("one")])
        checkpoint = store._checkpointing
        closed = store.close()
        yield task.deferLater(reactor, 0, lambda: None)
        self.assertFalse(closed.called)
        self.assertIsNotNone(store._lock_fd)
        gate.set()
        yield closed
        self.assertTrue(checkpoint.called)
        self.assertIsNone(store._lock_fd)

    def test_missing_directory(self):
        """
        A database in a directory that does not exist is a one-line
        StoreError naming the directory; nothing is created.
        """
        path = os.path.join(self.directory, "no", "such", "chat.db")
        failure = self.failureResultOf(SQLiteStore.open(path, reactor), StoreError)
        self.assertIn(os.path.join(self.directory, "no", "such"), str(failure.value))
        self.assertFalse(os.path.exists(os.path.join(self.directory, "no")))

    @defer.inlineCallbacks
    def test_locked_database_does_not_stall_the_reactor(self):
        """
        While another connection holds the write lock, an append waits on
        the store's thread, not the reactor: it has not fired when it
        returns, the reactor keeps running, and it fails with StoreError
        once the busy timeout ends; the next append works.
        """
        store = yield self.open(busy_timeout=0.5)
        blocker = self.connect()
        blocker.execute("BEGIN IMMEDIATE")
        turned = []
        d = store.append([msg("blocked")])
        self.assertFalse(d.called)
        reactor.callLater(0, lambda: turned.append(d.called))
        failure = yield self.assertFailure(d, StoreError)
        self.assertEqual(turned, [False])
        self.assertIn("locked", str(failure))
        blocker.execute("ROLLBACK")
        yield store.append([msg("free")])
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["free"])

    @defer.inlineCallbacks
    def test_opens_while_another_program_writes(self):
        """
        A database at the current schema opens while another program holds
        its write lock (opening only reads it); appends wait for the lock.
        """
        store = yield self.open()
        yield store.append([msg("before")])
        yield store.close()
        blocker = self.connect()
        blocker.execute("BEGIN IMMEDIATE")
        store = yield self.open(busy_timeout=0.2)
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["before"])
        yield self.assertFailure(store.append([msg("blocked")]), StoreError)
        blocker.execute("ROLLBACK")
        yield store.append([msg("after")])
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["before", "after"])

    @defer.inlineCallbacks
    def test_files_removed_while_running_refuse_appends(self):
        """
        The database file removed or moved, or its log removed, while the
        store is open: appends fail with a StoreError that says so, rather
        than being written where the next start will not find them; what
        was stored before is still read.
        """
        for name, spoil in (
            ("removed", lambda path: os.remove(path)),
            ("moved", lambda path: os.rename(path, path + ".moved")),
            ("log removed", lambda path: os.remove(path + "-wal")),
        ):
            path = os.path.join(self.mktemp() + ".db")
            store = yield self.open(path)
            self.assertIsNotNone(store._wal, name)
            yield store.append([msg("kept")])
            spoil(path)
            failure = yield self.assertFailure(store.append([msg("lost")]), StoreError)
            self.assertIn("restart the server", str(failure), name)
            self.assertIn(path, str(failure), name)
            self.assertEqual(contents((yield store.recent("lobby", 5))), ["kept"], name)
            yield store.close()

    @defer.inlineCallbacks
    def test_group_commit(self):
        """
        Appends asked while another is being written share a transaction,
        and each still fires with its own ids, in the order asked.
        """
        store = yield self.open()
        transactions = []

        def trace(sql):
            # A transaction is a BEGIN, or a statement outside one (a
            # small batch is one INSERT, its own transaction).
            if sql.startswith("BEGIN") or (
                sql.startswith("INSERT") and not store._db.in_transaction
            ):
                transactions.append(sql)

        yield store._call(lambda: store._db.set_trace_callback(trace))
        batches = [[msg(f"{i}.{j}") for j in range(i % 4 + 1)] for i in range(60)]
        ids = yield defer.gatherResults([store.append(b) for b in batches])
        self.assertLess(len(transactions), len(batches) // 2)
        got = yield store.recent("lobby", 1000)
        by_id = {m.id: m.content for m in got}
        self.assertEqual([[by_id[i] for i in each] for each in ids], [contents(b) for b in batches])
        self.assertEqual([m.content for m in got], [m.content for b in batches for m in b])

    @defer.inlineCallbacks
    def test_every_batch_size(self):
        """
        Appends of every size up to a few hundred messages (written several
        rows per statement) store each message once, in order, under the
        ids they fired with.
        """
        store = yield self.open()
        sizes = list(range(1, 20)) + [63, 64, 65, 127, 128, 129, 255, 256, 257, 300]
        batches = [[msg(f"{n}.{i}") for i in range(n)] for n in sizes]
        ids = []
        for batch in batches:
            ids.append((yield store.append(batch)))
        got = yield store.recent("lobby", 10000)
        self.assertEqual([m.content for m in got], [m.content for b in batches for m in b])
        self.assertEqual([m.id for m in got], [i for each in ids for i in each])

    @defer.inlineCallbacks
    def test_batch_failing_midway_stores_none_of_it(self):
        """
        A batch whose write fails at a message in its middle stores none of
        its messages, whether it is written as one statement (a small
        batch) or as several in a transaction (a large one); the next
        batch is stored.
        """
        store = yield self.open()
        yield store._call(
            lambda: store._db.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = 'bad'"
                " BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
        for size in (3, 200):
            batch = [msg(f"{size}.{i}") for i in range(size)]
            batch[size // 2] = msg("bad")
            yield self.assertFailure(store.append(batch), StoreError)
            self.assertEqual((yield store.recent("lobby", 1000)), [])
        ids = yield store.append([msg("good")])
        self.assertEqual(
            [(m.id, m.content) for m in (yield store.recent("lobby", 5))], [(ids[0], "good")]
        )

    @defer.inlineCallbacks
    def test_failed_group_stores_nothing(self):
        """
        When a shared transaction fails every append in it fails and none
        of their messages is stored.
        """
        store = yield self.open(busy_timeout=0.2)
        blocker = self.connect()
        blocker.execute("BEGIN IMMEDIATE")
        results = [store.append([msg(f"x{i}")]) for i in range(5)]
        for d in results:
            yield self.assertFailure(d, StoreError)
        blocker.execute("ROLLBACK")
        self.assertEqual((yield store.recent("lobby", 10)), [])

    @defer.inlineCallbacks
    def test_operations_in_call_order(self):
        """
        A read asked right after an append sees it, and an append asked
        after a read does not change what the read returns.
        """
        store = yield self.open()
        # The first append is on the thread while the rest wait their turn.
        appended = [store.append([msg("one")]), store.append([msg("two")])]
        read = store.recent("lobby", 5)
        later = store.append([msg("three")])
        self.assertEqual(contents((yield read)), ["one", "two"])
        yield defer.gatherResults(appended + [later])

    @defer.inlineCallbacks
    def test_close_finishes_what_was_asked(self):
        """
        close waits for the operations asked before it: an append not yet
        done when close is called is stored.
        """
        store = yield SQLiteStore.open(self.path, reactor)
        appended = store.append([msg("last words")])
        yield store.close()
        self.assertTrue(appended.called)
        yield appended
        rows = self.connect().execute("SELECT content FROM messages").fetchall()
        self.assertEqual(rows, [("last words",)])

    @defer.inlineCallbacks
    def test_prune_in_chunks_lets_appends_through(self):
        """
        A prune is many short transactions: an append asked after a big
        prune began is done before the prune ends.
        """
        self.patch(sqlite_module, "PRUNE_CHUNK", 10)
        store = yield self.open()
        yield store.append([msg(f"old{i}", days_ago=30) for i in range(300)])
        order = []
        appended = []
        chunk = store._prune_old

        def first_chunk(*args):
            # Once the prune is under way, ask for an append (from the
            # store's thread, as the reactor would between two chunks).
            result = chunk(*args)
            if not appended:
                appended.append(None)
                reactor.callFromThread(
                    lambda: appended.append(
                        store.append([msg("new")]).addCallback(lambda _: order.append("append"))
                    )
                )
            return result

        self.patch(store, "_prune_old", first_chunk)
        yield store.prune(keep_days=1).addCallback(order.append)
        yield appended[1]
        self.assertEqual(order, ["append", 300])
        self.assertEqual(contents((yield store.recent("lobby", 5))), ["new"])

    @defer.inlineCallbacks
    def test_prune_by_count_in_chunks(self):
        """
        A count prune bigger than a chunk, keeping more than a step, removes
        everything it should and nothing else.
        """
        self.patch(sqlite_module, "PRUNE_CHUNK", 7)
        self.patch(sqlite_module, "PRUNE_STEP", 3)
        store = yield self.open()
        yield store.append([msg(f"m{i}", room=f"r{i % 3}") for i in range(90)])
        self.assertEqual((yield store.prune(keep_last=4)), 90 - 12)
        for r in range(3):
            self.assertEqual(
                contents((yield store.recent(f"r{r}", 10))), [f"m{i}" for i in range(r + 78, 90, 3)]
            )
        self.assertEqual((yield store.prune(keep_last=4)), 0)
        self.assertEqual((yield store.prune(keep_last=3)), 3)

    @defer.inlineCallbacks
    def test_backup_while_writing_is_a_prefix(self):
        """
        A backup taken while a thread keeps appending holds exactly the
        first k messages for some k, at least every message acknowledged
        before the backup began.
        """
        store = yield self.open()
        yield store.append([msg(f"m{i}") for i in range(2000)])
        stop = threading.Event()
        written = []

        def writer():
            # A second writer in another thread, as another process would.
            db = sqlite3.connect(self.path, isolation_level=None, timeout=5)
            i = 2000
            while not stop.is_set():
                db.execute("BEGIN IMMEDIATE")
                for _ in range(20):
                    db.execute(
                        "INSERT INTO messages (room, timestamp, sender, content) VALUES (?,?,?,?)",
                        ("lobby", stamp(0), "w", f"m{i}"),
                    )
                    i += 1
                db.execute("COMMIT")
                written.append(i)
            db.close()

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            copies = []
            for n in range(3):
                acknowledged = written[-1] if written else 2000
                path = os.path.join(self.directory, f"copy{n}.db")
                count = yield store.backup(path)
                copies.append((path, count, acknowledged))
        finally:
            stop.set()
            thread.join()
        self.assertGreater(written[-1], 2000)
        for path, count, acknowledged in copies:
            db = self.connect(path)
            rows = db.execute("SELECT id, content FROM messages ORDER BY id").fetchall()
            self.assertEqual(len(rows), count)
            self.assertGreaterEqual(count, acknowledged)
            self.assertEqual(rows, [(i + 1, f"m{i}") for i in range(count)])
            self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "delete")
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")


def _log_frames(path):
    """
    The frames in the write-ahead log of the database at C{path} (its
    size: SQLite reuses the file from its start after a checkpoint, so
    this counts from the first commit only).
    """
    wal = path + "-wal"
    size = os.path.getsize(wal) if os.path.exists(wal) else 0
    return max(0, size - 32) // (4096 + 24)
