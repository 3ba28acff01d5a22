"""
The client as a real process: in plain mode against a real C{twistd -n chat}
server process and against in-test servers that behave like the servers in
the field (PROTOCOL.md, section 5). Interactive mode in a pseudo-terminal
is in C{test_client_pty}.

Everything listens on 127.0.0.1 port 0. Waiting is for conditions (a line
on the screen, a process ending), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from io import StringIO
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.error import DNSLookupError
from twisted.trial.unittest import TestCase
from zope.interface import implementer

import chat
from chat.client import cli
from chat.client.connection import IChatView
from chat.wire import DecodeError, StreamDecoder
from tests.support import LISTENING, TWISTD, child_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: How long any one wait may take before the test fails (a bound, not a
#: timing assertion: on a sane machine every wait ends far sooner).
PATIENCE = 20.0


def temp_dir(test: TestCase) -> str:
    """
    A fresh directory outside the checkout, removed at cleanup.
    """
    path = tempfile.mkdtemp(prefix="chat-client-test-")
    test.addCleanup(shutil.rmtree, path, True)
    return path


async def wait_for(predicate: Callable[[], Any], what: str) -> None:
    """
    Poll until C{predicate()} is true; fail the test after L{PATIENCE}.
    """
    deadline = reactor.seconds() + PATIENCE
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await task.deferLater(reactor, 0.01, lambda: None)


class _ServerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.port: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = LISTENING.search(self.output.decode("utf-8", "replace"))
        if match and not self.port.called:
            self.port.callback(int(match.group(1) or 0))

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        if not self.port.called:
            self.port.errback(AssertionError(f"server did not start: {self.output!r}"))


async def start_server(
    test: TestCase, *options: str, listen: str = "tcp:0:interface=127.0.0.1"
) -> Tuple[int, _ServerProcess]:
    """
    Run C{twistd -n chat} on an ephemeral loopback port (or C{listen});
    killed at cleanup.
    """
    server = _ServerProcess()
    workdir = temp_dir(test)
    args = [
        *TWISTD,
        "chat",
        "-p",
        listen,
        "-d",
        ":memory:",
        *options,
    ]
    transport = reactor.spawnProcess(server, sys.executable, args, env=child_env(), path=workdir)

    def stop() -> defer.Deferred:
        if not server.ended.called:
            transport.signalProcess("KILL")
        return server.ended

    test.addCleanup(stop)
    port = await server.port
    return port, server


class _ClientProcess(protocol.ProcessProtocol):
    def __init__(self, stdin: Optional[bytes]) -> None:
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.code: Optional[int] = None
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.code = reason.value.exitCode
        self.ended.callback(self)

    @property
    def lines(self) -> List[str]:
        return self.out.decode("utf-8").splitlines()


def client_env(test: TestCase, **extra: str) -> Dict[str, str]:
    """
    The environment for a client process: L{child_env}, with the config and
    data directories in a fresh directory of the test's (so no test reads
    the user's config file or writes to their input history).
    """
    home = temp_dir(test)
    places = {
        "XDG_CONFIG_HOME": os.path.join(home, "config"),
        "XDG_DATA_HOME": os.path.join(home, "data"),
    }
    return child_env(**dict(places, **extra))


def spawn_client(
    test: TestCase,
    args: List[str],
    stdin: Optional[bytes],
    env: Optional[Dict[str, str]] = None,
) -> _ClientProcess:
    """
    Run C{python -m chat.client ARGS} with pipes; with C{stdin} None, its
    input stays open. Killed at cleanup if still running.
    """
    client = _ClientProcess(stdin)
    argv = [sys.executable, "-m", "chat.client", *args]
    transport = reactor.spawnProcess(
        client, sys.executable, argv, env=client_env(test, **(env or {})), path=REPO
    )

    def stop() -> defer.Deferred:
        if not client.ended.called:
            transport.signalProcess("KILL")
        return client.ended

    test.addCleanup(stop)
    return client


async def run_client(
    test: TestCase, args: List[str], stdin: bytes, env: Optional[Dict[str, str]] = None
) -> _ClientProcess:
    return await spawn_client(test, args, stdin, env).ended


def free_port() -> int:
    """
    A loopback port nobody listens on (just released).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCRIPT = b"login bot\nmsg hi\nnames\nlogout\n"

