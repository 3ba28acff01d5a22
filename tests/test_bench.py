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
