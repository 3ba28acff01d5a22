"""
Starting a real C{twistd chat} process: what it says when it cannot start
(in the foreground and as a daemon), the listen backlog it asks the kernel
for, the Unix socket it creates, and its JSON log format.
"""

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, TestCase

from tests.support import LISTENING, PATIENCE, TWISTD, ServerProcess, SocketClient, child_env

#: twistd as a daemon: it forks, and its first process reports how start-up went.
DAEMON = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def kernel_backlog() -> int:
    """
    The largest listen backlog the kernel grants (net.core.somaxconn).
    """
    with open("/proc/sys/net/core/somaxconn") as f:
        return int(f.read())


class StartupErrorTests(TestCase):
    """
    A server that cannot start says why in one line on standard error and
    exits with a non-zero status, whether or not it daemonizes.
    """

    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def twistd(self, *args, daemon=False, env=None):
        """
        Run twistd chat to its end; return (status, stdout, stderr).
        """
        if daemon:
            pidfile = os.path.join(self.directory, "twistd.pid")
            self.addCleanup(self.kill_daemon, pidfile)
            command = [
                *DAEMON,
                f"--pidfile={pidfile}",
                f"--logfile={os.path.join(self.directory, 'twistd.log')}",
            ]
        else:
            command = list(TWISTD)
        out = subprocess.run(
            [*command, "chat", *args],
            cwd=self.directory,
            env=env or child_env(),
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        return out.returncode, out.stdout, out.stderr

    def kill_daemon(self, pidfile):
        # Only if a test failed by starting a daemon after all.
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                os.kill(int(f.read()), signal.SIGKILL)

    def assert_one_line(self, result, *expected):
        """
        The run failed with exactly one line on standard error, holding
        every one of C{expected}, and no traceback anywhere.
        """
        status, out, err = result
        self.assertNotEqual(status, 0, (out, err))
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertTrue(err.startswith("chat: "), err)
        for text in expected:
            self.assertIn(text, err)
        self.assertNotIn("Traceback", out + err)

    def busy_port(self):
        """
        A loopback port that another socket listens on.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return busy.getsockname()[1]

    def test_port_in_use(self):
        """
        A port that another program listens on: one line that names the
        port and says what to do, with and without -n.
        """
        port = self.busy_port()
        for daemon in (False, True):
            result = self.twistd(
                "-p", f"tcp:{port}:interface=127.0.0.1", "-d", ":memory:", daemon=daemon
            )
            self.assert_one_line(result, f"tcp:{port}", "already in use", "--port")

    def test_database_in_missing_directory(self):
        """
        A database in a directory that does not exist: one line that names
        the file, with and without -n.
        """
        path = os.path.join(self.directory, "missing", "chat.sqlite3")
        for daemon in (False, True):
            result = self.twistd("-p", "tcp:0:interface=127.0.0.1", "-d", path, daemon=daemon)
            self.assert_one_line(result, path, "--database")

    def test_database_in_use(self):
        """
        A database another running server uses: one line that names the
        file, with and without -n, and the running server carries on.
        """
        path = os.path.join(self.directory, "chat.sqlite3")
        first = ServerProcess(self.directory, "-d", path).start()
        self.addCleanup(first.kill)
        for daemon in (False, True):
            result = self.twistd("-p", "tcp:0:interface=127.0.0.1", "-d", path, daemon=daemon)
            self.assert_one_line(result, "chat.sqlite3", "in use by another chat server")
        client = SocketClient(first.port)
        self.addCleanup(client.close)
        self.assertEqual(client.login("alice")[0]["response"], "info")

    def test_relative_database_named_as_given(self):
        """
        A relative --database is named in the line as the operator gave it
        (C{data/chat.sqlite3}, C{'chat.sqlite3'}, as README shows), not
        with a C{./} in front.
        """
        result = self.twistd("-p", "tcp:0:interface=127.0.0.1", "-d", "data/chat.sqlite3")
        self.assert_one_line(result, "cannot open database data/chat.sqlite3:")
        first = ServerProcess(self.directory, "-d", "chat.sqlite3").start()
        self.addCleanup(first.kill)
        result = self.twistd("-p", "tcp:0:interface=127.0.0.1", "-d", "chat.sqlite3")
        self.assert_one_line(result, "database 'chat.sqlite3' is in use by another chat server")

    def test_database_cannot_be_opened(self):
        """
        A database the pre-flight check cannot judge (here a directory)
        fails when the store opens it: one line that names it, in the
        foreground. (As a daemon, twistd itself reports this one.)
        """
        result = self.twistd("-p", "tcp:0:interface=127.0.0.1", "-d", self.directory)
        self.assert_one_line(result, self.directory, "--database")

    def test_tls_without_pyopenssl(self):
        """
        An ssl: port where pyOpenSSL cannot be imported: one line naming
        the package to install, with and without -n. (The child gets an
        OpenSSL package that fails to import, so this runs the same with
        pyOpenSSL installed or not.)
        """
        fake = os.path.join(self.directory, "no-openssl", "OpenSSL")
        os.makedirs(fake)
        with open(os.path.join(fake, "__init__.py"), "w") as f:
            f.write("raise ImportError('No module named OpenSSL')\n")
        env = child_env()
        env["PYTHONPATH"] = os.path.dirname(fake) + os.pathsep + env["PYTHONPATH"]
        for daemon in (False, True):
            result = self.twistd(
                "-p", "ssl:0:privateKey=key.pem", "-d", ":memory:", daemon=daemon, env=env
            )
            self.assert_one_line(result, "pip install 'twisted[tls]'")


class ListenTests(TestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.directory)

    def start(self, *args):
        server = ServerProcess(self.directory, "-d", ":memory:", *args).start()
        self.addCleanup(server.kill)
        return server

    def backlog(self, family, local):
        """
        The backlog (Send-Q in C{ss}) of the listening socket of C{family}
        (C{"-t"} or C{"-x"}) whose local address is C{local}.
        """
        if shutil.which("ss") is None:
            raise SkipTest("ss (iproute2) is not installed")
        out = subprocess.run(
            ["ss", "-lnH", family], capture_output=True, text=True, check=True
        ).stdout
        found = []
        for line in out.splitlines():
            fields = line.split()
            at = fields.index("LISTEN")
            if fields[at + 3] == local:
                found.append(int(fields[at + 2]))
        self.assertEqual(len(found), 1, out)
        return found[0]

    def test_backlog_default_is_the_kernels(self):
        """
        By default the listening socket's backlog is what the kernel allows
        (somaxconn), not Twisted's 50.
        """
        server = self.start()
        self.assertEqual(self.backlog("-t", f"127.0.0.1:{server.port}"), kernel_backlog())

    def test_backlog_option(self):
        """
        --backlog sets the backlog; a backlog= in the description wins.
        """
        server = self.start("--backlog", "77")
        self.assertEqual(self.backlog("-t", f"127.0.0.1:{server.port}"), 77)
        server = self.start("--backlog", "77", "--port", "tcp:0:interface=127.0.0.1:backlog=33")
        self.assertEqual(self.backlog("-t", f"127.0.0.1:{server.port}"), 33)

    def test_unix_socket(self):
        """
        A unix: socket (a relative path here) gets the backlog, is not
        world-writable (mode 0660), and the log names its full path, and
        its path (not UNIXAddress(None)) for a client that connects.
        """
        # Unique, as ss lists the sockets of every process by that name.
        name = os.path.basename(self.directory) + ".sock"
        server = self.start("--port", f"unix:{name}", "--backlog", "99")
        path = os.path.join(os.path.realpath(self.directory), name)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)
        self.assertIn(f"Listening on UNIXAddress({path!r})", server.log())
        # ss shows the path as the server bound it.
        self.assertEqual(self.backlog("-x", name), 99)
        client = socket.socket(socket.AF_UNIX)
        self.addCleanup(client.close)
        client.connect(path)
        # A client of a Unix socket has no address: the log names the socket.
        server.wait_for_log(rf"Connection from a client of the Unix socket {re.escape(name)}")
        self.assertNotIn("UNIXAddress(None)", server.log())

    def test_unix_socket_clients_come_and_go(self):
        """
        A client of a Unix socket that goes away is gone: the others are
        told, its name is free again, and nothing goes wrong in the server.
        (Twisted's Unix transport cannot name its socket once closed.)
        """
        path = os.path.join(self.directory, "chat.sock")
        server = self.start("--port", f"unix:{path}")
        watcher = SocketClient(unix=path)
        self.addCleanup(watcher.close)
        watcher.send("cap", "presence")
        watcher.read()
        watcher.login("watcher")
        gone = SocketClient(unix=path)
        gone.login("zed")
        gone.close()
        watcher.read_until(lambda: ("zed", "disconnected") in _presence(watcher))
        again = SocketClient(unix=path)
        self.addCleanup(again.close)
        self.assertEqual(again.login("zed")[0]["content"], "Login successful. Welcome, zed!")
        server.wait_for_log("Connection from a client of a Unix socket closed")
        self.assertNotIn("Traceback", server.log())

    def test_unix_socket_mode_option(self):
        """
        A mode= in the unix: description is kept.
        """
        path = os.path.join(self.directory, "private.sock")
        self.start("--port", f"unix:{path}:mode=600")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)


class JSONLogTests(TestCase):
    def test_every_line_is_json(self):
        """
        With --log-format json every line of the output, from start-up to
        shutdown, is one JSON object, and the "Listening on" event is one
        of them.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        server = ServerProcess(directory, "-d", ":memory:", "--log-format", "json").start()
        self.addCleanup(server.kill)
        client = SocketClient(server.port)
        self.addCleanup(client.close)
        client.login("alice")
        client.send("msg", "hello\u2028there\nnow")
        client.read()
        server.stop(signal.SIGTERM)
        # Each line is a JSON object with the event's text for collectors.
        lines = server.log().splitlines()
        events = [json.loads(line) for line in lines]
        self.assertTrue(all(isinstance(e, dict) for e in events))
        texts = [e.get("log_text", "") for e in events]
        [listening] = [m for m in map(LISTENING.search, texts) if m]
        self.assertEqual(int(listening.group(1)), server.port)
        self.assertTrue(any(t.startswith("Received SIGTERM") for t in texts), texts)
        self.assertIn("alice logged in", texts)


def _presence(client: SocketClient) -> list:
    return [(r["sender"], r["content"]) for r in client.of("presence")]