#: The request the client opens every connection with (issue 10): it asks
#: for the extensions, and a server that does not know it answers error.
CAP = b'{"request":"cap","content":"rooms private presence"}\n'


class RealServerTests(TestCase):
    """
    The client process in plain mode against the real server process.
    """

    async def test_plain_session(self) -> None:
        """
        The issue's example: log in, send, list names, ask for help, log
        out; every response is one line, and the client exits 0 when the
        server closes after logout.
        """
        port, _ = await start_server(self)
        client = await run_client(
            self, ["--port", str(port)], b"login bot\nmsg hi\nnames\nhelp\nlogout\n"
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.err, b"")
        kinds = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in client.lines]
        self.assertEqual(len(kinds), 6, kinds)
        self.assertTrue(kinds[0].startswith("[info] Login successful"))
        self.assertEqual(kinds[1], "[history] (empty)")
        self.assertEqual(kinds[2], "<bot> hi")
        self.assertEqual(kinds[3], "[info] bot")
        self.assertTrue(kinds[4].startswith("[info] Requests this server supports:\\n"))
        self.assertTrue(kinds[5].startswith("[info] "))

    async def history_seen(self, *server_options: str) -> None:
        port, _ = await start_server(self, *server_options)
        first = await run_client(
            self, ["--port", str(port)], b"login alice\nmsg one\nmsg two \xc3\xa6\nlogout\n"
        )
        self.assertEqual(first.code, 0, first.err)
        second = await run_client(self, ["--port", str(port)], b"login bob\nlogout\n")
        history = [line for line in second.lines if "[history]" in line]
        self.assertEqual(len(history), 2, second.lines)
        self.assertTrue(history[0].endswith("[history] <alice> one"))
        self.assertTrue(history[1].endswith("[history] <alice> two æ"))

    async def test_history_as_strings(self) -> None:
        """
        A later client sees the earlier messages as history, in order
        (the server's default: items as JSON strings).
        """
        await self.history_seen()

    async def test_history_as_objects(self) -> None:
        """
        The same with the server sending history items as objects.
        """
        await self.history_seen("--history-format", "object")

    async def test_json_mode(self) -> None:
        """
        --json prints each response as received, one JSON object per line.
        """
        port, _ = await start_server(self)
        client = await run_client(self, ["--json", "--port", str(port)], SCRIPT)
        self.assertEqual(client.code, 0, client.err)
        values = [json.loads(line) for line in client.lines]
        self.assertEqual(
            [v["response"] for v in values], ["info", "history", "message", "info", "info"]
        )
        self.assertEqual(values[2]["content"], "hi")
        self.assertTrue(all(isinstance(v["timestamp"], str) for v in values))

    async def test_input_ends_without_logout(self) -> None:
        """
        Without a logout the client waits --wait seconds after the input
        ends, shows what came, closes and exits 0.
        """
        port, _ = await start_server(self)
        client = await run_client(
            self,
            ["--wait", "0.3", "--connect", f"tcp:host=127.0.0.1:port={port}"],
            b"login bot\nmsg no newline at the end",
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertTrue(client.lines[-1].endswith("<bot> no newline at the end"), client.lines)

    async def test_unix_endpoint(self) -> None:
        """
        --connect takes any client endpoint description: here a Unix socket.
        """
        path = os.path.join(temp_dir(self), "chat.sock")
        await start_server(self, listen=f"unix:{path}")
        client = await run_client(self, ["--connect", f"unix:path={path}"], SCRIPT)
        self.assertEqual(client.code, 0, client.err)
        self.assertTrue(client.lines[2].endswith("<bot> hi"), client.lines)

    async def test_connection_refused(self) -> None:
        """
        Nobody listening: one clear line on stderr, exit status 1.
        """
        port = free_port()
        client = await run_client(self, ["--host", "127.0.0.1", "--port", str(port)], b"")
        self.assertEqual(client.code, 1)
        self.assertEqual(client.out, b"")
        self.assertEqual(
            client.err.decode(),
            f"chat: cannot connect to 127.0.0.1 port {port}: "
            "connection refused (is the server running?)\n",
        )

    async def test_usage_error(self) -> None:
        """
        A bad option: a short message and exit status 2.
        """
        client = await run_client(self, ["--port", "x"], b"")
        self.assertEqual(client.code, 2)
        self.assertIn(b"chat: ", client.err)
        self.assertEqual(len(client.err.splitlines()), 3)

    async def test_standard_input_closed(self) -> None:
        """
        Started with its standard input closed (C{chat <&-}), the client
        takes it as empty input: it connects, has nothing to send, and
        exits 0 with nothing on standard error (no traceback).
        """
        port, factory = await start_field_server(self)
        client = _ClientProcess(None)
        argv = [sys.executable, "-m", "chat.client", "--port", str(port), "--host", "127.0.0.1"]
        reactor.spawnProcess(
            client,
            sys.executable,
            argv,
            env=client_env(self),
            path=REPO,
            childFDs={1: "r", 2: "r"},
        )
        await client.ended
        self.assertEqual((client.code, client.err), (0, b""))

    async def test_server_goes_away(self) -> None:
        """
        The server dying mid-session: a one-line error, exit status 1.
        """
        port, server = await start_server(self)
        client = spawn_client(self, ["--port", str(port)], None)
        client_transport = client.transport
        client_transport.write(b"login bot\n")
        await wait_for(lambda: b"Login successful" in client.out, "the login reply")
        os.kill(server.transport.pid, signal.SIGKILL)
        await client.ended
        self.assertEqual(client.code, 1)
        self.assertIn(
            client.err.decode(),
            [
                "chat: the server closed the connection\n",
                "chat: connection lost: the connection broke\n",
            ],
        )


class MainTests(TestCase):
    """
    The error paths of L{chat.client.main}, in process.
    """

    async def test_host_not_found(self) -> None:
        """
        A name that does not resolve: "host not found", status 1. (A fake
        endpoint fails as the resolver would; no lookup goes out.)
        """

        class Unresolvable:
            def connect(self, factory: Any) -> defer.Deferred:
                return defer.fail(DNSLookupError("nosuchhost.example"))

        self.patch(cli, "make_endpoint", lambda reactor, options: Unresolvable())
        stderr = StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            await cli.main(reactor, "--host", "nosuchhost.example", "--plain", "--no-config")
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            stderr.getvalue(),
            "chat: cannot connect to nosuchhost.example port 9998: host not found\n",
        )


