"""
Quick checks of the store benchmark's own parts (bench/store.py): the data
it builds and the figures a case reports. No timings are asserted.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.trial.unittest import TestCase

from bench import store as bench_store


class StoreBenchTests(TestCase):
    def test_fill_is_a_first_release_database(self):
        """
        fill makes a database in the first release's schema (user_version
        0, no room column) with the messages asked for.
        """
        path = os.path.abspath(self.mktemp())
        bench_store.fill(path, 3000)
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 0)
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
        self.assertEqual(columns, ["id", "timestamp", "sender", "content"])
        self.assertEqual(
            db.execute("SELECT count(*), max(id) FROM messages").fetchone(), (3000, 3000)
        )

    def test_open_case_upgrades_and_reports(self):
        """
        The open case, in its own process, upgrades a filled database, reads
        a window and a page (it checks they are full), and reports its
        figures.
        """
        path = os.path.abspath(self.mktemp())
        bench_store.fill(path, 5000)
        figures = bench_store.case("open", path)
        self.assertEqual(
            sorted(figures),
            sorted(
                [
                    "open s",
                    "open + recent(1000) s",
                    "before(1000) from the middle ms",
                    "peak RSS MiB",
                    "whole process s",
                ]
            ),
        )
        db = sqlite3.connect(path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA user_version").fetchone()[0], 2)
