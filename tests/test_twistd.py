"""
Tests of the twistd path: the plugin, the options, and a real C{twistd -n
chat} process driven over real loopback sockets, restarted and killed.
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import TestCase

from chat.server import tap
from tests.support import PATIENCE, TWISTD, ServerProcess, SocketClient, child_env


class PluginTests(TestCase):
    def test_plugin_found(self):
        """
        Twisted's plugin system finds a service maker with the chat tapname
        that points at chat.tap.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("chat", makers)
        self.assertIs(makers["chat"].options, tap.Options)

    def test_defaults(self):
        """
        With no options the server listens on tcp:9998 and keeps history in
        chat.sqlite3.
        """
        options = tap.Options()
        options.parseOptions([])
        self.assertEqual(options["port"], "tcp:9998")
        self.assertEqual(options["database"], "chat.sqlite3")
        self.assertEqual(options["history-format"], "string")

    def test_options(self):
        """
        Options are parsed, a bare port number means TCP, and bad values are
        usage errors.
        """
        options = tap.Options()
        options.parseOptions(["--port", "1234", "-d", ":memory:", "--history-format", "object"])
        self.assertEqual(options["port"], "tcp:1234")
        self.assertEqual(options["database"], ":memory:")
        for bad in (
            ["--history-format", "xml"],
            ["--port", "nonsense:1"],
            ["--max-message-length", "0"],
            ["--max-message-length", "ten"],
        ):
            self.assertRaises(usage.UsageError, tap.Options().parseOptions, bad)

    def test_make_service(self):
        """
        makeService composes the chat server; starting it opens the database
        and listens with a factory built with the chat core.
        """
        options = tap.Options()
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "chat.sqlite3")
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "-d", path])
        top = tap.makeService(options)
        self.assertIsInstance(top, MultiService)
        [server] = list(top)
        top.startService()
        self.addCleanup(top.stopService)
        self.assertTrue(os.path.exists(path))
        [listener] = list(server)
        self.assertIs(listener.factory.service, server.chat)

    def test_twistd_help_lists_chat(self):
        """
        A real twistd process lists the chat plugin and its options.
        """
        out = subprocess.run(TWISTD + ["--help"], env=child_env(), capture_output=True, text=True)
        self.assertIn("chat", out.stdout)
        out = subprocess.run(
            TWISTD + ["chat", "--help"], env=child_env(), capture_output=True, text=True
        )
        for option in ("--port", "--database", "--history-format"):
            self.assertIn(option, out.stdout)


class RealServerTests(TestCase):
    def start(self, *args):
        server = ServerProcess(self.directory, *args).start()
        self.addCleanup(server.kill)
        return server

    def client(self, server, newline=True):
        client = SocketClient(server.port, newline)
        self.addCleanup(client.close)
        return client

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)
        self.database = os.path.join(self.directory, "chat.sqlite3")

    def test_chat_and_restart(self):
        """
        Two clients, one bare-JSON and one newline, chat through a real
        server; after a clean restart a new user sees the whole history.
        """
        server = self.start("-d", self.database)
        alice = self.client(server, newline=False)
        bob = self.client(server, newline=True)
        info, history = alice.login("alice")
        self.assertIn("Login successful", info["content"])
        self.assertEqual(history["content"], [])
        bob.login("bob")
        for text in ("hello", "bl\xe5b\xe6r \U0001f600"):
            alice.send("msg", text)
            for client in (alice, bob):
                [message] = client.read()
                self.assertEqual((message["sender"], message["content"]), ("alice", text))
        bob.send("names")
        self.assertEqual(bob.read()[0]["content"], "alice, bob")
        bob.send("logout")
        self.assertEqual(bob.read_until_closed()[0]["content"], "Logged out")
        # twistd reports the signal it stopped on in its exit status.
        self.assertIn(server.stop(signal.SIGTERM), (0, -signal.SIGTERM))
        alice.read_until_closed()

        server = self.start("-d", self.database)
        carol = self.client(server)
        _, history = carol.login("carol")
        items = [json.loads(i) for i in history["content"]]
        self.assertEqual(
            [(i["sender"], i["content"]) for i in items],
            [("alice", "hello"), ("alice", "bl\xe5b\xe6r \U0001f600")],
        )

    def test_kill_9_keeps_what_was_shown(self):
        """
        Every message a client was shown is in the history after the server
        is killed with SIGKILL and started again.
        """
        server = self.start("-d", self.database)
        alice = self.client(server)
        watcher = self.client(server, newline=False)
        alice.login("alice")
        watcher.login("watcher")
        for i in range(100):
            alice.send("msg", f"m{i}")
        shown = [m["content"] for m in watcher.read_messages(60)]
        server.stop(signal.SIGKILL)

        server = self.start("-d", self.database)
        carol = self.client(server)
        _, history = carol.login("carol")
        stored = [json.loads(i)["content"] for i in history["content"]]
        self.assertEqual(stored[: len(shown)], shown)
        self.assertEqual(shown[:60], [f"m{i}" for i in range(60)])

    def test_retention_while_serving(self):
        """
        With --keep-messages, a server started on a longer history removes
        the oldest messages from the database, and a login then sees only
        those kept.
        """
        server = self.start("-d", self.database)
        alice = self.client(server)
        alice.login("alice")
        for i in range(10):
            alice.send("msg", f"m{i}")
        alice.read_messages(10)
        server.stop()
        server = self.start("-d", self.database, "--keep-messages", "3")
        deadline = time.monotonic() + PATIENCE
        while True:
            db = sqlite3.connect(self.database)
            try:
                rows = [r[0] for r in db.execute("SELECT content FROM messages ORDER BY id")]
            finally:
                db.close()
            if len(rows) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(rows, ["m7", "m8", "m9"])
        carol = self.client(server)
        _, history = carol.login("carol")
        self.assertEqual([json.loads(i)["content"] for i in history["content"]], rows)

    def test_bad_client_others_carry_on(self):
        """
        A client sending garbage, and one vanishing without logout, do not
        stop the others; the vanished name is free again.
        """
        server = self.start("-d", ":memory:")
        alice = self.client(server)
        alice.login("alice")
        mallory = self.client(server, newline=False)
        mallory.sock.sendall(b'{"request": "login", "content": "mallory"')
        mallory.sock.sendall(b"}[1]{]")
        self.assertEqual(
            [r["response"] for r in mallory.read(4)], ["info", "history", "error", "error"]
        )
        mallory.close()
        alice.send("msg", "after")
        self.assertEqual(alice.read()[0]["content"], "after")
        again = self.client(server)
        info, _ = again.login("mallory")
        self.assertEqual(info["response"], "info")