# Servers that behave like the ones in the field.


class FieldServer(protocol.Protocol):
    """
    A chat server in the style of the field, configured by C{factory.style}:

    - C{newline}: end each response with "\\n" (else bare JSON);
    - C{indent}: pretty-print responses over several lines;
    - C{history}: "strings" (each item a JSON string), "objects", "onestring"
      (the whole list as one JSON string), "split" (one history response per
      item) or "replay" (old messages sent again as message responses, with
      numeric timestamps, and no history response);
    - C{together}: send the login replies in one write;
    - C{close_on_logout}: close the connection after logout;
    - C{case}: a function applied to response words;
    - C{drip}: C{(seconds, size)}: everything goes out in pieces of C{size}
      bytes, C{seconds} apart (a slow server, a long history), the first
      after C{delay} seconds (default: C{seconds});
    - C{ignore}: request words never answered;
    - C{extra_history}: this many more old messages in the history;
    - C{taken}: a set of names refused once each ("Username taken");
    - C{login_first}: the error text for any request but login and help
      before login (as some field servers answer an unknown request then);
    - C{unknown}: the error text for an unknown request (C{{}} for the
      word).
    """

    factory: "FieldFactory"

    def connectionMade(self) -> None:
        self.decoder = StreamDecoder()
        self.username: Optional[str] = None
        self.factory.connections.append(self)
        self.outbox = b""
        self.draining: Any = None

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.connections.remove(self)
        if self.draining is not None and self.draining.active():
            self.draining.cancel()

    def send(self, data: bytes) -> None:
        drip = self.factory.style.get("drip")
        if drip is None:
            self.transport.write(data)
            return
        self.outbox += data
        if self.draining is None:
            delay = self.factory.style.get("delay", drip[0])
            self.draining = reactor.callLater(delay, self.drain)

    def drain(self) -> None:
        every, size = self.factory.style["drip"]
        chunk, self.outbox = self.outbox[:size], self.outbox[size:]
        self.transport.write(chunk)
        self.draining = reactor.callLater(every, self.drain) if self.outbox else None

    def encode(
        self, word: str, content: Any, sender: str = "server", ts: Any = "12:00:00"
    ) -> bytes:
        style = self.factory.style
        word = style.get("case", lambda w: w)(word)
        obj = {"timestamp": ts, "sender": sender, "response": word, "content": content}
        text = json.dumps(obj, indent=style.get("indent"))
        return (text + ("\n" if style.get("newline") else "")).encode("utf-8")

    def dataReceived(self, data: bytes) -> None:
        self.factory.received.append(data)
        for value in self.decoder.feed(data):
            if isinstance(value, DecodeError):
                self.send(self.encode("error", value.reason))
                continue
            self.handle(value.get("request"), value.get("content"))

    def handle(self, request: str, content: Any) -> None:
        style = self.factory.style
        old = [("alice", "first", 1700000000), ("carol", "second", 1700000060)]
        old += [("dave", f"old {i}", 1700000100 + i) for i in range(style.get("extra_history", 0))]
        if request in style.get("ignore", ()):
            return
        if style.get("login_first") and self.username is None and request not in ("login", "help"):
            self.send(self.encode("error", style["login_first"]))
        elif request == "login" and content in style.get("taken", ()):
            style["taken"].discard(content)
            self.send(self.encode("error", "Username taken"))
        elif request == "login":
            self.username = content
            replies = [self.encode("info", "Login successful")]
            history = style.get("history", "strings")
            messages = [json.loads(self.encode("message", t, s)) for s, t, _ in old]
            if history == "strings":
                replies.append(self.encode("history", [json.dumps(m) for m in messages]))
            elif history == "objects":
                replies.append(self.encode("history", messages))
            elif history == "onestring":
                replies.append(self.encode("history", json.dumps(messages)))
            elif history == "split":
                replies += [self.encode("history", [json.dumps(m)]) for m in messages]
            elif history == "replay":
                replies += [self.encode("msg", t, s, ts) for s, t, ts in old]
            if style.get("together"):
                self.send(b"".join(replies))
            else:
                for reply in replies:
                    self.send(reply)
        elif request == "msg":
            for connection in self.factory.connections:
                connection.send(self.encode("message", content, self.username or ""))
        elif request == "names":
            names = [c.username for c in self.factory.connections if c.username]
            self.send(self.encode("info", ", ".join(names)))
        elif request == "logout":
            self.send(self.encode("info", "Bye"))
            if style.get("close_on_logout"):
                self.transport.loseConnection()
        else:
            self.send(
                self.encode("error", style.get("unknown", "Unknown request {}").format(request))
            )


