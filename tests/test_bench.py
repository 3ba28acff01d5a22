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


async def _baseline():
    """
    An in-process baseline server on a free port: (chat, server, port).
    """
    chat = baseline_server.Chat(None)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: baseline_server.Client(chat), "127.0.0.1", 0)
    return chat, server, server.sockets[0].getsockname()[1]


async def _until(condition, timeout=10.0):
    """
    Wait until C{condition()} holds, or fail after C{timeout} seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class BaselineRoomsTests(TestCase):
    def test_join_moves_the_client_and_messages_stay_in_the_room(self):
        """
        join answers info then the room's history, moves the client out of
        the lobby, and a message goes to the sender's room only.
        """

        async def scenario():
            chat, server, port = await _baseline()
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            for (r, w), name in zip(conns, ("alice", "bob", "carol")):
                w.write(b'{"request": "login", "content": "%s"}\n' % name.encode())
                [await r.readline() for _ in range(2)]
            for _, w in conns[:2]:
                w.write(b'{"request": "join", "content": "Dev"}\n')
            joined = [[json.loads(await r.readline()) for _ in range(2)] for r, _ in conns[:2]]
            conns[0][1].write(b'{"request": "msg", "content": "in dev"}\n')
            conns[2][1].write(b'{"request": "msg", "content": "in lobby"}\n')
            got = [json.loads(await r.readline())["content"] for r, _ in conns]
            rooms = {room: sorted(members) for room, members in chat.rooms.items()}
            for _, w in conns:
                w.close()
            server.close()
            await server.wait_closed()
            return joined, got, rooms

        joined, got, rooms = asyncio.run(asyncio.wait_for(scenario(), 10))
        self.assertEqual(
            [(j[0]["content"], j[1]["response"], j[1]["content"]) for j in joined],
            [("Joined dev", "history", [])] * 2,
        )
        self.assertEqual(got, ["in dev", "in dev", "in lobby"])
        self.assertEqual(rooms, {"lobby": ["carol"], "dev": ["alice", "bob"]})

    def test_rooms_survive_a_restart_from_the_database(self):
        """
        With a database, each room's history is read back at start-up, also
        from a database made before the room column existed.
        """
        import os
        import sqlite3
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "db")
            old = sqlite3.connect(path)
            old.execute(
                "CREATE TABLE messages (id INTEGER PRIMARY KEY, timestamp TEXT,"
                " sender TEXT, content TEXT)"
            )
            old.execute("INSERT INTO messages VALUES (1, 't', 'alice', 'old')")
            old.commit()
            old.close()
            chat = baseline_server.Chat(path)
            chat.rooms["dev"] = {}
            chat.histories["dev"] = []
            chat.broadcast("bob", "dev", "new")
            chat.db.close()
            again = baseline_server.Chat(path)
            again.db.close()
        contents = {
            room: [json.loads(item)["content"] for item in items]
            for room, items in again.histories.items()
        }
        self.assertEqual(contents, {"lobby": ["old"], "dev": ["new"]})


class Transport:
    """
    What a load generator connection writes, recorded (an asyncio transport's
    part it uses).
    """

    def __init__(self):
        self.data = b""

    def write(self, data):
        self.data += data

    def is_closing(self):
        return False


class LoadgenRoomsTests(TestCase):
    def test_connections_join_their_rooms_and_chat_there(self):
        """
        A connection given rooms logs in, joins each, counts as logged in
        only after the last room's history, and its messages reach that
        room's members and no one else.
        """
        from bench.loadgen import Worker

        async def scenario():
            chat, server, port = await _baseline()
            worker = Worker(None, "127.0.0.1", port)
            specs = [
                ("alice", "send", "127.0.0.1", False, "a b"),
                ("bob", "recv", "127.0.0.1", False, "b"),
                ("carol", "recv", "127.0.0.1", False, "a"),
                ("dave", "recv", "127.0.0.1", False),
            ]
            result = await worker.connect(specs, concurrency=4, timeout=10)
            rooms = {room: sorted(members) for room, members in chat.rooms.items()}
            named = {c.name: c for c in worker.clients}
            alice, bob, carol, dave = (named[n] for n in (b"alice", b"bob", b"carol", b"dave"))
            alice.send(3)
            await _until(lambda: bob.lines == 3 and alice.lines == 3)
            # A message in the lobby, to show that carol and dave still read.
            dave.transport.write(b'{"request":"msg","content":"x"}\n')
            await _until(lambda: dave.lines == 1)
            await worker.command("close", {})
            server.close()
            await server.wait_closed()
            return result["ok"], rooms, [c.lines for c in (alice, bob, carol, dave)]

        ok, rooms, lines = asyncio.run(asyncio.wait_for(scenario(), 20))
        self.assertEqual(ok, 4)
        # The baseline keeps one room per client: its last join.
        self.assertEqual(rooms, {"lobby": ["dave"], "a": ["carol"], "b": ["alice", "bob"]})
        self.assertEqual(lines, [3, 3, 0, 1])

    def test_an_error_ends_the_login_at_once(self):
        """
        A join the server refuses (here an invalid room name) fails that
        connection's login at once instead of waiting for a history that
        never comes.
        """
        from bench.loadgen import Worker

        async def scenario():
            _, server, port = await _baseline()
            worker = Worker(None, "127.0.0.1", port)
            specs = [("alice", "recv", "127.0.0.1", False, "ok no_such!")]
            specs.append(("bob", "recv", "127.0.0.1", False, "fine"))
            result = await worker.connect(specs, concurrency=2, timeout=30)
            await worker.command("close", {})
            server.close()
            await server.wait_closed()
            return result

        result = asyncio.run(asyncio.wait_for(scenario(), 20))
        self.assertEqual((result["ok"], result["failed"]), (1, 1))
        self.assertLess(result["seconds"], 10)

    def test_irc_connections_join_their_channels(self):
        """
        An IRC connection sends a JOIN per room and its messages to the
        last; with no room it joins and talks in #bench.
        """
        from bench.loadgen import Client, Worker

        async def scenario():
            worker = Worker(None, "127.0.0.1", 0, "irc")
            clients = [Client(worker, b"s1", "send", False, [b"lobby", b"r7"])]
            clients.append(Client(worker, b"s2", "send", False))
            logins = []
            for client in clients:
                client.connection_made(Transport())
                logins.append(client.transport.data)
                client.transport.data = b""
                client.send(1)
            return clients, logins

        (with_rooms, plain), logins = asyncio.run(scenario())
        self.assertEqual(
            logins,
            [
                b"NICK s1\r\nUSER s1 0 * :bench\r\nJOIN #lobby\r\nJOIN #r7\r\n",
                b"NICK s2\r\nUSER s2 0 * :bench\r\nJOIN #bench\r\n",
            ],
        )
        self.assertEqual((with_rooms.markers_left, plain.markers_left), (2, 1))
        self.assertRegex(with_rooms.transport.data, rb"^PRIVMSG #r7 :T\d+ x+\r\n$")
        self.assertRegex(plain.transport.data, rb"^PRIVMSG #bench :T\d+ x+\r\n$")


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
        irc = b":s1!~s1@127.0.0.1 " + IRC_MESSAGE % (b"bench", 678, FILLER)
        self.assertEqual(_STAMP.findall(line + b"\n" + irc), [b"12345", b"678"])

    def test_legacy_counts_messages_in_history_responses(self):
        """
        A legacy (bare-JSON) connection, which gets messages that wait
        together as one history response, counts each message in it as a
        delivery, its own among them as returned (so the closed loop goes
        on), and finds their send times; a response cut between reads is
        counted once, when whole.
        """
        from bench.loadgen import Client, Worker

        def response(sender, stamp):
            return json.dumps(
                {"timestamp": "t", "sender": sender, "response": "message",
                 "content": f"T{stamp} xx"},
                separators=(",", ":"),
            )  # fmt: skip

        items = [response("s1", 11), response("s2", 22), response("s1", 33)]
        history = json.dumps(
            {"timestamp": "t", "sender": "server", "response": "history", "content": items},
            separators=(",", ":"),
        ).encode()
        single = response("s1", 44).encode()

        async def scenario():
            worker = Worker(None, "127.0.0.1", 0)
            worker.mode = "closed"
            sender = Client(worker, b"s1", "send", True)
            sender.connection_made(Transport())
            sender.logged_in.set_result(True)
            sender.transport.data = b""
            data = history + b"\n" + single + b"\n"
            sender.data_received(data[:50])
            sender.data_received(data[50:])
            return sender

        sender = asyncio.run(scenario())
        self.assertEqual(sender.lines, 4)
        self.assertEqual(sender.returned, 3)
        self.assertEqual(sender.transport.data.count(b'"request":"msg"'), 3)
        self.assertEqual(_STAMP.findall(history), [b"11", b"22", b"33"])

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
