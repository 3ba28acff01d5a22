"""
Tests of the twistd path: the plugin, the options, and a real C{twistd -n
chat} process driven over real loopback sockets, restarted and killed.
"""

import errno
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

from twisted.application.service import IServiceMaker, MultiService
from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import chat
import twisted
from chat.server import options as opts
from chat.server import startup, tap
from tests.support import PATIENCE, ROOT, TWISTD, ServerProcess, SocketClient, child_env


class PluginTests(TestCase):
    def test_plugin_found(self):
        """
        Twisted's plugin system finds a service maker with the chat tapname
        that points at chat.server.tap.
        """
        makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
        self.assertIn("chat", makers)
        self.assertIs(makers["chat"].options, opts.Options)

    def test_defaults(self):
        """
        With no options the server listens on tcp:9998 and keeps history in
        chat.sqlite3.
        """
        options = opts.Options()
        options.parseOptions([])
        self.assertEqual(options["port"], "tcp:9998")
        self.assertEqual(options["database"], "chat.sqlite3")
        self.assertEqual(options["history-format"], "string")

    def test_options(self):
        """
        Options are parsed, a bare port number means TCP, and bad values are
        usage errors.
        """
        options = opts.Options()
        options.parseOptions(["--port", "1234", "-d", ":memory:", "--history-format", "object"])
        self.assertEqual(options["port"], "tcp:1234")
        self.assertEqual(options["database"], ":memory:")
        for bad in (
            ["--history-format", "xml"],
            ["--port", "nonsense:1"],
            ["--max-message-length", "0"],
            ["--max-message-length", "ten"],
            # 0 would remove every message hourly (elsewhere 0 is "no limit").
            ["--keep-messages", "0"],
            # Past Linux's limits the kernel would keep its own two hours.
            ["--keepalive-idle", "40000"],
            ["--keepalive-interval", "0"],
            ["--keepalive-count", "128"],
        ):
            self.assertRaises(usage.UsageError, opts.Options().parseOptions, bad)

    def test_port_number_out_of_range(self):
        """
        A TCP port number past 65535 (or below 0), in --port or --metrics,
        is a usage error naming the option, not an OverflowError traceback
        from bind() at start-up.
        """
        for bad in (
            ["--port", "99980"],
            ["--port", "tcp:65536:interface=127.0.0.1"],
            ["--port", "tcp6:port=70000"],
            ["--port", "tcp:-1"],
            ["--metrics", "tcp:99100"],
        ):
            with self.assertRaises(usage.UsageError) as caught:
                opts.Options().parseOptions(bad)
            self.assertIn(f"{bad[0]}: port", str(caught.exception))
        options = opts.Options()
        options.parseOptions(["--port", "65535", "--metrics", "tcp:0"])
        self.assertEqual(options["port"], "tcp:65535")

    def test_backlog_past_a_c_int(self):
        """
        A --backlog larger than listen() takes (a C int) listens, capped as
        the kernel caps any backlog at somaxconn; it was an OverflowError
        traceback at start-up.
        """
        options = opts.Options()
        options.parseOptions(
            ["--port", "tcp:0:interface=127.0.0.1", "-d", ":memory:", "--backlog", "3000000000"]
        )
        top = tap.makeService(options)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        [server] = list(top)
        [listener] = list(server)
        self.assertIsNotNone(listener._waitingForPort.result.getHost().port)

    def test_numbers_too_large_for_where_they_go(self):
        """
        A backlog= in --port or --metrics larger than listen() takes (a C
        int), and a --history-limit larger than the history window and
        SQLite's LIMIT take (2**63 - 1), are usage errors that say the
        most allowed (a backlog's naming the option), not OverflowError
        tracebacks at start-up.
        """
        for bad, said in (
            (
                ["--port", "tcp:0:interface=127.0.0.1:backlog=99999999999999"],
                "--port: backlog 99999999999999 is not between 0 and 2147483647",
            ),
            (["--port", "unix:chat.sock:backlog=2147483648"], "--port: backlog"),
            (["--metrics", "tcp:0:backlog=99999999999999"], "--metrics: backlog"),
            (["--history-limit", str(2**63)], f"is not between 0 and {2**63 - 1}"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                opts.Options().parseOptions(bad)
            self.assertIn(said, str(caught.exception))
        options = opts.Options()
        options.parseOptions(
            [
                "--port", "tcp:0:backlog=2147483647",
                "--metrics", "tcp:0:backlog=5",
                "--history-limit", str(2**63 - 1),
            ]
        )  # fmt: skip
        self.assertEqual(options["history-limit"], 2**63 - 1)

    def test_make_service(self):
        """
        makeService composes the chat server; starting it opens the database
        and listens with a factory built with the chat core.
        """
        options = opts.Options()
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

    def test_signal_handlers_while_running(self):
        """
        Starting the services installs chat's handlers for SIGHUP, SIGUSR1,
        SIGUSR2 and SIGQUIT; once stopped, the handlers before are back.
        """
        numbers = [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT]
        before = [signal.getsignal(n) for n in numbers]
        options = opts.Options()
        options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "-d", ":memory:"])
        top = tap.makeService(options)
        top.startService()
        for number, handler in zip(numbers, before):
            self.assertNotEqual(signal.getsignal(number), handler)

        def stopped(_):
            self.assertEqual([signal.getsignal(n) for n in numbers], before)

        return top.stopService().addCallback(stopped)

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

    def test_twistd_version(self):
        """
        twistd chat --version prints chat's version (and Twisted's), not
        only Twisted's.
        """
        out = subprocess.run(
            TWISTD + ["chat", "--version"], env=child_env(), capture_output=True, text=True
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, f"chat {chat.__version__} (Twisted {twisted.__version__})\n")

    def test_help_keeps_endpoints_whole(self):
        """
        twistd chat --help never breaks an endpoint example across lines,
        and documents the new options.
        """
        out = subprocess.run(
            TWISTD + ["chat", "--help"], env=child_env(), capture_output=True, text=True
        ).stdout
        for example in (
            "tcp:9998:interface=127.0.0.1",
            "ssl:9999:privateKey=key.pem:certKey=cert.pem",
            "unix:/run/chat/chat.sock:mode=660",
        ):
            self.assertIn(example, out)
        for option in ("--backlog", "--log-format", "--version"):
            self.assertIn(option, out)