class FieldFactory(protocol.Factory):
    protocol = FieldServer

    def __init__(self, style: Dict[str, Any]) -> None:
        self.style = style
        self.connections: List[FieldServer] = []
        self.received: List[bytes] = []


async def start_field_server(test: TestCase, **style: Any) -> Tuple[int, FieldFactory]:
    factory = FieldFactory(style)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)

    async def stop() -> None:
        for connection in list(factory.connections):
            connection.transport.abortConnection()
        await port.stopListening()

    test.addCleanup(lambda: defer.ensureDeferred(stop()))
    return port.getHost().port, factory


class FieldServerTests(TestCase):
    """
    The client process against servers that behave like the field: each
    shows the history (in order, marked as such, or replayed), the
    messages, the names and the logout, and the client exits 0.
    """

    async def session(self, replayed: bool = False, **style: Any) -> List[str]:
        port, factory = await start_field_server(self, **style)
        client = await run_client(
            self, ["--wait", "0.3", "--port", str(port), "--host", "127.0.0.1"], SCRIPT
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.err, b"")
        text = [re.sub(r"^12:00:00 ", "", line) for line in client.lines]
        marker = "" if replayed else "[history] "
        self.assertEqual(text[0], "[info] Login successful")
        self.assertTrue(text[1].endswith(f"{marker}<alice> first"), text)
        self.assertTrue(text[2].endswith(f"{marker}<carol> second"), text)
        self.assertEqual(text[3:], ["<bot> hi", "[info] bot", "[info] Bye"])
        # What the server got: one compact request and its newline each,
        # after the cap that it answered with an error.
        requests = b"".join(factory.received).splitlines()
        self.assertEqual(
            [json.loads(r) for r in requests],
            [
                {"request": "cap", "content": "rooms private presence"},
                {"request": "login", "content": "bot"},
                {"request": "msg", "content": "hi"},
                {"request": "names", "content": None},
                {"request": "logout", "content": None},
            ],
        )
        self.assertEqual(requests[3], b'{"request":"names","content":null}')
        return text

    async def test_sigterm_logs_out_first(self) -> None:
        """
        A client stopped by SIGTERM while logged in sends logout before it
        closes (most servers in the field cannot take a client that just
        drops), and exits 0.
        """
        port, factory = await start_field_server(self)
        client = spawn_client(self, ["--port", str(port), "--host", "127.0.0.1"], None)
        client.transport.write(b"login bot\n")
        await wait_for(lambda: b"Login successful" in client.out, "the login reply")
        client.transport.signalProcess("TERM")
        await client.ended
        self.assertEqual(client.code, 0, client.err)
        requests = [json.loads(r) for r in b"".join(factory.received).splitlines()]
        self.assertEqual(requests[-1], {"request": "logout", "content": None})
        self.assertEqual(requests[-2], {"request": "login", "content": "bot"})

    async def test_bare_history_strings_close_on_logout(self) -> None:
        """
        The reference server's habits: bare JSON, history items as JSON
        strings, close after logout.
        """
        await self.session(history="strings", close_on_logout=True)

    async def test_history_objects_pretty_together(self) -> None:
        """
        History as objects, pretty-printed, the login replies in one write,
        upper-case response words, no close after logout.
        """
        await self.session(history="objects", indent=2, together=True, case=str.upper)

    async def test_history_one_string(self) -> None:
        """
        The whole history as one JSON string, newline-terminated.
        """
        await self.session(history="onestring", newline=True, close_on_logout=True)

    async def test_several_history_responses(self) -> None:
        """
        One history response per old message, sent together.
        """
        await self.session(history="split", together=True)

    async def test_replayed_messages(self) -> None:
        """
        Old messages replayed as "msg" responses with numeric timestamps.
        """
        text = await self.session(replayed=True, history="replay", close_on_logout=True)
        self.assertRegex(text[1], r"^2023-11-1[45] \d\d:\d\d:\d\d <alice> first$")


