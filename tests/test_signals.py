"""
What the operator's signals do to a real C{twistd -n chat} process: SIGHUP
reopens the log file, SIGUSR1 rotates it and logs a status line, SIGUSR2
logs a status line, and SIGQUIT shuts down as gracefully as SIGTERM. None
of them loses a message or drops a client.
"""

import json
import os
import shutil
import signal
import tempfile

from twisted.trial.unittest import TestCase

from tests.support import ServerProcess, SocketClient

#: The status line SIGUSR1 and SIGUSR2 log, with a client logged in.
STATUS = r"Status: 1 connections, 1 logged in, (\d+) messages in the history window, up \d+ s"


class SignalTests(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.database = os.path.join(self.directory, "chat.sqlite3")

    def start(self, logfile=None):
        server = ServerProcess(self.directory, "-d", self.database, logfile=logfile).start()
        self.addCleanup(server.kill)
        client = SocketClient(server.port)
        self.addCleanup(client.close)
        client.login("alice")
        return server, client

    def assert_serving(self, server, client, text):
        """
        The process runs, and a message from the client comes back to it
        after every message it sent before.
        """
        self.assertIsNone(server.process.poll(), server.log())
        client.send("msg", text)
        [message] = client.read()
        self.assertEqual((message["sender"], message["content"]), ("alice", text))

    def test_sighup_reopens_the_log_file(self):
        """
        After the log file is moved away (as logrotate does), SIGHUP makes
        the server log to a new file at the old path, and it keeps serving.
        """
        path = os.path.join(self.directory, "chat.log")
        server, client = self.start(logfile=path)
        self.assert_serving(server, client, "before")
        os.rename(path, path + ".old")
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"SIGHUP: reopened the log file .*chat\.log")
        self.assert_serving(server, client, "after")
        with open(path + ".old", encoding="utf-8") as f:
            self.assertNotIn("SIGHUP", f.read())

    def test_sighup_with_standard_output(self):
        """
        Logging to standard output, SIGHUP only logs that there is nothing
        to reopen: the server and its clients carry on.
        """
        server, client = self.start()
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log(r"SIGHUP: logging to standard output, nothing to reopen")
        self.assert_serving(server, client, "still here")

    def test_sigusr1_rotates_and_logs_status(self):
        """
        SIGUSR1 rotates the log file (twistd's meaning: chat.log becomes
        chat.log.1) and logs a status line in the new file.
        """
        path = os.path.join(self.directory, "chat.log")
        server, client = self.start(logfile=path)
        self.assert_serving(server, client, "one")
        server.process.send_signal(signal.SIGUSR1)
        match = server.wait_for_log(STATUS)
        self.assertEqual(match.group(1), "1")
        self.assertTrue(os.path.exists(path + ".1"))
        with open(path + ".1", encoding="utf-8") as f:
            self.assertIn("Listening on", f.read())
        self.assert_serving(server, client, "two")

    def test_sigusr2_logs_status(self):
        """
        SIGUSR2 logs one status line (connections, users, history, uptime)
        and changes nothing else.
        """
        server, client = self.start()
        server.process.send_signal(signal.SIGUSR2)
        server.wait_for_log(STATUS)
        self.assert_serving(server, client, "still here")
        client.send("names")
        self.assertEqual(client.read()[0]["content"], "alice")

    def test_sigquit_shuts_down_gracefully(self):
        """
        SIGQUIT tells the clients the server is going away, keeps every
        message they were shown, and exits with status 0 (no core dump).
        """
        server, client = self.start()
        watcher = SocketClient(server.port, newline=False)
        self.addCleanup(watcher.close)
        watcher.login("watcher")
        for i in range(20):
            client.send("msg", f"m{i}")
        watcher.read_messages(5)
        server.process.send_signal(signal.SIGQUIT)
        rest = watcher.read_until_closed()
        self.assertEqual(rest[-1]["response"], "info")
        self.assertIn("going away", rest[-1]["content"])
        # (A legacy client may get messages that waited together as one
        # history response.)
        shown = [m["content"] for m in watcher.messages()]
        self.assertEqual(server.process.wait(), 0)
        self.assertRegex(server.log(), r"Received SIGQUIT, shutting down")

        server = ServerProcess(self.directory, "-d", self.database).start()
        self.addCleanup(server.kill)
        carol = SocketClient(server.port)
        self.addCleanup(carol.close)
        _, history = carol.login("carol")
        stored = [json.loads(i)["content"] for i in history["content"]]
        self.assertEqual(stored[: len(shown)], shown)

    def legacy_client_owed_messages(self):
        """
        A server, a legacy client (bare JSON) it owes 200 messages too long
        to share a response (about 2 s of paced writes), and their texts.
        """
        server = ServerProcess(self.directory, "-d", self.database, "--flood-rate=0").start()
        self.addCleanup(server.kill)
        alice = SocketClient(server.port)
        self.addCleanup(alice.close)
        alice.login("alice")
        watcher = SocketClient(server.port, newline=False)
        self.addCleanup(watcher.close)
        watcher.login("watcher")
        texts = [f"m{i} " + "x" * 900 for i in range(200)]
        for text in texts:
            alice.send("msg", text)
        alice.read(200)
        return server, watcher, texts

    def test_signals_during_shutdown(self):
        """
        While a graceful shutdown still sends a legacy client what it was
        due (paced, about 2 s for 200 messages too long to share a
        response), SIGHUP does not kill the process: the client gets every
        message and the notice.
        """
        server, watcher, texts = self.legacy_client_owed_messages()
        server.process.send_signal(signal.SIGQUIT)
        server.wait_for_log(r"Received SIGQUIT")
        server.process.send_signal(signal.SIGHUP)
        rest = watcher.read_until_closed()
        self.assertEqual([m["content"] for m in watcher.messages()], texts)
        self.assertIn("going away", rest[-1]["content"])
        self.assertEqual(server.process.wait(), 0)
        self.assertIn("SIGHUP: logging to standard output", server.log())

    def test_second_stop_signal_during_shutdown(self):
        """
        A SIGTERM or Ctrl-C (SIGINT) while a graceful shutdown is still
        under way (sending a legacy client what it was due, paced) logs one
        line saying so, not Twisted's ReactorNotRunning traceback; the
        shutdown goes on, and the process exits as SIGTERM makes it.
        """
        server, watcher, texts = self.legacy_client_owed_messages()
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"Received SIGTERM, shutting down")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log(r"Received SIGTERM: already shutting down")
        server.process.send_signal(signal.SIGINT)
        server.wait_for_log(r"Received SIGINT: already shutting down")
        rest = watcher.read_until_closed()
        self.assertEqual([m["content"] for m in watcher.messages()], texts)
        self.assertIn("going away", rest[-1]["content"])
        self.assertEqual(server.process.wait(), -signal.SIGTERM)
        log = server.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("ReactorNotRunning", log)
        self.assertEqual(log.count("Received SIGTERM, shutting down"), 1)
