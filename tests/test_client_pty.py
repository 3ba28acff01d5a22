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
import time
from typing import Any, Dict, List, Optional, Tuple

import pyte
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SkipTest, TestCase
from zope.interface import implementer

from chat.client.connection import ChatClientProtocol, IChatView
from tests.test_client_process import (
    REPO,
    _ClientProcess,
    client_env,
    start_field_server,
    start_server,
    temp_dir,
    wait_for,
)


@implementer(IChatView)
class _Recorder:
    def __init__(self) -> None:
        self.values: List[Any] = []

    def received(self, value: Any) -> None:
        self.values.append(value)

    def notice(self, text: str) -> None:
        pass


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


class InteractiveTests(TestCase):
    """
    The client in interactive mode on a pseudo-terminal.
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
        argv = [sys.executable, "-m", "chat.client", "--host", "127.0.0.1", "--port", str(port)]
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
        client.transport.signalProcess("WINCH")

    def assert_restored(self, slave: int) -> None:
        """
        The terminal settings are as before the client ran, and standard
        input is blocking again.
        """
        self.assertEqual(termios.tcgetattr(slave), self.saved)
        self.assertFalse(fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK)

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

        bob_view = _Recorder()
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

        os.write(screen.fd, b"\x04")
        await client.ended
        self.assertEqual(client.code, 0)
        self.assert_restored(slave)

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
        self.assertEqual(b"".join(factory.received), b'{"request":"help","content":null}\n')
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
        await wait_for(lambda: factory.received, "the request")
        await wait_for(lambda: len(b"".join(factory.received).splitlines()) == 1, "one request")
        self.assertEqual(json.loads(b"".join(factory.received))["content"], text[4:])