class RefusedCapTests(TestCase):
    """
    Issue 10: against servers that do not know C{cap}, however they say
    so, the client is the standard client it was: what it prints, its exit
    status and every request after the C{cap} are those of a client that
    asks for nothing (C{--no-extensions}).
    """

    async def same_as_standard(self, **style: Any) -> None:
        outcomes = []
        for extra in ([], ["--no-extensions"]):
            port, factory = await start_field_server(self, newline=True, **style)
            client = await run_client(
                self,
                ["--wait", "0.3", "--host", "127.0.0.1", "--port", str(port), *extra],
                b"login bot\nmsg hi\nnames\nrooms\nlogout\n",
            )
            outcomes.append((client, b"".join(factory.received)))
        (asked, asked_wire), (standard, standard_wire) = outcomes
        self.assertEqual(asked.code, 0, asked.err)
        self.assertEqual((asked.out, asked.err), (standard.out, standard.err))
        self.assertEqual(asked_wire, CAP + standard_wire)
        self.assertEqual(len(asked.lines), 7, asked.lines)
        self.assertTrue(
            asked.lines[-2].endswith(
                "[error] " + style.get("unknown", "Unknown request {}").format("rooms")
            ),
            asked.lines,
        )

    async def test_unknown_request(self) -> None:
        """
        Our older server's way: "Unknown request cap".
        """
        await self.same_as_standard(close_on_logout=True)

    async def test_not_logged_in(self) -> None:
        """
        A field server that answers anything before login with an error of
        its own.
        """
        await self.same_as_standard(login_first="Please log in first!")

    async def test_odd_error_text(self) -> None:
        """
        A field server whose error for an unknown request says nothing of
        requests.
        """
        await self.same_as_standard(unknown="ERROR 400: {} ??")