class DescriptionTests(TestCase):
    """
    The listening endpoint description gets a backlog, and a Unix socket a
    safe mode, unless the description says otherwise.
    """

    def parse(self, *args):
        options = opts.Options()
        options.parseOptions(list(args))
        return options

    def test_backlog_added(self):
        """
        tcp:, ssl:, tcp6: and unix: descriptions get the backlog.
        """
        for description in ("tcp:0", "tcp6:0", "ssl:0:privateKey=k.pem", "unix:/x"):
            self.assertEqual(
                opts.parse_description(opts.listen_description(description, 77))[2]["backlog"],
                "77",
            )

    def test_description_settings_win(self):
        """
        A description's own backlog= and mode= are kept; other endpoint
        types are left alone.
        """
        self.assertEqual(opts.listen_description("tcp:0:backlog=5", 77), "tcp:0:backlog=5")
        self.assertEqual(
            opts.listen_description("unix:/x:mode=600:backlog=5", 77),
            "unix:/x:mode=600:backlog=5",
        )
        self.assertEqual(opts.listen_description("unix:/x", 77), "unix:/x:backlog=77:mode=660")
        self.assertEqual(
            opts.listen_description("systemd:domain=INET:index=0", 77),
            "systemd:domain=INET:index=0",
        )

    def test_parse_description(self):
        """
        Colons and equals signs escaped with a backslash are part of a
        value, and a key ends at the first equals sign, as in Twisted's own
        parser.
        """
        self.assertEqual(
            opts.parse_description(r"unix:/tmp/a\:backlog\=3:mode=600"),
            ("unix", ["/tmp/a:backlog=3"], {"mode": "600"}),
        )
        self.assertEqual(
            opts.parse_description(r"tcp:port=80:interface=\:\:1"),
            ("tcp", [], {"port": "80", "interface": "::1"}),
        )
        self.assertEqual(
            opts.parse_description(r"unix:/tmp/a\:b=3"), ("unix", [], {"/tmp/a:b": "3"})
        )

    def test_default_backlog(self):
        """
        The default backlog is the kernel's somaxconn, or the C library's
        SOMAXCONN where that cannot be read.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "somaxconn")
        with open(path, "w") as f:
            f.write("1234\n")
        self.assertEqual(opts.default_backlog(path), 1234)
        self.assertEqual(opts.default_backlog(os.path.join(directory, "none")), socket.SOMAXCONN)
        self.assertEqual(self.parse()["backlog"], opts.default_backlog())
        self.assertEqual(self.parse("--backlog", "9")["backlog"], 9)
        self.assertRaises(usage.UsageError, self.parse, "--backlog", "0")

    def test_log_format(self):
        """
        --log-format takes text (the default) or json.
        """
        self.assertEqual(self.parse()["log-format"], "text")
        self.assertEqual(self.parse("--log-format", "json")["log-format"], "json")
        self.assertRaises(usage.UsageError, self.parse, "--log-format", "xml")


class ListenFailureTests(TestCase):
    """
    A port taken between the pre-flight check and the real listen.
    """

    def service(self, daemonized):
        reason = OSError(errno.EADDRINUSE, "Address already in use")
        endpoint = FailingEndpoint(error.CannotListenError("127.0.0.1", 9998, reason))
        return tap.LoggingServerService(endpoint, Factory(), "tcp:9998", daemonized)

    def test_foreground(self):
        """
        In the foreground: one line on the real standard error (twistd has
        sent sys.stderr to the log by then) and exit status 1.
        """
        err = io.StringIO()
        self.patch(sys, "__stderr__", err)
        exit = self.assertRaises(SystemExit, self.service(False).privilegedStartService)
        self.assertEqual(exit.code, 1)
        self.assertEqual(
            err.getvalue(),
            "chat: cannot listen on tcp:9998: Address already in use "
            "(is another server running? Stop it or choose another --port)\n",
        )

    def test_daemon(self):
        """
        In a daemon's child (no terminal): an error for twistd to report
        to the waiting parent.
        """
        failure = self.assertRaises(startup.StartupError, self.service(True).privilegedStartService)
        self.assertIn("chat: cannot listen on tcp:9998", str(failure))


@implementer(IStreamServerEndpoint)
class FailingEndpoint:
    """
    An endpoint that cannot listen.
    """

    def __init__(self, reason):
        self.reason = reason

    def listen(self, factory):
        return defer.fail(self.reason)


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

    def test_first_login_gets_the_history(self):
        """
        On the first start on a database of the first release (which the
        server upgrades), a login made the moment the server listens gets
        the history, not an empty one: requests wait until the window is
        read.
        """
        db = sqlite3.connect(self.database)
        with open(os.path.join(ROOT, "chat", "storage", "schema", "v1.sql")) as f:
            db.executescript(f.read())
        db.executemany(
            "INSERT INTO messages (timestamp, sender, content) VALUES (?, ?, ?)",
            (("2026-12-01T00:00:00Z", "old", f"m{i}") for i in range(50000)),
        )
        db.commit()
        db.close()
        server = self.start("-d", self.database)
        carol = self.client(server)
        carol.send("login", "carol")
        carol.read_until(lambda: carol.of("history"))
        items = [json.loads(i)["content"] for i in carol.of("history")[0]["content"]]
        self.assertEqual(items, [f"m{i}" for i in range(49500, 50000)])

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
