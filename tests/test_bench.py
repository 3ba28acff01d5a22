"""
Quick checks of the benchmark's own parts: the asyncio baseline speaks the
protocol, and the load generator's parsing counts what it should. No
timings: the benchmarks themselves are in bench/.
"""

import asyncio
import json
import re
from unittest import TestCase

from bench import baseline_server
from bench.loadgen import _STAMP, FILLER, IRC_MESSAGE, LOGIN_DONE, MESSAGE
from bench.scenarios import _pct


class BaselineServerTests(TestCase):
    def test_login_and_broadcast(self):
        """
        The baseline answers a login with info then history, and broadcasts
        a message to every logged-in client, sender included.
        """

        async def scenario():
            chat = baseline_server.Chat(None)
            loop = asyncio.get_running_loop()
            server = await loop.create_server(lambda: baseline_server.Client(chat), "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            (ar, aw), (br, bw) = [
                await asyncio.open_connection("127.0.0.1", port) for _ in range(2)
            ]
            for w, name in ((aw, "alice"), (bw, "bob")):
                w.write(b'{"request": "login", "content": "%s"}\n' % name.encode())
                await w.drain()
            replies = [json.loads(await ar.readline()) for _ in range(2)]
            [json.loads(await br.readline()) for _ in range(2)]
            aw.write(b'{"request": "msg", "content": "hi"}')  # bare JSON
            await aw.drain()
            got = [json.loads(await r.readline()) for r in (ar, br)]
            for w in (aw, bw):
                w.close()
            server.close()
            await server.wait_closed()
            return replies, got

        replies, got = asyncio.run(asyncio.wait_for(scenario(), 10))
        self.assertEqual([r["response"] for r in replies], ["info", "history"])
        self.assertEqual([(g["sender"], g["content"]) for g in got], [("alice", "hi")] * 2)


class LoadgenParsingTests(TestCase):
    def test_stamp_found_in_both_dialects(self):
        """
        The send time is found in a chat message response and in an IRC
        PRIVMSG line.
        """
        request = json.loads(MESSAGE % (12345, FILLER))
        line = json.dumps(
            {
                "timestamp": "t",
                "sender": "s1",
                "response": "message",
                "content": request["content"],
            },
            separators=(",", ":"),
        ).encode()
        irc = b":s1!~s1@127.0.0.1 " + IRC_MESSAGE % (678, FILLER)
        self.assertEqual(_STAMP.findall(line + b"\n" + irc), [b"12345", b"678"])

    def test_login_markers(self):
        """
        A login ends at the history response (chat) or at the end of the
        names list or MOTD (IRC); history items, JSON strings, do not match.
        """
        item = json.dumps(json.dumps({"response": "history"}, separators=(",", ":")))
        self.assertIsNone(LOGIN_DONE["ktn"].search(item.encode()))
        self.assertTrue(LOGIN_DONE["ktn"].search(b'{"response":"history","content":[]}'))
        self.assertTrue(LOGIN_DONE["irc"].search(b":x 366 s1 #bench :End"))
        self.assertTrue(LOGIN_DONE["irc-nojoin"].search(b":x 376 s1 :End of MOTD"))
        self.assertIsInstance(LOGIN_DONE["irc"], re.Pattern)

    def test_percentile(self):
        """
        Percentiles are taken from nanoseconds and given in milliseconds.
        """
        values = [i * 1_000_000 for i in range(1, 101)]
        self.assertEqual(_pct(values, 0.5), 51.0)
        self.assertEqual(_pct(values, 0.99), 100.0)