def make_certificate(directory: str, name: str = "localhost") -> Tuple[str, str]:
    """
    A self-signed certificate for C{name} and its key, as PEM files in
    C{directory}; return their paths.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


async def start_tls_field_server(test: TestCase, **style: Any) -> Tuple[int, str, FieldFactory]:
    """
    A field server behind TLS with a self-signed certificate for
    C{localhost}; return its port, the certificate's path and the factory.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.internet.ssl import PrivateCertificate

    cert_path, key_path = make_certificate(temp_dir(test))
    with open(cert_path, "rb") as c, open(key_path, "rb") as k:
        identity = PrivateCertificate.loadPEM(c.read() + k.read())
    factory = FieldFactory(style)
    endpoint = SSL4ServerEndpoint(reactor, 0, identity.options(), interface="127.0.0.1")
    port = await endpoint.listen(factory)

    async def stop() -> None:
        for connection in list(factory.connections):
            connection.transport.abortConnection()
        await port.stopListening()

    test.addCleanup(lambda: defer.ensureDeferred(stop()))
    return port.getHost().port, cert_path, factory


class IssueTests(TestCase):
    """
    The bugs of issue 11 that show in plain mode, each against a server
    that provokes it, and the client's own commands there.
    """

    async def test_server_full_exit_status(self) -> None:
        """
        Bug 1: a server that refuses the connection ("Server full") while
        login and logout are queued: the logout never went out, so the exit
        status is 1, with the reason on standard error, after a line for
        each line of input not sent. (The one place is taken by a logged-in
        user: one that has not logged in would be closed to make room.)
        """
        port, _ = await start_server(self, "--max-connections", "1")
        answered: defer.Deferred = defer.Deferred()

        class Holder(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                if not answered.called:
                    answered.callback(data)

        holder = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Holder())
        self.addCleanup(holder.transport.abortConnection)
        holder.transport.write(b'{"request": "login", "content": "holder"}\n')
        self.assertIn(b"Login successful", await answered)
        client = await run_client(self, ["--port", str(port)], b"login x\nlogout\n")
        self.assertEqual(client.code, 1, client.out)
        self.assertIn("[error] Server full", client.out.decode())
        self.assertEqual(
            client.err,
            b"chat: Not sent before the connection ended: login x\n"
            b"chat: Not sent before the connection ended: logout\n"
            b"chat: the server closed the connection\n",
        )

    async def test_untrusted_certificate(self) -> None:
        """
        Bugs 1 and 5: a TLS server whose certificate is not trusted: the
        handshake fails, so the client never counts as connected; exit 1
        with one line saying so, even with logout in the input.
        """
        port, _, factory = await start_tls_field_server(self, newline=True)
        client = await run_client(
            self, ["--connect", f"tls:localhost:{port}"], b"login x\nlogout\n"
        )
        self.assertEqual(client.code, 1)
        self.assertEqual(client.out, b"")
        self.assertRegex(
            client.err.decode(),
            rf"^chat: cannot connect to tls:localhost:{port}: "
            r"TLS error: .*certificate verify failed.*\n$",
        )
        self.assertEqual(factory.received, [])

    async def test_trust_roots_file_or_directory(self) -> None:
        """
        Bug 4: trustRoots= takes a PEM file (the obvious thing to try) or a
        directory of them; the session works either way.
        """
        port, cert_path, _ = await start_tls_field_server(self, newline=True, close_on_logout=True)
        for roots in (cert_path, os.path.dirname(cert_path)):
            client = await run_client(
                self,
                ["--connect", f"tls:localhost:{port}:trustRoots={roots}"],
                b"login bot\nlogout\n",
            )
            self.assertEqual(client.code, 0, client.err)
            self.assertEqual(client.lines[0], "12:00:00 [info] Login successful")
            self.assertEqual(client.lines[-1], "12:00:00 [info] Bye")

    async def test_trust_roots_errors(self) -> None:
        """
        Bug 4: a missing path, or a file with no certificate in it, is one
        clear line and exit status 2, never a traceback.
        """
        directory = temp_dir(self)
        not_pem = os.path.join(directory, "notes.txt")
        with open(not_pem, "w") as f:
            f.write("not a certificate\n")
        cases = [
            (os.path.join(directory, "missing"), "no such file or directory"),
            (not_pem, "no PEM certificate in it"),
        ]
        for path, problem in cases:
            client = await run_client(
                self, ["--connect", f"tls:localhost:1:trustRoots={path}"], b""
            )
            self.assertEqual(client.code, 2)
            first = client.err.decode().splitlines()[0]
            self.assertEqual(first, f"chat: --connect: trustRoots={path}: {problem}")
            self.assertNotIn(b"Traceback", client.err)

    async def test_port_and_version(self) -> None:
        """
        Bug 6: a port that is not a number says so plainly (status 2);
        --version prints this package's version, from the chat command
        too.
        """
        client = await run_client(self, ["-p", "notaport"], b"")
        self.assertEqual(client.code, 2)
        self.assertEqual(
            client.err.decode().splitlines()[0],
            "chat: --port: 'notaport' is not a port number (1-65535)",
        )
        version = await run_client(self, ["--version"], b"")
        self.assertEqual((version.code, version.out), (0, f"chat {chat.__version__}\n".encode()))
        script = os.path.join(os.path.dirname(sys.executable), "chat")
        self.assertTrue(os.path.exists(script), "the chat console script is not installed")
        done = subprocess.run(
            [script, "--version"], capture_output=True, env=client_env(self), timeout=PATIENCE
        )
        self.assertEqual(done.stdout, f"chat {chat.__version__}\n".encode())

    async def test_long_history_not_cut(self) -> None:
        """
        Bug 2: a server still sending a long history when the input ends
        (here in pieces 0.1 s apart for about a second, with --wait 0.3):
        everything is shown, ending with the user's own message.
        """
        port, _ = await start_field_server(self, newline=True, drip=(0.1, 4096), extra_history=400)
        client = await run_client(
            self, ["--wait", "0.3", "--port", str(port)], b"login bot\nmsg hi\n"
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(len(client.lines), 1 + 402 + 1, client.lines[-3:])
        self.assertTrue(client.lines[-1].endswith("<bot> hi"), client.lines[-3:])

    async def test_slow_answer_awaited(self) -> None:
        """
        Bug 2: a server silent for longer than --wait before it answers:
        the client waits for the answers, not for a fixed time.
        """
        port, _ = await start_field_server(self, newline=True, drip=(0.01, 1 << 20), delay=1.0)
        client = await run_client(
            self, ["--wait", "0.2", "--port", str(port)], b"login bot\nnames\n"
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.lines[-1], "12:00:00 [info] bot")

    async def test_missing_answer_fails(self) -> None:
        """
        A request the server never answers: after --timeout seconds of
        quiet the client gives up, and the exit status says so.
        """
        port, _ = await start_field_server(self, newline=True, ignore={"names"})
        client = await run_client(
            self,
            ["--wait", "0.1", "--timeout", "0.5", "--port", str(port)],
            b"login bot\nnames\n",
        )
        self.assertEqual(client.code, 1)
        self.assertEqual(
            client.err, b"chat: no answer from the server to 1 request (names) in 0.5 seconds\n"
        )

    async def test_me_and_quit(self) -> None:
        """
        /me sends a standard msg whose content is "/me ...", shown as an
        action; /quit logs out and ends the session (nothing after it is
        sent); /clear sends nothing.
        """
        port, factory = await start_field_server(self, newline=True)
        client = await run_client(
            self,
            ["--port", str(port)],
            b"login bot\n/me waves\n/clear\n/quit\nmsg never sent\n",
        )
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(
            [json.loads(r) for r in b"".join(factory.received).splitlines()],
            [
                {"request": "cap", "content": "rooms private presence"},
                {"request": "login", "content": "bot"},
                {"request": "msg", "content": "/me waves"},
                {"request": "logout", "content": None},
            ],
        )
        self.assertIn("12:00:00 * bot waves", client.lines)

    async def test_config_file(self) -> None:
        """
        The config file gives the server (so no option is needed); its name
        is not used in plain mode unless --name says so.
        """
        port, factory = await start_field_server(self, newline=True)
        env = client_env(self)
        os.makedirs(os.path.join(env["XDG_CONFIG_HOME"], "chat"))
        with open(os.path.join(env["XDG_CONFIG_HOME"], "chat", "config.ini"), "w") as f:
            f.write(f"[client]\nhost = 127.0.0.1\nport = {port}\nname = alice\n")
        client = await run_client(self, [], b"names\n", env=env)
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.lines, ["12:00:00 [info]"])
        client = await run_client(self, ["--name", "bob"], b"names\n", env=env)
        self.assertEqual(client.code, 0, client.err)
        self.assertEqual(client.lines[-1], "12:00:00 [info] bob")


