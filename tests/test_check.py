"""
Tests of the conformance checker (C{chat.check}): against our own server as
a real C{twistd} process (every check passes), against small servers that
each break one rule (C{tests/broken_servers.py}, real processes: the right
check fails, with the right explanation, and no other), its command line,
and the pieces it is built from. Also the systemd unit in C{contrib/},
whose C{twistd} command line must be one our options accept.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from configparser import ConfigParser
from typing import Dict, List, Tuple

from twisted.trial.unittest import TestCase

import chat
from chat.check import checks, cli
from chat.check.checks import CHECKS, Check, Run, decode_item, key, run_check
from chat.check.probe import NoAnswer, Probe, cpu_wait, response_sizes, responses_per_read
from chat.server import tap
from tests.broken_servers import FLAWS
from tests.support import PATIENCE, ROOT, ServerProcess, SocketClient, child_env

#: Seconds the checker waits for each answer in these tests: ample on
#: loopback, short enough that the flaws that make it wait cost little.
TIMEOUT = 1.5


class BrokenServer:
    """
    A C{tests.broken_servers} process with one flaw, on a free loopback port.
    """

    def __init__(self, flaw: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.broken_servers", flaw],
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        line = self.process.stdout.readline().decode()  # "listening on PORT"
        if not line.startswith("listening on "):
            self.stop()
            raise AssertionError(f"broken server {flaw} did not start: {line!r}")
        self.port = int(line.split()[-1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(PATIENCE)
        self.process.stdout.close()


def not_passed(results: List[checks.Result]) -> Dict[str, Tuple[str, str]]:
    return {r.name: (r.status, r.detail) for r in results if r.status != "pass"}


class OwnServerTests(TestCase):
    """
    The checker against a real C{twistd -n chat} process.
    """

    def start(self, *args: str) -> ServerProcess:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        server = ServerProcess(directory, "--database", ":memory:", *args).start()
        self.addCleanup(server.kill)
        return server

    def test_everything_passes(self):
        """
        chat-check run as a process against our server passes every check,
        prints one line per check and a summary, exits 0, and leaves no name
        logged in.
        """
        server = self.start()
        result = subprocess.run(
            [sys.executable, "-m", "chat.check", "127.0.0.1", str(server.port)],
            cwd=ROOT,
            env=child_env(),
            capture_output=True,
            timeout=120,
        )
        out = result.stdout.decode()
        self.assertEqual(result.returncode, 0, out + result.stderr.decode())
        lines = out.splitlines()
        for check in CHECKS:
            self.assertIn(f"pass  {check.name} ", "\n".join(lines))
        self.assertEqual(lines[-1], f"{len(CHECKS)} passed, 0 failed, 0 warnings, 0 skipped: ok")
        client = SocketClient(server.port)
        self.addCleanup(client.close)
        client.login("witness")
        client.send("names")
        self.assertEqual(client.read()[0]["content"], "witness")

    def test_everything_passes_while_rooms_are_used(self):
        """
        Every check still passes while other users of the same server (with
        every extension) log in and out, join and leave rooms, chat in them
        and send each other private messages: what a standard client sees
        does not change.
        """
        server = self.start()
        stop = threading.Event()
        rounds: List[int] = []
        errors: List[BaseException] = []

        def noise() -> None:
            try:
                users = [SocketClient(server.port) for _ in range(3)]
                for i, user in enumerate(users):
                    user.send("cap", "rooms private presence")
                    user.send("login", f"noise{i}")
                    user.send("leave", "lobby")
                while not stop.is_set():
                    for i, user in enumerate(users):
                        user.send("join", f"room{len(rounds) % 4}")
                        user.send("msg", f"round {len(rounds)}")
                        user.send("pm", f"noise{(i + 1) % 3} psst")
                        user.send("leave")
                    rounds.append(len(rounds))
                    users[0].read_until(
                        lambda: (
                            sum(
                                str(r["content"]).startswith("Left room")
                                for r in users[0].responses
                            )
                            >= len(rounds)
                        )
                    )
                for user in users:
                    user.close()
            except BaseException as e:  # reported by the test
                errors.append(e)

        thread = threading.Thread(target=noise, daemon=True)
        thread.start()
        try:
            found = not_passed(cli.check_server("127.0.0.1", server.port, TIMEOUT))
        finally:
            stop.set()
            thread.join(PATIENCE)
        self.assertEqual(errors, [])
        self.assertGreater(len(rounds), 5, "the others were busy all along")
        self.assertEqual(found, {})

    def test_object_history_warns(self):
        """
        With --history-format object the only finding is the warning about
        object history items, which most clients in the field cannot read.
        """
        server = self.start("--history-format", "object")
        found = not_passed(cli.check_server("127.0.0.1", server.port, TIMEOUT))
        self.assertEqual(list(found), ["history-items"])
        status, detail = found["history-items"]
        self.assertEqual(status, "WARN")
        self.assertIn("objects, not JSON strings", detail)


#: For each flaw of tests/broken_servers.py: every check that must not pass,
#: with its status and words its detail must contain. All other checks pass.
EXPECTED: Dict[str, Dict[str, Tuple[str, str]]] = {
    "none": {},
    "numeric-timestamp": {"timestamp-string": ("FAIL", '"timestamp":17')},
    "extra-key": {"four-keys": ("FAIL", "extra status")},
    "list-names": {"field-types": ("FAIL", "info content is [")},
    "history-first": {"login": ("WARN", "not info: several clients")},
    "no-history": {
        "login": ("FAIL", "no history after login, even with a message in it"),
        "history-items": ("FAIL", "no history was sent at login"),
    },
    "history-objects": {"history-items": ("WARN", "8 of 17 clients")},
    "history-plain": {"history-items": ("FAIL", "a string that is not JSON")},
    "deep-history-item": {"history-items": ("FAIL", "nested too deeply")},
    "duplicate-names": {"taken-names": ("FAIL", "a second client logging in as")},
    "isalnum-names": {"invalid-names": ("FAIL", "a letter outside A-Z")},
    "no-echo": {"broadcast": ("FAIL", "the sender (newline-terminated) waited")},
    "broadcast-to-all": {"broadcast": ("FAIL", "a connection not logged in (bare JSON) was sent")},
    "names-before-login": {"requests-before-login": ("FAIL", "names was answered with")},
    "help-missing-names": {
        "help-before-login": ("FAIL", "does not name names"),
        "help": ("FAIL", "does not name names"),
    },
    "logout-stays-open": {"logout-closes": ("WARN", "still open")},
    "logout-keeps-name": {"logout": ("FAIL", "was still taken")},
    "silent-on-malformed": {"bad-input-malformed": ("FAIL", "malformed JSON in vain")},
    "silent-on-non-object": {"bad-input-not-object": ("FAIL", "a JSON array in vain")},
    "close-on-no-request": {"bad-input-no-request": ("FAIL", "then the server closed")},
    "close-on-unknown": {"bad-input-unknown": ("FAIL", "then the server closed the connection")},
    "strict-content": {"argless-content": ("WARN", 'names with "" got')},
    "crash-on-drop": {"drop": ("FAIL", "stopped serving the others")},
    "keep-dropped-name": {"drop": ("FAIL", "dropped without logging out, and its name")},
    # (Out of 5; a read after the checker waited for a CPU is not counted, so
    # on a busy machine fewer than most may count: then it warns.)
    "merged-login": {"legacy-one-per-read": ("FAIL|WARN", "of 5 logins one read held 2")},
    "big-history": {
        "legacy-large-response": ("FAIL", "1 of the 2 responses to a login were over 4096 bytes")
    },
    "big-help": {"legacy-large-response": ("FAIL", "the answer to help was 5")},
}


class BrokenServerTests(TestCase):
    """
    The checker against servers that each break one rule.
    """

    def check(self, flaw: str) -> BrokenServer:
        server = BrokenServer(flaw)
        self.addCleanup(server.stop)
        found = not_passed(cli.check_server("127.0.0.1", server.port, TIMEOUT))
        expected = EXPECTED[flaw]
        self.assertEqual(sorted(found), sorted(expected), found)
        for name, (status, words) in expected.items():
            # "FAIL|WARN": a timing check, which a busy machine may leave at
            # a warning (the checker does not count reads it was late for).
            self.assertIn(found[name][0], status.split("|"), found[name])
            self.assertIn(words, found[name][1])
        return server

    def test_keep_dropped_name(self):
        """
        Against a server that keeps the name of every client that closes
        without logging out, drop fails, and afterwards only the two names
        the checker dropped on purpose are left: it logged out of every
        other connection it opened.
        """
        server = self.check("keep-dropped-name")
        client = SocketClient(server.port)
        self.addCleanup(client.close)
        client.login("witness")
        client.send("names")
        names = client.read()[0]["content"].split(", ")
        self.assertEqual(len(names), 3, names)
        self.assertEqual(names[2], "witness")
        self.assertRegex(names[0], r"^chk[0-9a-f]{6}[0-9]+z$")
        self.assertRegex(names[1], r"^chk[0-9a-f]{6}[0-9]+z$")

    def test_every_flaw_has_a_test(self):
        """
        Every flaw the broken server offers is tested here, and every check
        that can fail or warn is made to by some flaw.
        """
        self.assertEqual(set(FLAWS) - {"newline-only"}, set(EXPECTED))
        found = {name for found in EXPECTED.values() for name in found}
        untested = {c.name for c in CHECKS} - found - {"framing-bare", "framing-newline", "names"}
        self.assertEqual(untested, set())

    def test_newline_only(self):
        """
        A server that only answers newline-terminated requests fails
        framing-bare, saying it waited in vain, and passes framing-newline.
        """
        server = BrokenServer("newline-only")
        self.addCleanup(server.stop)
        run = Run("127.0.0.1", server.port, TIMEOUT)
        bare, newline = CHECKS[0], CHECKS[1]
        result = run_check(run, bare)
        self.assertEqual((result.name, result.status), ("framing-bare", "FAIL"))
        self.assertIn("(bare JSON) waited 1.5 s for the answer to help in vain", result.detail)
        self.assertEqual(run_check(run, newline).status, "pass")


def _flaw_test(flaw: str):
    def test(self):
        self.check(flaw)

    test.__doc__ = (
        f"Against a server that {FLAWS[flaw]}, exactly the expected checks do not pass, "
        "each saying why."
    )
    return test


for _flaw in EXPECTED:
    if _flaw == "keep-dropped-name":
        continue  # tested above, with more
    setattr(BrokenServerTests, f"test_{_flaw.replace('-', '_')}", _flaw_test(_flaw))


class SilentServer:
    """
    A listening socket that never accepts: connections open (the kernel
    completes them) and nothing is ever answered.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