class CoreHelperTests(TestCase):
    """
    The pure parts of bench.core: how a legacy reader's reads are judged.
    """

    LINE = b'{"timestamp":"t","sender":"s","response":"message","content":"T1234567890 x"}\n'

    def history(self):
        items = [
            self.LINE[:-1].decode(),
            json.dumps({"content": "000000012 xx"}, separators=(",", ":")),
        ]
        body = {"timestamp": "t", "sender": "server", "response": "history", "content": items}
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    def test_classify_read(self):
        """
        A read is one response, more than one, a cut or broken one, or
        only white space, as json.loads per recv() would find it.
        """
        from bench.core import classify_read

        self.assertEqual(classify_read(self.LINE), "one")
        self.assertEqual(classify_read(self.LINE + self.LINE), "several")
        self.assertEqual(classify_read(self.LINE + self.LINE[:5]), "several")
        self.assertEqual(classify_read(self.LINE[:-20]), "cut")
        self.assertEqual(classify_read("\U0001f600".encode()[:2]), "cut")
        self.assertEqual(classify_read(b"\n"), "blank")

    def test_split_values(self):
        """
        Whole values are taken from a buffer with their bytes; an
        incomplete one is left for the next read.
        """
        from bench.core import split_values

        values, rest = split_values(self.LINE + b" " + self.LINE[:10])
        self.assertEqual([raw for _, raw in values], [self.LINE[:-1]])
        self.assertEqual(rest, self.LINE[:10])
        self.assertEqual(split_values(b"  \n"), ([], b""))

    def test_read_log_reassembles_cut_responses(self):
        """
        A response cut across reads is counted as cut reads, yet found whole
        once its end arrives, with the send times and message numbers it
        carries, also inside history items.
        """
        from bench.core import ReadLog

        log = ReadLog()
        history = self.history()
        log.add(self.LINE, 1)
        log.add(history[:10], 2)
        log.add(history[10:], 3)
        self.assertEqual(log.classes, {"one": 1, "several": 0, "cut": 2, "blank": 0})
        kinds = [(r["kind"], r["t"], r.get("stamps")) for r in log.responses]
        self.assertEqual(kinds, [("message", 1, [1234567890]), ("history", 3, [1234567890])])
        self.assertEqual(log.responses[1]["items"], 2)
        self.assertEqual(log.responses[1]["numbers"], [12])
        self.assertEqual(log.responses[1]["size"], len(history))
        self.assertEqual(log.first("history"), 3)
        self.assertEqual(log.first(1234567890), 1)
        self.assertIsNone(log.first(99))

    def test_late_reader_is_told_apart(self):
        """
        Two responses in one read after the reader itself waited for a CPU
        are counted apart from those the server sent together.
        """
        from bench.core import ReadLog

        log = ReadLog()
        log.add(self.LINE + self.LINE, 1, waited_ns=50_000_000)
        log.add(self.LINE + self.LINE, 2, waited_ns=0)
        self.assertEqual((log.classes["several"], log.late_several), (2, 1))
        self.assertEqual(len(log.responses), 4)

    def test_names_and_message_text(self):
        """
        Names are gathered across several info responses; a stored text
        starts with its number and has the length asked for.
        """
        from bench.core import message_text, names_in

        self.assertEqual(names_in(["a, b", "c", " d ,e"]), ["a", "b", "c", "d", "e"])
        self.assertEqual(message_text(12, 100), "000000012 " + "x" * 90)
        self.assertEqual(len(message_text(5, 40)), 40)

    def test_fill_makes_a_first_release_database(self):
        """
        fill() writes the first release's schema (user_version 0, no room
        column) with the messages asked for.
        """
        import os
        import sqlite3
        import tempfile

        from bench.core import fill

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "db")
            fill(path, 30, length=50)
            db = sqlite3.connect(path)
            self.assertEqual(db.execute("PRAGMA user_version").fetchone(), (0,))
            columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
            self.assertEqual(columns, ["id", "timestamp", "sender", "content"])
            rows = db.execute("SELECT content FROM messages ORDER BY id").fetchall()
            db.close()
        self.assertEqual(len(rows), 30)
        self.assertEqual(rows[-1][0][:10], "000000029 ")
        self.assertTrue(all(len(r[0]) == 50 for r in rows))