class SessionTests(TestCase):
    """
    L{ChatSession} in process against a field server on loopback: the
    reconnect and the login again.
    """

    async def test_login_again_while_name_taken(self) -> None:
        """
        After a drop the session reconnects and logs in again; while the
        server still holds the name ("Username taken") it retries the login
        until it is accepted.
        """
        from chat.client import connection
        from chat.client.connection import ChatSession

        self.patch(connection, "RELOGIN_DELAY", 0.05)
        port, factory = await start_field_server(self, newline=True)
        notices: List[str] = []

        @implementer(IChatView)
        class View:
            def received(self, value: Any) -> None:
                pass

            def notice(self, text: str) -> None:
                notices.append(text)

        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        session = ChatSession(endpoint, View(), reactor, retry_policy=lambda attempt: 0.05)
        await session.start()
        self.addCleanup(lambda: session.quit() or session.ended)
        session.send_request("login", "alice")
        await wait_for(lambda: session.username == "alice", "the first login")
        factory.style["taken"] = {"alice"}
        factory.connections[0].transport.loseConnection()
        await wait_for(lambda: "Logged in again as alice." in notices, "the login again")
        self.assertEqual(
            notices,
            [
                "The server closed the connection.",
                "Reconnecting in 0.1 s (Ctrl-D quits).",
                "Connected again.",
                "Logged in again as alice.",
            ],
        )
        logins = [json.loads(r) for r in b"".join(factory.received).splitlines() if b'"login"' in r]
        self.assertEqual(len(logins), 3)
        self.assertEqual(session.username, "alice")