class CommandLineTests(TestCase):
    """
    chat-check's options, output, report and exit statuses.
    """

    def main(self, *argv: str) -> Tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        status = cli.main(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_cannot_connect(self):
        """
        A port nobody listens on: one line on standard error, exit status 3
        (not the 1 of a failed check); with --json, a report saying so.
        """
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        status, out, err = self.main("127.0.0.1", str(port))
        self.assertEqual(status, cli.CANNOT_CONNECT)
        self.assertEqual(
            err,
            f"chat-check: cannot connect to 127.0.0.1 port {port}: connection refused "
            "(is the server running?)\n",
        )
        status, out, _ = self.main("--json", "127.0.0.1", str(port))
        self.assertEqual(status, 3)
        self.assertIn("connection refused", json.loads(out)["error"])

    def test_version(self):
        """
        --version prints chat's version, not Twisted's.
        """
        done = subprocess.run(
            [sys.executable, "-m", "chat.check", "--version"],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=PATIENCE,
        )
        self.assertEqual((done.returncode, done.stdout), (0, f"chat {chat.__version__}\n"))

    def test_usage_errors(self):
        """
        Missing or bad arguments are one clear line and exit status 2.
        """
        for argv, words in [
            ([], "give the server's HOST and PORT"),
            (["localhost"], "give the server's HOST and PORT"),
            (["localhost", "http"], "not a port number"),
            (["localhost", "70000"], "not a port number"),
            (["localhost", "9998", "--json"], "options go before HOST PORT: --json"),
            (["--timeout", "0", "localhost", "9998"], "timeout"),
            (["--nonsense", "localhost", "9998"], "nonsense"),
        ]:
            status, out, err = self.main(*argv)
            self.assertEqual(status, cli.USAGE, argv)
            self.assertTrue(err.startswith("chat-check: "), err)
            self.assertIn(words, err.splitlines()[0])
            self.assertNotIn("Traceback", err)

    def test_list(self):
        """
        --list prints every check with its explanation, one a line.
        """
        status, out, _ = self.main("--list")
        self.assertEqual(status, 0)
        lines = out.splitlines()
        self.assertEqual(len(lines), len(CHECKS))
        for line, check in zip(lines, CHECKS):
            self.assertEqual(line.split()[0], check.name)
            self.assertTrue(line.endswith(check.explanation))

    def test_failure_and_json_report(self):
        """
        Against a broken server the exit status is 1; the text output shows
        the FAIL with what was received under it, and --json gives the same
        findings as a report with a summary.
        """
        server = BrokenServer("numeric-timestamp")
        self.addCleanup(server.stop)
        port = str(server.port)
        status, out, _ = self.main("--timeout", str(TIMEOUT), "127.0.0.1", port)
        self.assertEqual(status, cli.FAILED)
        lines = out.splitlines()
        index = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
        self.assertTrue(lines[index].startswith("FAIL  timestamp-string "))
        self.assertIn('"timestamp":17', lines[index + 1])
        self.assertTrue(lines[index + 1].startswith(" "))
        self.assertEqual(
            lines[-1], f"{len(CHECKS) - 1} passed, 1 failed, 0 warnings, 0 skipped: FAIL"
        )
        status, out, _ = self.main("--json", "--timeout", str(TIMEOUT), "127.0.0.1", port)
        self.assertEqual(status, 1)
        report = json.loads(out)
        self.assertEqual(report["exit_status"], 1)
        self.assertEqual(
            report["summary"], {"pass": len(CHECKS) - 1, "FAIL": 1, "WARN": 0, "skip": 0}
        )
        self.assertEqual([r["name"] for r in report["results"]], [c.name for c in CHECKS])
        failed = [r for r in report["results"] if r["status"] == "FAIL"]
        self.assertEqual([r["name"] for r in failed], ["timestamp-string"])

    def test_silent_server(self):
        """
        A server that accepts connections and never answers makes every
        check that needs an answer fail, saying it waited in vain, and the
        run ends: no read waits past the timeout.
        """
        server = SilentServer()
        self.addCleanup(server.close)
        results = cli.check_server("127.0.0.1", server.port, 0.2)
        self.assertEqual(len(results), len(CHECKS))
        for r in results[:-3]:
            self.assertEqual(r.status, "FAIL", r)
            self.assertIn("in vain", r.detail)
        for r in results[-3:]:
            self.assertEqual((r.status, r.detail), ("skip", "no responses were received"))


class PieceTests(TestCase):
    """
    The parts the checks are built from.
    """

    def test_responses_per_read(self):
        """
        responses_per_read counts the responses a read holds wholly or in
        part: 1 for a read that is exactly one response or a piece of one,
        2 for two responses or one and a piece of the next.
        """
        one = b'{"a":1}\n'
        big = b'{"a":"' + b"x" * 10 + b'"}\n'
        self.assertEqual(responses_per_read([one, one]), [1, 1])
        self.assertEqual(responses_per_read([one + one]), [2])
        self.assertEqual(responses_per_read([one + big[:5], big[5:]]), [2, 1])
        self.assertEqual(responses_per_read([big[:5], big[5:9], big[9:]]), [1, 1, 1])
        self.assertEqual(responses_per_read([big[:5], big[5:] + one]), [1, 2])

    def test_merged_reads(self):
        """
        A read holding several responses is blamed on the server unless the
        checker had just waited a millisecond or more for a CPU, or the
        wait is unknown.
        """
        counts = [1, 2, 3, 2, 2]
        waits = [5_000_000, 10_000, 2_000_000, None, 999_999]
        self.assertEqual(checks.merged_reads(counts, waits), ([2, 2, 2], 1))
        self.assertEqual(checks.merged_reads([1, 1], [None, None]), ([], 0))

    def test_waits_recorded_per_read(self):
        """
        The probe records, for each read, how long the checker waited for a
        CPU before it (where Linux reports it), so merged reads can be
        told from a late checker.
        """
        if cpu_wait() is None:
            self.skipTest("this system does not report CPU waits (/proc/thread-self/schedstat)")
        server = SilentServer()
        self.addCleanup(server.close)
        probe = Probe("127.0.0.1", server.port, "probe", timeout=PATIENCE).connect()
        self.addCleanup(probe.close)
        peer, _ = server.sock.accept()
        self.addCleanup(peer.close)
        for text in (b'{"a":1}', b'{"b":2}'):
            peer.sendall(text)
            probe.next("a value")
        self.assertEqual(len(probe.reads), 2)
        self.assertEqual(len(probe.waits), 2)
        for wait in probe.waits:
            self.assertIsInstance(wait, int)
            self.assertGreaterEqual(wait, 0)

    def test_response_sizes(self):
        """
        response_sizes gives each response's size in bytes, counting the
        newline after it and multi-byte characters, whatever the reads.
        """
        data = '{"a":"\u00e6"}\n{"b": 2}  {"c":3}\r\n'.encode()
        self.assertEqual(response_sizes(data), [11, 8, 9])
        self.assertEqual(response_sizes(data + b"{trunc"), [11, 8, 9])

    def test_decode_item(self):
        """
        History items: a JSON string of a message response, the response as
        an object, or something else, which is bad.
        """
        message = {"timestamp": "t", "sender": "a", "response": "message", "content": "hi"}
        self.assertEqual(decode_item(json.dumps(message)), ("string", message))
        self.assertEqual(decode_item(message), ("object", message))
        for bad in ("a: hi", json.dumps({**message, "response": "info"}), 7, {"content": "hi"}):
            self.assertEqual(decode_item(bad)[0], "bad", bad)

    def test_decode_item_too_deep(self):
        """
        A history item that is a JSON string nested deeper than Python's
        json module decodes is a bad item (no message response is nested),
        not an error of the checker.
        """
        deep = "[" * 100_000 + "]" * 100_000
        form, why = decode_item(deep)
        self.assertEqual(form, "bad")
        self.assertIn("a JSON string nested too deeply to decode", why)

    def test_key_survives_encoding(self):
        """
        The key of a message text is found in the history however the
        server encodes the items (as strings, objects, or plain text).
        """
        run = Run("127.0.0.1", 1)
        text = run.text('with "quotes" and caf\u00e9')
        message = {"timestamp": "t", "sender": "a", "response": "message", "content": text}
        k = key(text)
        for item in (json.dumps(message), message, f"a: {text}", json.dumps(message, indent=1)):
            self.assertIn(k, json.dumps([item]))
            self.assertIn(k, checks.encode_json([item]))
        self.assertNotEqual(k, key(run.text('with "quotes" and caf\u00e9')))

    def test_names_are_valid_and_fresh(self):
        """
        The names a run uses are valid usernames, differ in more than
        letter case, and two runs use different ones.
        """
        first, second = Run("127.0.0.1", 1), Run("127.0.0.1", 1)
        names = [first.name(r) for r in "abcab"] + [second.name("a")]
        for n in names:
            self.assertRegex(n, r"^[A-Za-z0-9]+$")
        self.assertEqual(len({n.lower() for n in names}), len(names))

    def test_checker_bug_is_a_failure(self):
        """
        A check that raises something unexpected is reported as a FAIL of
        that check, naming the error, and the run goes on.
        """

        def broken(run):
            return 1 / 0

        result = run_check(Run("127.0.0.1", 1), Check("broken", "Breaks.", broken))
        self.assertEqual(result.status, "FAIL")
        self.assertIn("the checker itself failed: ZeroDivisionError", result.detail)

    def test_table(self):
        """
        Every check has a unique name and a one-sentence explanation.
        """
        self.assertEqual(len({c.name for c in CHECKS}), len(CHECKS))
        for c in CHECKS:
            self.assertRegex(c.explanation, r"^[^\n]+\.$")
            self.assertLessEqual(len(c.explanation), 100, c.name)

    def test_read_deadline(self):
        """
        A probe waiting for an answer that never comes gives up at its
        timeout with NoAnswer, saying what it waited for.
        """
        server = SilentServer()
        self.addCleanup(server.close)
        probe = Probe("127.0.0.1", server.port, "probe", "bare", timeout=0.2).connect()
        self.addCleanup(probe.close)
        probe.send("help")
        error = self.assertRaises(NoAnswer, probe.next, "the answer to help")
        self.assertEqual(
            str(error), "probe (bare JSON) waited 0.2 s for the answer to help in vain"
        )
        self.assertEqual(probe.reads, [])


class ServiceUnitTests(TestCase):
    """
    contrib/chat.service, the systemd unit.
    """

    path = os.path.join(ROOT, "contrib", "chat.service")

    def unit(self) -> ConfigParser:
        parser = ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # keys are case-sensitive
        with open(self.path, encoding="utf-8") as f:
            parser.read_file(f)
        return parser

    def test_required_keys(self):
        """
        The unit runs as a dynamic user, keeps its database in its state
        directory, restarts on failure, raises the open-files limit, and
        runs twistd in the foreground without a pid file.
        """
        service = self.unit()["Service"]
        self.assertEqual(service["DynamicUser"], "yes")
        self.assertEqual(service["StateDirectory"], "chat")
        self.assertEqual(service["Restart"], "on-failure")
        self.assertGreaterEqual(int(service["LimitNOFILE"]), 65536)
        argv = shlex.split(service["ExecStart"])
        self.assertTrue(argv[0].startswith("/"), argv[0])  # systemd needs an absolute path
        self.assertEqual(os.path.basename(argv[0]), "twistd")
        before = argv[1 : argv.index("chat")]
        self.assertIn("-n", before)
        self.assertIn("--pidfile=", before)
        self.assertIn("WantedBy", self.unit()["Install"])

    def test_exec_start_accepted(self):
        """
        What ExecStart passes to twistd chat is accepted by our options,
        with the database in the state directory.
        """
        argv = shlex.split(self.unit()["Service"]["ExecStart"])
        options = tap.Options()
        options.parseOptions(argv[argv.index("chat") + 1 :])
        self.assertEqual(options["database"], "/var/lib/chat/chat.sqlite3")

    def test_systemd_analyze_verify(self):
        """
        systemd-analyze verify finds nothing wrong with the unit, where
        systemd-analyze is installed (otherwise this test is skipped, and
        says so: nothing was verified).
        """
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed: the unit was not verified by systemd")
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        # verify checks that ExecStart's program exists: point it at a stand-in.
        twistd = os.path.join(directory, "twistd")
        with open(twistd, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(twistd, 0o755)
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        argv0 = shlex.split(self.unit()["Service"]["ExecStart"])[0]
        unit = os.path.join(directory, "chat.service")
        with open(unit, "w", encoding="utf-8") as f:
            f.write(text.replace(argv0, twistd))
        result = subprocess.run(
            [analyze, "verify", unit], capture_output=True, text=True, timeout=60
        )
        output = (result.stdout + result.stderr).strip()
        self.assertEqual(result.returncode, 0, output)
        self.assertNotIn("chat.service:", output)
