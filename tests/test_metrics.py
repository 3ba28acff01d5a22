"""
Tests of C{twistd chat --metrics}: a real server process, scraped over HTTP
as Prometheus would, with real clients moving its counters.
"""

import os
import re
import shutil
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import TestCase

from tests.support import PATIENCE, ServerProcess, SocketClient

METRICS_AT = re.compile(r"Metrics served at IPv4Address\([^)]*port=(\d+)\)")


def scrape(port):
    """
    Every sample the endpoint serves, by name and labels.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=PATIENCE) as r:
        text = r.read().decode("utf-8")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


class MetricsTests(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.server = ServerProcess(
            self.directory,
            "-d",
            os.path.join(self.directory, "chat.sqlite3"),
            "--metrics",
            "tcp:0:interface=127.0.0.1",
        ).start()
        self.addCleanup(self.server.kill)
        self.port = int(METRICS_AT.search(self.server.log()).group(1))

    def client(self, newline=True):
        client = SocketClient(self.server.port, newline)
        self.addCleanup(client.close)
        return client

    def test_counters_follow_clients(self):
        """
        Logins, messages, deliveries, requests by word and outcome, errors by
        kind, pages of history, connections by dialect, logouts and store
        latency move with what the clients do; the scrapes are not logged.
        """
        before = scrape(self.port)
        self.assertEqual(before["chat_logins_total", ()], 0)
        alice = self.client()
        legacy = self.client(newline=False)
        alice.login("alice")
        legacy.login("old")
        for i in range(3):
            alice.send("msg", f"m{i}")
        legacy.read_messages(3)
        self.assertEqual(scrape(self.port)["chat_rooms", ()], 1)
        alice.send("bogus")
        alice.send("history")
        alice.send("join", "dev")
        alice.read_until(lambda: len(alice.of("error")) == 1 and len(alice.of("history")) == 3)
        after = scrape(self.port)
        self.assertEqual(after["chat_rooms", ()], 2)
        self.assertEqual(after["chat_logins_total", ()], 2)
        self.assertEqual(after["chat_messages_stored_total", ()], 3)
        self.assertEqual(after["chat_deliveries_total", ()], 6)
        self.assertGreater(after["chat_sent_bytes_total", ()], 6 * 60)
        self.assertEqual(after["chat_requests_total", (("outcome", "handled"), ("word", "msg"))], 3)
        self.assertEqual(after["chat_requests_total", (("outcome", "unknown"), ("word", ""))], 1)
        self.assertEqual(after["chat_errors_total", (("kind", "unknown"),)], 1)
        self.assertEqual(after["chat_history_pages_total", ()], 1)
        self.assertEqual(after["chat_skipped_messages_total", ()], 0)
        self.assertEqual(after["chat_history_windows_total", ()], 3)  # two logins, a join
        self.assertEqual(after["chat_users", ()], 2)
        for reason in ("not_reading", "flooding", "too_large"):
            key = ("chat_dropped_clients_total", (("reason", reason),))
            self.assertEqual(after[key], 0, reason)
        for dialect in ("stream", "legacy"):
            key = ("chat_connections", (("dialect", dialect), ("transport", "tcp")))
            self.assertEqual(after[key], 1, dialect)
        appends = after["chat_store_seconds_count", (("operation", "append"),)]
        self.assertGreaterEqual(appends, 1)
        alice.send("logout")
        alice.read_until_closed()
        deadline = time.monotonic() + PATIENCE
        while scrape(self.port)["chat_users", ()] != 1:
            self.assertLess(time.monotonic(), deadline, "alice is still counted")
            time.sleep(0.05)
        self.assertEqual(scrape(self.port)["chat_logouts_total", ()], 1)
        # The scrapes wrote no access lines to the server's log (the logout,
        # logged after most of them, is there).
        log = self.server.log()
        self.assertIn("alice logged out", log)
        self.assertNotIn("GET /metrics", log)
