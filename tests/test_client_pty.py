"""
The client in interactive mode, as a real C{python -m chat.client} process
in a pseudo-terminal: keys (and escape sequences: a paste, Page Up, a
resize) are written to the terminal, and the screen is read through the
C{pyte} terminal emulator, which answers cursor position reports as a
terminal does. A terminal that reflows its lines on resize (tmux) is used
where that matters.

Everything listens on 127.0.0.1 port 0. Waiting is for conditions (a line
on the screen, a process ending), never for a fixed time.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import termios
from typing import Any, Dict, List, Optional, Tuple

import pyte
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SkipTest, TestCase

from chat.client.connection import ChatClientProtocol
from tests.test_client import RecordingView
from tests.test_client_process import (
    CAP,
    REPO,
    _ClientProcess,
    client_env,
    start_field_server,
    start_server,
    temp_dir,
    wait_for,
)


class _MasterReader:
    """
    Reads the master side of a pseudo-terminal into a C{pyte} screen, and
    writes the screen's answers (cursor position reports) back.
    """

    def __init__(self, fd: int, width: int, height: int = 24) -> None:
        self.fd = fd
        self.raw = b""
        self.screen = pyte.Screen(width, height)
        self.screen.write_process_input = lambda text: os.write(fd, text.encode())
        self.stream = pyte.ByteStream(self.screen)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "pty"

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except OSError:
            reactor.removeReader(self)
            return
        self.raw += data
        self.stream.feed(data)

    def connectionLost(self, reason: Any) -> None:
        pass

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def rows(self) -> List[str]:
        rows = [row.rstrip() for row in self.screen.display]
        while rows and not rows[-1]:
            rows.pop()
        return rows

    def cursor(self) -> Tuple[int, int]:
        return self.screen.cursor.x, self.screen.cursor.y


class PtyTestCase(TestCase):
    """
    Runs the client in interactive mode on a pseudo-terminal.
    """

    def start(
        self,
        port: int,
        width: int = 80,
        args: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
        height: int = 24,
    ) -> Tuple[_ClientProcess, _MasterReader, int]:
        master, slave = os.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        self.saved = termios.tcgetattr(slave)
        reader = _MasterReader(master, width, height)
        reactor.addReader(reader)
        self.addCleanup(reactor.removeReader, reader)
        client = _ClientProcess(None)
        argv = [sys.executable, "-m", "chat.client"]
        if port:
            argv += ["--host", "127.0.0.1", "--port", str(port)]
        argv += args or []
        transport = reactor.spawnProcess(
            client,
            sys.executable,
            argv,
            env=env or client_env(self, TERM="xterm"),
            path=REPO,
            childFDs={0: slave, 1: slave, 2: slave},
        )

        def stop() -> defer.Deferred:
            if not client.ended.called:
                transport.signalProcess("KILL")
            return client.ended

        self.addCleanup(stop)
        return client, reader, slave

    def resize(self, client: _ClientProcess, screen: _MasterReader, slave: int, width: int) -> None:
        """
        Resize the terminal as a window manager would: the new size on the
        terminal, then SIGWINCH to the client.
        """
        height = screen.screen.lines
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        screen.screen.resize(height, width)
        client.transport.signalProcess(signal.SIGWINCH)

    def assert_restored(self, slave: int) -> None:
        """
        The terminal settings are as before the client ran, and standard
        input is blocking again.
        """
        self.assertEqual(termios.tcgetattr(slave), self.saved)
        self.assertFalse(fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK)

    async def quit_cleanly(self, client: _ClientProcess, screen: _MasterReader, slave: int) -> None:
        """
        Ctrl-D on an empty line: the client exits 0 and restores the
        terminal.
        """
        os.write(screen.fd, b"\x04")
        await client.ended
        self.assertEqual(client.code, 0)
        self.assert_restored(slave)


class InteractiveTests(PtyTestCase):
    """
    The client in interactive mode on a pseudo-terminal.
    """

    async def test_message_while_typing(self) -> None:
        """
        Type part of a line; a message from another client arrives; it shows
        above, the partial line is intact with the cursor after it; the line
        is then sent whole. Ctrl-D logs out, exits 0 and restores the
        terminal.
        """
        port, _ = await start_server(self)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"login alice\r")
        await wait_for(lambda: "Login successful" in screen.text(), "the login reply")
        os.write(screen.fd, b"msg hello wor")
        await wait_for(lambda: screen.rows()[-1] == "> msg hello wor", "the partial line")

        bob_view = RecordingView()
        bob = ChatClientProtocol(bob_view, reactor)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), bob)
        self.addCleanup(lambda: bob.transport.abortConnection())
        bob.send_line("login bob")
        bob.send_line("msg hi from bob")
        await wait_for(lambda: "<bob> hi from bob" in screen.text(), "bob's message")
        rows = screen.rows()
        self.assertTrue(rows[-2].endswith("<bob> hi from bob"), rows)
        self.assertEqual(rows[-1], "> msg hello wor")
        self.assertEqual(screen.cursor(), (len("> msg hello wor"), len(rows) - 1))

        os.write(screen.fd, b"ld\r")
        await wait_for(
            lambda: any(
                isinstance(v, dict) and v.get("sender") == "alice" for v in bob_view.values
            ),
            "alice's message at bob",
        )
        [message] = [v for v in bob_view.values if v.get("sender") == "alice"]
        self.assertEqual(message["content"], "hello world")
        await wait_for(lambda: "<alice> hello world" in screen.text(), "the echo")

        await self.quit_cleanly(client, screen, slave)

    async def test_ctrl_c(self) -> None:
        """
        Ctrl-C (a key in raw mode, not a signal) quits and restores the
        terminal; a partial line is dropped, not sent.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"help\r")
        await wait_for(lambda: "Unknown request help" in screen.text(), "the reply")
        os.write(screen.fd, b"msg unfinished\x03")
        await client.ended
        self.assertEqual(client.code, 0)
        self.assertEqual(b"".join(factory.received), CAP + b'{"request":"help","content":null}\n')
        self.assert_restored(slave)

    async def test_sigterm(self) -> None:
        """
        Killed with SIGTERM, the client still restores the terminal.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"msg partial")
        await wait_for(lambda: screen.rows()[-1] == "> msg partial", "the partial line")
        client.transport.signalProcess("TERM")
        await client.ended
        self.assert_restored(slave)

    async def test_sighup_logs_out_and_restores(self) -> None:
        """
        SIGHUP (the terminal window closed) while logged in: the client
        logs out before it closes, restores the terminal and exits 0, as
        on SIGTERM (by default the signal would end it with neither).
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"login bot\r")
        await wait_for(lambda: "Login successful" in screen.text(), "the login reply")
        client.transport.signalProcess("HUP")
        await client.ended
        self.assertEqual(client.code, 0)
        requests = [json.loads(r) for r in b"".join(factory.received).splitlines()]
        self.assertEqual(
            requests[-2:],
            [{"request": "login", "content": "bot"}, {"request": "logout", "content": None}],
        )
        self.assert_restored(slave)

    async def test_server_gone(self) -> None:
        """
        With --no-reconnect, the server closing the connection ends the
        client: the terminal is restored and one line says why; exit status
        1.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port, args=["--no-reconnect"])
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"msg partial")
        await wait_for(lambda: screen.rows()[-1] == "> msg partial", "the partial line")
        factory.connections[0].transport.loseConnection()
        await client.ended
        self.assertEqual(client.code, 1)
        self.assert_restored(slave)
        await wait_for(
            lambda: "chat: the server closed the connection" in screen.text(), "the error"
        )


class Tmux:
    """
    A private tmux server (its own socket, no config file) running one
    command in a window of a given size: a real terminal that reflows its
    lines when the window is resized, as most terminals do.
    """

    def __init__(self, test: TestCase, env: Dict[str, str]) -> None:
        if shutil.which("tmux") is None:
            raise SkipTest("tmux is not installed (apt-get install tmux)")
        self.socket = os.path.join(temp_dir(test), "tmux.sock")
        self.env = env
        test.addCleanup(self.run, "kill-server", check=False)

    def run(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            timeout=20,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {args[0]}: {done.stderr.decode()}")
        return done.stdout.decode("utf-8", "replace")

    def start(self, width: int, height: int, argv: List[str]) -> None:
        command = " ".join(subprocess.list2cmdline([a]) for a in argv)
        self.run("new-session", "-d", "-x", str(width), "-y", str(height), command)

    def rows(self, scrollback: bool = False) -> List[str]:
        """
        The rows of the window (with C{scrollback}, the terminal's
        scrollback above them), trailing blank rows dropped.
        """
        rows = self.run("capture-pane", "-p", *(["-S", "-"] if scrollback else [])).split("\n")
        rows = [row.rstrip() for row in rows]
        while rows and not rows[-1]:
            rows.pop()
        return rows


class ResizeTests(TestCase):
    """
    Resizing the window while a line is typed (issue 11, bug 3), in tmux,
    which reflows: the line drawn one row wide for 100 columns becomes
    three rows at 40; all of them must go before the line is drawn again.
    """

    async def test_shrink_and_widen(self) -> None:
        """
        Shrinking from 100 to 40 columns with an unsent 80-character line
        leaves no stale rows; widening again leaves nothing in the
        scrollback that looks like a sent message; the line is sent whole.
        """
        port, factory = await start_field_server(self, newline=True)
        tmux = Tmux(self, client_env(self, TERM="screen"))
        tmux.start(
            100,
            20,
            [sys.executable, "-m", "chat.client", "--host", "127.0.0.1", "--port", str(port)],
        )
        await wait_for(lambda: "Connected to" in "\n".join(tmux.rows()), "the greeting")
        text = "msg " + "".join(chr(ord("a") + i % 26) for i in range(76))
        tmux.run("send-keys", "-l", text)
        await wait_for(lambda: tmux.rows()[-1] == "> " + text, "the typed line")

        def typed_rows(rows: List[str]) -> List[str]:
            # Rows holding any part of the typed line.
            return [row for row in rows if "hijklmnop" in row or row.startswith("> msg")]

        tmux.run("resize-window", "-x", "40")
        await wait_for(
            lambda: tmux.rows()[-1].startswith("> ") and len(tmux.rows()[-1]) < 40, "the redraw"
        )
        await wait_for(lambda: len(typed_rows(tmux.rows())) == 1, "no stale rows at 40 columns")
        tmux.run("resize-window", "-x", "100")
        await wait_for(lambda: len(tmux.rows()[-1]) > 40, "the redraw at 100 columns")
        self.assertEqual(typed_rows(tmux.rows(scrollback=True)), [tmux.rows()[-1]])
        self.assertEqual(tmux.rows()[-1], "> " + text)
        tmux.run("send-keys", "Enter")
        await wait_for(lambda: len(b"".join(factory.received).splitlines()) == 2, "one request")
        cap, request = b"".join(factory.received).splitlines()
        self.assertEqual(cap + b"\n", CAP)
        self.assertEqual(json.loads(request)["content"], text[4:])

    async def test_shrink_with_wide_characters(self) -> None:
        """
        A line of wide characters reflows differently: one that does not
        fit at the end of a row goes to the next, so its rows are not
        those of a line of narrow characters as wide. Shrinking from 100 to
        41 columns still leaves no stale rows.
        """
        tmux, factory = await start_wide_client(self, 100, 20)
        text = "msg " + "\u4e2d\u6587" * 20
        tmux.run("send-keys", "-l", text)
        await wait_for(lambda: tmux.rows()[-1] == "> " + text, "the typed line")
        tmux.run("resize-window", "-x", "41")
        await wait_for(
            lambda: (
                tmux.rows()[-1].startswith("> \u4e2d") or tmux.rows()[-1].startswith("> \u6587")
            ),
            "the redraw",
        )
        rows = tmux.rows()
        self.assertEqual([row for row in rows if "\u4e2d" in row], [rows[-1]], rows)
        tmux.run("send-keys", "Enter")
        await wait_for(lambda: len(b"".join(factory.received).splitlines()) == 2, "one request")
        self.assertEqual(
            json.loads(b"".join(factory.received).splitlines()[1])["content"], text[4:]
        )


async def start_wide_client(test: TestCase, columns: int, rows: int) -> Tuple[Tmux, Any]:
    """
    Our client in tmux, in a locale where tmux takes CJK characters as two
    columns wide, connected to a field server; with that server's factory.
    """
    port, factory = await start_field_server(test, newline=True)
    tmux = Tmux(test, client_env(test, TERM="screen", LC_ALL="C.UTF-8"))
    tmux.start(
        columns,
        rows,
        [sys.executable, "-m", "chat.client", "--host", "127.0.0.1", "--port", str(port)],
    )
    await wait_for(lambda: "Connected to" in "\n".join(tmux.rows()), "the greeting")
    return tmux, factory


class RepaintTests(TestCase):
    """
    Ctrl-L in tmux, which (unlike pyte) wraps a wide character that does
    not fit at the end of a row onto the next row.
    """

    async def test_repaint_wide_lines(self) -> None:
        """
        Lines of wide characters take more rows than their width divided
        by the window's when the window's width is odd; Ctrl-L paints only
        the lines that fit, so nothing scrolls into the terminal's
        scrollback and the top row starts a line.
        """
        tmux, factory = await start_wide_client(self, 21, 13)
        for char in "\u4e00\u4e01\u4e02":
            tmux.run("send-keys", "-l", "msg " + char * 25)
            tmux.run("send-keys", "Enter")
            await wait_for(lambda c=char: "".join(tmux.rows()).count(c) == 50, "the message")
        scrolled = tmux.run("display-message", "-p", "#{history_size}")
        tmux.run("send-keys", "C-l")
        tmux.run("send-keys", "-l", "x")
        await wait_for(lambda: tmux.rows()[-1] == "> x", "the repaint")
        self.assertEqual(tmux.run("display-message", "-p", "#{history_size}"), scrolled)
        self.assertTrue(tmux.rows()[0].startswith(("12:00:00", "> msg")), tmux.rows())


class InteractiveFeatureTests(PtyTestCase):
    """
    What irssi and weechat users expect (issue 11), in a pseudo-terminal.
    """

    async def test_paste_is_one_message(self) -> None:
        """
        A bracketed paste of several lines after "msg " goes into the line
        (line breaks shown as ↵) and Enter sends one request with the line
        breaks in its content; a pasted line starting with logout does not
        log out.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        self.assertIn(b"\x1b[?2004h", screen.raw)
        os.write(screen.fd, b"msg ")
        pasted = b'Traceback (most recent call last):\r  File "x.py", line 1\rlogout now\r'
        os.write(screen.fd, b"\x1b[200~" + pasted + b"\x1b[201~")
        await wait_for(lambda: "\u21b5logout now" in screen.rows()[-1], "the pasted text")
        self.assertEqual(b"".join(factory.received), CAP)
        os.write(screen.fd, b"\r")
        await wait_for(lambda: b"".join(factory.received) != CAP, "the request")
        os.write(screen.fd, b"\x04")
        await client.ended
        requests = [json.loads(r) for r in b"".join(factory.received)[len(CAP) :].splitlines()]
        self.assertEqual(
            requests,
            [
                {
                    "request": "msg",
                    "content": 'Traceback (most recent call last):\n  File "x.py", line 1\n'
                    "logout now",
                }
            ],
        )
        self.assertIn(b"\x1b[?2004l", screen.raw)
        self.assert_restored(slave)

    async def test_reconnect(self) -> None:
        """
        The server stops and starts again on the same port: the client says
        so, reconnects, logs in again under the same name and carries on;
        the line being typed is kept and then sent.
        """
        port, server = await start_server(self)
        client, screen, slave = self.start(port)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"login alice\r")
        await wait_for(lambda: "Login successful" in screen.text(), "the login reply")
        os.write(screen.fd, b"msg still here")
        await wait_for(lambda: screen.rows()[-1] == "> msg still here", "the partial line")
        server.transport.signalProcess("KILL")
        await server.ended
        await wait_for(lambda: "Reconnecting in" in screen.text(), "the reconnect notice")
        self.assertEqual(screen.rows()[-1], "> msg still here")
        await start_server(self, listen=f"tcp:{port}:interface=127.0.0.1")
        await wait_for(lambda: "Logged in again as alice" in screen.text(), "the new login")
        self.assertEqual(screen.rows()[-1], "> msg still here")
        os.write(screen.fd, b"\r")
        await wait_for(lambda: "<alice> still here" in screen.text(), "the message")
        await self.quit_cleanly(client, screen, slave)

    async def test_untrusted_tls_never_connected(self) -> None:
        """
        Bug 5: with a certificate that is not trusted, "Connected" is never
        shown; the client says it cannot connect and exits 1.
        """
        from tests.test_client_process import start_tls_field_server

        port, _, _ = await start_tls_field_server(self, newline=True)
        client, screen, slave = self.start(0, args=["--connect", f"tls:localhost:{port}"])
        await client.ended
        await wait_for(lambda: "cannot connect" in screen.text(), "the error")
        self.assertEqual(client.code, 1)
        self.assertNotIn("Connected", screen.text())
        self.assert_restored(slave)

    async def test_history_kept_and_config_name(self) -> None:
        """
        With a name in the config file, the client alone connects and logs
        in; lines typed are kept in $XDG_DATA_HOME/chat/history and come
        back with Up in the next session.
        """
        port, factory = await start_field_server(self, newline=True)
        env = client_env(self, TERM="xterm")
        os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "chat"))
        with open(os.path.join(env["XDG_CONFIG_HOME"], "chat", "config.ini"), "w") as f:
            f.write(f"[client]\nconnect = tcp:host=127.0.0.1:port={port}\nname = carol\n")
        client, screen, _ = self.start(0, env=env)
        await wait_for(lambda: "Login successful" in screen.text(), "the automatic login")
        os.write(screen.fd, b"msg remembered\r")
        await wait_for(lambda: "<carol> remembered" in screen.text(), "the message")
        os.write(screen.fd, b"\x04")
        await client.ended
        history = os.path.join(env["XDG_DATA_HOME"], "chat", "history")
        self.assertEqual(os.stat(history).st_mode & 0o777, 0o600)
        client, screen, _ = self.start(0, env=env)
        await wait_for(lambda: "Login successful" in screen.text(), "the second login")
        os.write(screen.fd, b"\x1b[A")
        await wait_for(lambda: screen.rows()[-1] == "> msg remembered", "the recalled line")
        os.write(screen.fd, b"\x15\x04")
        await client.ended

    async def test_mention_bell_and_action(self) -> None:
        """
        With --bell, a message that mentions the user rings the bell;
        /me shows as an action; /quit logs out and quits.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port, args=["--bell"])
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"login alice\r")
        await wait_for(lambda: "Login successful" in screen.text(), "the login reply")
        os.write(screen.fd, b"/me waves\r")
        await wait_for(lambda: "* alice waves" in screen.text(), "the action")
        self.assertNotIn(b"\x07", screen.raw)
        bob = ChatClientProtocol(RecordingView(), reactor)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), bob)
        self.addCleanup(lambda: bob.transport.abortConnection())
        bob.send_line("login bob")
        bob.send_line("msg hi alice, welcome")
        await wait_for(lambda: "hi alice, welcome" in screen.text(), "the mention")
        self.assertIn(b"\x07", screen.raw)
        os.write(screen.fd, b"/quit\r")
        await client.ended
        self.assertEqual(client.code, 0)
        self.assertIn(b'{"request":"logout","content":null}', b"".join(factory.received))

    async def test_resize_without_reflow(self) -> None:
        """
        Bug 3 on a terminal that does not reflow (pyte, like xterm): after
        shrinking, the messages above are all still there and the input
        line is drawn once, at the bottom.
        """
        port, factory = await start_field_server(self, newline=True)
        client, screen, slave = self.start(port, width=100)
        await wait_for(lambda: "Connected to" in screen.text(), "the greeting")
        os.write(screen.fd, b"help\r")
        await wait_for(lambda: "Unknown request help" in screen.text(), "the reply")
        text = "msg " + "x" * 76
        os.write(screen.fd, text.encode())
        await wait_for(lambda: screen.rows()[-1] == "> " + text, "the typed line")
        before = screen.rows()[:-1]
        self.resize(client, screen, slave, 40)
        await wait_for(lambda: screen.rows()[-1].startswith("> x"), "the redraw")
        self.assertEqual(screen.rows()[:-1], [row[:40] for row in before])
        os.write(screen.fd, b"\x15\x04")
        await client.ended
