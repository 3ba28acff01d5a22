"""
The rules the conformance checker tests, one function per rule, and the
table L{CHECKS} that names each one and says in a sentence what it checks.

The rules are those of the standard (PROTOCOL.md, sections 2 to 5): what is
strict there fails a check (C{FAIL}); what the standard leaves open but
clients in the field depend on gives a warning (C{WARN}). Every check opens
its own connections (L{Run.probe}) and the runner closes them after it,
logging out first, so that one check's failure does not spoil the next and
no name is left taken. The last three checks look at every response the
run received.

A check function returns an L{Outcome} (L{passed}, L{warned}, L{skipped})
or raises L{Failure}; a L{chat.check.probe.ProbeError} (no answer, closed,
cannot connect) is a failure too, with its message as what was received.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from chat.check.probe import (
    MISSING,
    Closed,
    NoAnswer,
    Probe,
    ProbeError,
    kind,
    response_sizes,
    responses_per_read,
    show,
)
from chat.wire import DecodeError, encode_json

#: The requests of the standard, which C{help} must name.
REQUESTS = ("login", "logout", "msg", "names", "help")

#: The four response words of the standard.
RESPONSES = ("error", "info", "message", "history")

#: The keys of every response.
KEYS = ("timestamp", "sender", "response", "content")

#: What clients in the field read at once.
LEGACY_LIMIT = 4096

#: How long each filler message is when the history must be made long.
FILLER_LENGTH = 900

#: Seconds between two tries while waiting for the server to free a name.
RETRY_INTERVAL = 0.1


class Failure(Exception):
    """
    A check failed; the message says what was received, in one sentence.
    """


@dataclass(frozen=True)
class Outcome:
    """
    How a check ended: C{status} is C{"pass"}, C{"WARN"} or C{"skip"}
    (failures are raised as L{Failure}), C{detail} what was seen.
    """

    status: str
    detail: str = ""


def passed(detail: str = "") -> Outcome:
    return Outcome("pass", detail)


def warned(detail: str) -> Outcome:
    return Outcome("WARN", detail)


def skipped(detail: str) -> Outcome:
    return Outcome("skip", detail)


@dataclass
class Run:
    """
    What the checks share: the server's address, the timeout, a random
    token for names and texts, every response received, and what earlier
    checks learned about the server.

    @ivar posted: the texts of the messages this run has seen broadcast.
    @ivar echoes: the server sends a message to its sender too.
    @ivar no_history: the server sent no history at a login even with
        messages in it (so logins do not wait for one).
    @ivar long_history: whether the history was made longer than 4096 bytes
        (None: not tried yet), and why not.
    """

    host: str
    port: int
    timeout: float = 5.0
    fill_history: bool = True
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    transcript: List[Any] = field(default_factory=list)
    probes: List[Probe] = field(default_factory=list)
    no_history: bool = False
    echoes: bool = True
    posted: List[str] = field(default_factory=list)
    long_history: Optional[Tuple[bool, str]] = None
    _count: int = 0

    def name(self, role: str = "") -> str:
        """
        A fresh username unlikely to be in use: C{chk}, this run's random
        token, a counter and C{role}, letters and digits only.
        """
        self._count += 1
        return f"chk{self.token}{self._count}{role}"

    def text(self, what: str) -> str:
        """
        A message text that says it comes from this checker and this run,
        with a unique key (see L{key}).
        """
        self._count += 1
        return f"chat-check {self.token}-{self._count}: {what}"

    def post(self, p: Probe, what: str) -> str:
        """
        Send a message from C{p} and wait until it comes back to C{p} (or,
        from a server that does not send it back, until the server has
        handled it).

        @return: its text.
        @raise Failure: if the server refuses it.
        """
        text = self.text(what)
        p.send("msg", text)
        if self.echoes:
            got = p.until(
                lambda r: kind(r) == "error" or (is_message(r) and r.get("content") == text),
                "the message back",
            )
        else:
            # The server does not send the sender its own message: the answer
            # to a request sent after it says it has been handled.
            p.send("help")
            got = p.until(lambda r: kind(r) in ("error", "info"), "the answer to help after a msg")
        if kind(got[-1]) == "error":
            refusal = show(got[-1])
            raise Failure(f"the server refused a message of {len(text)} characters: {refusal}")
        self.posted.append(text)
        return text

    def probe(self, framing: str = "newline", label: Optional[str] = None) -> Probe:
        """
        Open a connection, closed (with a logout if logged in) after the
        current check.
        """
        self._count += 1
        p = Probe(
            self.host,
            self.port,
            label or f"connection {self._count}",
            framing,
            self.timeout,
            self.transcript,
        )
        p.connect()
        self.probes.append(p)
        return p

    def leave_all(self) -> None:
        """
        Close every connection the current check opened, logging out first.
        """
        probes, self.probes = self.probes, []
        for p in probes:
            p.leave()

    def login(self, p: Probe, name: str) -> List[Any]:
        """
        Log C{p} in as C{name} and read the answers to it: an C{info}, then
        the history (unless the server is known to send none), in as many
        C{history} responses as it takes to hold the last message this run
        posted.

        @return: the responses to the login.
        @raise Failure: if the login is refused.
        """
        p.send("login", name)
        got: List[Any] = []
        last = key(self.posted[-1]) if self.posted else None

        def done(r: Any) -> bool:
            got.append(r)
            if kind(r) == "error":
                return True
            if not any(kind(g) == "info" for g in got):
                return False
            if self.no_history:
                return True
            histories = [g["content"] for g in got if kind(g) == "history"]
            return bool(histories) and (last is None or last in encode_json(histories))

        p.until(done, f"the answer to login as {name} (info, then history)")
        if kind(got[-1]) == "error":
            raise Failure(f"login as {name} on {p} was refused: {show(got[-1])}")
        p.username = name
        return got

    def login_when_free(self, name: str, framing: str = "bare") -> Optional[Any]:
        """
        Try to log in as C{name} on a new connection until the server lets
        it (it may take a moment to notice a client has gone), at most the
        timeout.

        @return: None when logged in, or the last refusal.
        """
        p = self.probe(framing)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.login(p, name)
                return None
            except Failure:
                refusal = p.responses[-1]
            if time.monotonic() >= deadline:
                return refusal
            time.sleep(RETRY_INTERVAL)

    def ensure_long_history(self) -> Tuple[bool, str]:
        """
        Make the history longer than 4096 bytes, with filler messages if it
        is not already, once per run.

        @return: whether it is, and how (or why not).
        """
        if self.long_history is None:
            self.long_history = self._fill_history()
        return self.long_history

    def _fill_history(self) -> Tuple[bool, str]:
        p = self.probe("newline")
        size = history_size(self.login(p, self.name("f")))
        if size > LEGACY_LIMIT:
            return True, f"the history was already {size} bytes"
        if not self.fill_history:
            return False, f"the history is {size} bytes and --no-filler was given"
        count = 0
        while size + count * (FILLER_LENGTH + 100) <= LEGACY_LIMIT + 500:
            count += 1
            what = f"filler {count}, to make the history longer than 4096 bytes "
            try:
                self.post(p, what + "." * (FILLER_LENGTH - 40 - len(what)))
            except Failure as e:
                return False, str(e)
        return True, f"{count} filler messages of about {FILLER_LENGTH} characters were sent"


# Reading responses


def key(text: str) -> str:
    """
    The part of a text made by L{Run.text} that no other text has, in
    characters that no JSON encoding escapes, so that it can be found in a
    history whatever form its items take.
    """
    return text.split(":", 1)[0].split()[-1] + ":"


def is_message(value: Any) -> bool:
    return kind(value) == "message"


def history_items(responses: List[Any]) -> List[Any]:
    """
    Every item of every C{history} response among C{responses}.
    """
    items: List[Any] = []
    for r in responses:
        if kind(r) == "history" and isinstance(r.get("content"), list):
            items.extend(r["content"])
    return items


def decode_item(item: Any) -> Tuple[str, Any]:
    """
    What a history item is: C{("string", message)} for a JSON-encoded
    message response, C{("object", message)} for the response itself, or
    C{("bad", why)}.
    """
    if isinstance(item, str):
        try:
            value = json.loads(item)
        except ValueError:
            return "bad", f"a string that is not JSON: {show(item)}"
        except RecursionError:
            # Valid JSON perhaps, but no message response (four strings) nests.
            return "bad", f"a JSON string nested too deeply to decode: {show(item)}"
        problem = response_problem(value)
        if problem or value["response"] != "message":
            return "bad", f"a JSON string that is not a message response: {show(item)}"
        return "string", value
    if isinstance(item, dict):
        if response_problem(item) or item["response"] != "message":
            return "bad", f"an object that is not a message response: {show(item)}"
        return "object", item
    return "bad", f"neither a string nor an object: {show(item)}"


def history_messages(responses: List[Any]) -> List[Tuple[Any, Any]]:
    """
    (sender, content) of every history item among C{responses} that is a
    message response, in either form.
    """
    out = []
    for item in history_items(responses):
        form, value = decode_item(item)
        if form != "bad":
            out.append((value.get("sender"), value.get("content")))
    return out


def history_size(responses: List[Any]) -> int:
    """
    Roughly how many bytes the history items among C{responses} take.
    """
    return sum(len(encode_json(item).encode("utf-8")) + 1 for item in history_items(responses))


def response_problem(value: Any) -> Optional[str]:
    """
    What is wrong with the shape of a response (its keys and their types),
    or None.
    """
    if not isinstance(value, dict):
        return "not a JSON object"
    keys = set(value)
    if keys != set(KEYS):
        missing = [k for k in KEYS if k not in keys]
        extra = sorted(keys - set(KEYS))
        parts = []
        if missing:
            parts.append("no " + ", ".join(missing))
        if extra:
            parts.append("extra " + ", ".join(extra))
        return "keys: " + "; ".join(parts)
    return types_problem(value)


def types_problem(value: Dict[str, Any]) -> Optional[str]:
    """
    What is wrong with the types of a response's fields, or None (the
    timestamp is L{check_timestamp_string}'s business).
    """
    word = value.get("response")
    if word not in RESPONSES:
        return f"response is {show(word)}, not one of {', '.join(RESPONSES)}"
    if not isinstance(value.get("sender"), str):
        return f"sender is {show(value.get('sender'))}, not a string"
    content = value.get("content")
    if word == "history":
        if not isinstance(content, list):
            return f"history content is {show(content)}, not a list"
    elif not isinstance(content, str):
        return f"{word} content is {show(content)}, not a string"
    return None


def names_in(content: Any) -> List[str]:
    """
    The words of a C{names} answer, whether a string or a list.
    """
    if isinstance(content, list):
        return [str(n) for n in content]
    if isinstance(content, str):
        return re.findall(r"[A-Za-z0-9]+", content)
    return []


def help_problem(answer: Any) -> Optional[str]:
    """
    What is wrong with an answer to C{help}, or None.
    """
    if kind(answer) != "info":
        return f"help was answered with {show(answer)}"
    text = answer.get("content")
    if not isinstance(text, str):
        return f"the help text is {show(text)}, not a string"
    words = set(re.findall(r"[a-z]+", text.lower()))
    missing = [w for w in REQUESTS if w not in words]
    if missing:
        return f"the help text does not name {', '.join(missing)}: {show(text)}"
    return None


# The checks, in the order they run


def check_framing_bare(run: Run) -> Outcome:
    p = run.probe("bare")
    answer = p.answer("help")
    return passed(f"help was answered with {kind(answer) or show(answer)}")


def check_framing_newline(run: Run) -> Outcome:
    p = run.probe("newline")
    answer = p.answer("help")
    return passed(f"help was answered with {kind(answer) or show(answer)}")


def check_help_before_login(run: Run) -> Outcome:
    problem = help_problem(run.probe("bare").answer("help"))
    if problem:
        raise Failure(problem)
    return passed()


def check_login(run: Run) -> Outcome:
    p = run.probe("bare")
    name = run.name("a")
    p.send("login", name)
    first = p.next(f"the answer to login as {name}")
    if kind(first) == "error":
        raise Failure(f"login as {name} was refused: {show(first)}")
    p.username = name
    got = [first]
    warnings = []
    try:
        if kind(first) == "history":
            got += p.until(lambda r: kind(r) == "info", "info after the history")
        else:
            got += p.until(lambda r: kind(r) == "history", "history after login")
    except NoAnswer:
        if kind(first) == "history":
            raise
        # Perhaps the history was empty: put a message in it and try again.
        run.post(p, "a message so that the history is not empty")
        second = run.probe("bare")
        try:
            run.login(second, run.name("a"))
        except NoAnswer as e:
            run.no_history = True
            raise Failure(f"no history after login, even with a message in it: {e}") from None
        warnings.append(
            "no history response at a login when the history was (probably) empty: "
            "a client that waits for the history hangs"
        )
        got = second.responses
    if kind(got[0]) != "info":
        warnings.append(
            f"the first answer to login was {show(got[0])}, not info: several clients "
            "read exactly one reply after login and need it to be info"
        )
    info = next((r for r in got if kind(r) == "info"), None)
    if info is None:
        raise Failure(f"no info answer to login: {'; '.join(show(r) for r in got)}")
    text = str(info.get("content")).lower()
    if "success" not in text and "logged in" not in text:
        warnings.append(
            f"the login info {show(info.get('content'))} says neither 'success' nor "
            "'logged in', which one client in the field looks for"
        )
    if warnings:
        return warned("; ".join(warnings))
    return passed("info, then history")


def check_requests_before_login(run: Run) -> Outcome:
    observer = run.probe("newline")
    run.login(observer, run.name("o"))
    p = run.probe("bare")
    marker = run.text("sent before login, must not be shown")
    problems = []
    for word, content in (("names", None), ("msg", marker), ("logout", None)):
        try:
            answer = p.answer(word, content)
        except Closed:
            problems.append(f"{word}: the server closed the connection instead of an error")
            break
        if kind(answer) != "error":
            problems.append(f"{word} was answered with {show(answer)}")
    observer.send("names")
    seen = observer.until(lambda r: kind(r) in ("info", "error"), "the answer to names")
    if any(is_message(r) and r.get("content") == marker for r in seen):
        problems.append("the msg sent before login was shown to a logged-in client")
    if problems:
        raise Failure("; ".join(problems))
    return passed("names, msg and logout each got an error")


def bad_usernames(run: Run) -> List[Tuple[Any, str]]:
    """
    Usernames the standard forbids, with why, made unlikely to be in use.
    """
    base = f"chk{run.token}"
    return [
        ("", "empty"),
        (None, "null content"),
        (f"{base} x", "a space"),
        (f"{base}-x", "a hyphen"),
        (f"{base}_x", "an underscore"),
        (f"{base}\u00e6", "a letter outside A-Z (Python's isalnum() accepts it)"),
        (f"{base}\u0663", "a digit outside 0-9 (Python's isdigit() accepts it)"),
    ]


def check_invalid_names(run: Run) -> Outcome:
    accepted = []
    for name, why in bad_usernames(run):
        p = run.probe("bare")
        answer = p.answer("login", name)
        if kind(answer) != "error":
            if kind(answer) == "info":
                p.username = str(name)
            accepted.append(f"{show(name)} ({why}) got {show(answer)}")
    if accepted:
        raise Failure("invalid usernames not refused with an error: " + "; ".join(accepted))
    return passed(f"{len(bad_usernames(run))} invalid usernames each got an error")


def check_taken_names(run: Run) -> Outcome:
    first = run.probe("newline")
    name = run.name("t")
    run.login(first, name)
    second = run.probe("bare")
    answer = second.answer("login", name)
    if kind(answer) != "error":
        if kind(answer) == "info":
            second.username = name
        raise Failure(f"a second client logging in as {name}, in use, got {show(answer)}")
    variant = name.upper()
    third = run.probe("bare")
    try:
        run.login(third, variant)
    except Failure:
        return passed(f"names are compared ignoring case: {variant} was refused while {name}")
    return passed(f"names are compared case-sensitively: {variant} could log in beside {name}")


def check_broadcast(run: Run) -> Outcome:
    clients = [
        run.probe("newline", "the sender"),
        run.probe("bare", "a second client"),
        run.probe("newline", "a third client"),
    ]
    for c in clients:
        run.login(c, run.name("b"))
    outsider = run.probe("bare", "a connection not logged in")
    outsider.answer("help")  # the server has taken it on before the message
    sender = clients[0]
    text = run.text('broadcast "quoted" caf\u00e9 \u2713')
    sender.send("msg", text)
    problems = []
    for c in clients:
        try:
            got = c.until(lambda r: is_message(r) and r.get("content") == text, "the message")
        except ProbeError as e:
            problems.append(str(e))
            if c is sender:
                run.echoes = False
            continue
        if got[-1].get("sender") != sender.username:
            problems.append(
                f"{c} got the message with sender {show(got[-1].get('sender'))}, "
                f"not {sender.username}"
            )
    outsider.send("help")
    seen = outsider.until(lambda r: kind(r) in ("info", "error"), "the answer to help")
    if any(is_message(r) for r in seen):
        problems.append(f"{outsider} was sent a message: {show(seen[0])}")
    if problems:
        raise Failure("; ".join(problems))
    run.posted.append(text)
    return passed("3 logged-in clients (bare and newline-terminated) got it, the sender included")


def check_history_items(run: Run) -> Outcome:
    sender = run.probe("newline")
    run.login(sender, run.name("h"))
    text = run.post(sender, "history probe")
    newcomer = run.probe("newline")
    got = run.login(newcomer, run.name("h"))
    if not any(kind(r) == "history" for r in got):
        raise Failure("no history was sent at login")
    forms: Dict[str, int] = {}
    bad = []
    for item in history_items(got):
        form, value = decode_item(item)
        forms[form] = forms.get(form, 0) + 1
        if form == "bad":
            bad.append(value)
    if bad:
        raise Failure(f"{len(bad)} history items are not message responses; the first is {bad[0]}")
    found = [s for s, t in history_messages(got) if t == text]
    if not found or found[-1] != sender.username:
        raise Failure(f"the history item of {sender.username}'s message has sender {show(found)}")
    if forms.get("object"):
        return warned(
            f"{forms['object']} of {sum(forms.values())} items are objects, not JSON strings: "
            "8 of 17 clients in the field crash on object items"
        )
    return passed(f"{sum(forms.values())} items, each a JSON-encoded message response")


def check_names(run: Run) -> Outcome:
    a, b = run.probe("newline"), run.probe("bare")
    run.login(a, run.name("n"))
    run.login(b, run.name("n"))
    answer = a.answer("names")
    if kind(answer) != "info":
        raise Failure(f"names was answered with {show(answer)}")
    listed = names_in(answer.get("content"))
    missing = [n for n in (a.username, b.username) if n not in listed]
    if missing:
        raise Failure(f"the names answer lacks {', '.join(missing)}: {show(answer)}")
    return passed(f"{show(answer.get('content'), 60)}")


def check_help(run: Run) -> Outcome:
    p = run.probe("bare")
    run.login(p, run.name("x"))
    problem = help_problem(p.answer("help"))
    if problem:
        raise Failure(problem)
    return passed()


def _log_out(run: Run, wait: bool) -> Tuple[str, Any, bool]:
    """
    Log a new client in and out: its name, the answer to C{logout} (None
    if the connection closed without one) and whether the connection closed
    (if C{wait}, within the timeout).
    """
    p = run.probe("bare")
    name = run.name("q")
    run.login(p, name)
    try:
        answer = p.answer("logout")
    except Closed:
        answer = None
    if kind(answer) != "error":
        p.username = None
    return name, answer, p.wait_closed() if wait else p.closed


def check_logout(run: Run) -> Outcome:
    name, answer, _ = _log_out(run, wait=False)
    if kind(answer) == "error":
        raise Failure(f"logout was answered with {show(answer)}")
    refusal = run.login_when_free(name)
    if refusal is not None:
        raise Failure(f"{name} was still taken {run.timeout:g} s after logout: {show(refusal)}")
    how = f"answered with {show(answer, 80)}" if answer is not None else "closed without an answer"
    return passed(f"{how}; the name was free again")


def check_logout_closes(run: Run) -> Outcome:
    _, _, closed = _log_out(run, wait=True)
    if not closed:
        return warned(
            f"the connection was still open {run.timeout:g} s after logout: 11 of 17 servers "
            "close it, and clients that wait for the close hang"
        )
    return passed()


def _bad_input(run: Run, data: bytes, what: str, may_close: bool) -> Outcome:
    """
    Send C{data} from a logged-in client: it must get an C{error}, and the
    connection must go on serving (a warning if C{may_close} and it closes).
    """
    p = run.probe("newline")
    run.login(p, run.name("e"))
    p.send_raw(data)
    try:
        answer = p.reply(f"the answer to {what}")
    except Closed:
        raise Failure(f"the server closed the connection without an error for {what}") from None
    if kind(answer) != "error":
        raise Failure(f"{what} was answered with {show(answer)}")
    try:
        p.send("help")
        p.until(lambda r: kind(r) == "info", "the answer to help after it")
    except Closed:
        if may_close:
            p.username = None
            return warned(
                f"{what} got an error, then the server closed the connection: "
                "clients that send it lose their session"
            )
        raise Failure(
            f"{what} got an error, then the server closed the connection instead of "
            "serving the client on"
        ) from None
    return passed(show(answer.get("content"), 80))


def check_bad_malformed(run: Run) -> Outcome:
    return _bad_input(run, b'{"request" "help", "content": null}', "malformed JSON", True)


def check_bad_not_object(run: Run) -> Outcome:
    return _bad_input(run, b'["help", null]', "a JSON array", False)


def check_bad_no_request(run: Run) -> Outcome:
    return _bad_input(run, b'{"content": "help"}', 'an object without "request"', False)


def check_bad_unknown(run: Run) -> Outcome:
    data = json.dumps({"request": f"chkunknown{run.token}", "content": None}).encode()
    return _bad_input(run, data, "an unknown request", False)


def check_argless_content(run: Run) -> Outcome:
    p = run.probe("bare")
    run.login(p, run.name("c"))
    refused = []
    for content, label in (("", '""'), ("None", '"None"'), (MISSING, "no content key")):
        answer = p.answer("names", content)
        if kind(answer) != "info":
            refused.append(f"names with {label} got {show(answer)}")
    if refused:
        return warned(
            "; ".join(refused) + ": 9 of 17 clients in the field send one of these for "
            "requests without an argument"
        )
    return passed()


def _legacy_login(run: Run) -> Probe:
    """
    Log a new bare-JSON client in, reading as clients in the field do.
    """
    p = run.probe("bare")
    run.login(p, run.name("l"))
    return p


def check_legacy_large(run: Run) -> Outcome:
    ok, how = run.ensure_long_history()
    if not ok:
        return skipped(f"the history could not be made longer than 4096 bytes: {how}")
    p = _legacy_login(run)
    sizes = response_sizes(b"".join(p.reads))
    large = [size for size in sizes if size > LEGACY_LIMIT]
    if large:
        raise Failure(
            f"{len(large)} of the {len(sizes)} responses to a login were over 4096 bytes, the "
            f"largest {max(large)} (history {history_size(p.responses)} bytes): a client that "
            "does one json.loads per recv(4096) crashes; send a long history as several "
            "history responses"
        )
    # The longest text a server sends unasked for: its help.
    p.answer("help")
    help_sizes = response_sizes(b"".join(p.reads))[len(sizes) :]
    if help_sizes and max(help_sizes) > LEGACY_LIMIT:
        raise Failure(
            f"the answer to help was {max(help_sizes)} bytes: a client that does one "
            "json.loads per recv(4096) crashes; send a long text as several info responses"
        )
    return passed(
        f"{len(sizes)} responses to login, the largest {max(sizes)} bytes ({how}); "
        f"help {max(help_sizes, default=0)} bytes"
    )


#: Bare-JSON logins legacy-one-per-read makes. Two responses sent even a
#: few milliseconds apart can land in one read if the checker itself is not
#: scheduled in time; such reads are not counted where the system tells
#: (L{chat.check.probe.cpu_wait}), and elsewhere one login in five with such
#: a read is put down to the machine. A server that writes two responses at
#: once merges them nearly every time.
LEGACY_ATTEMPTS = 5

#: A read after the checker waited this long (ns) for a CPU may hold two
#: responses the server sent apart.
BUSY_WAIT = 1_000_000


def merged_reads(counts: List[int], waits: List[Optional[int]]) -> Tuple[List[int], int]:
    """
    The reads that held more than one response, given how many responses
    each read held and how long the checker waited for a CPU before it:
    the response counts of those the server is to blame for, and how many
    are not counted because the checker was late.
    """
    blamed, excused = [], 0
    for count, wait in zip(counts, waits):
        if count > 1:
            if wait is not None and wait >= BUSY_WAIT:
                excused += 1
            else:
                blamed.append(count)
    return blamed, excused


def check_legacy_one_per_read(run: Run) -> Outcome:
    run.ensure_long_history()
    merged = []
    excused = 0
    for _ in range(LEGACY_ATTEMPTS):
        p = _legacy_login(run)
        blamed, late = merged_reads(responses_per_read(p.reads), p.waits)
        excused += late
        if blamed:
            merged.append(f"one read held {max(blamed)} responses")
        p.leave()
    found = f"in {len(merged)} of {LEGACY_ATTEMPTS} logins {merged[0]}" if merged else ""
    if excused:
        found += (
            f" ({excused} read(s) that held several responses came after the checker waited "
            f"{BUSY_WAIT // 1_000_000} ms or more for a CPU and are not counted)"
        )
    if len(merged) > LEGACY_ATTEMPTS // 2:
        raise Failure(
            f"{found}: a client that does one json.loads per recv(4096) crashes; write one "
            "response at a time, spaced in time"
        )
    if len(merged) > 1:
        return warned(
            f"{found}: the server may send responses too close together, or this machine was busy"
        )
    if merged:
        return passed(f"{found}, which a busy machine can cause; the other reads held one each")
    return passed(
        f"{LEGACY_ATTEMPTS} bare-JSON logins: every read held exactly one response{found}"
    )


def check_drop(run: Run) -> Outcome:
    sender = run.probe("newline", "a client that stayed")
    receiver = run.probe("bare", "another client that stayed")
    run.login(sender, run.name("d"))
    run.login(receiver, run.name("d"))
    droppers = [run.probe("bare"), run.probe("bare")]
    names = []
    for p in droppers:
        run.login(p, run.name("z"))
        names.append(p.username)
    droppers[0].close()  # a clean close (FIN) without logout
    droppers[1].abort()  # a reset (RST), as when a client crashes
    for n in (1, 2):
        # Twice: a write to a dropped client fails only the second time.
        try:
            text = run.post(sender, f"after two clients dropped ({n})")
            receiver.until(
                lambda r, text=text: is_message(r) and r.get("content") == text, "the message"
            )
        except ProbeError as e:
            raise Failure(
                f"the server stopped serving the others after a client dropped: {e}"
            ) from None
    for name in names:
        refusal = run.login_when_free(name)
        if refusal is not None:
            raise Failure(
                f"{name} dropped without logging out, and its name was still taken "
                f"{run.timeout:g} s later: {show(refusal)}"
            )
    return passed("2 clients dropped (close and reset): the others were served, names freed")


def check_four_keys(run: Run) -> Outcome:
    bad = []
    for r in run.transcript:
        if isinstance(r, DecodeError) or not isinstance(r, dict):
            bad.append(f"{show(r)} (not a JSON object)")
            continue
        keys = set(r)
        if keys != set(KEYS):
            problem = response_problem(r)
            bad.append(f"{show(r)} ({problem})")
    return _over_transcript(run, bad, "responses")


def check_field_types(run: Run) -> Outcome:
    bad = []
    for r in run.transcript:
        if isinstance(r, dict):
            problem = types_problem(r)
            if problem:
                bad.append(f"{show(r)} ({problem})")
    return _over_transcript(run, bad, "responses")


def check_timestamp_string(run: Run) -> Outcome:
    bad = []
    for r in run.transcript:
        if isinstance(r, dict) and "timestamp" in r and not isinstance(r["timestamp"], str):
            bad.append(show(r))
    return _over_transcript(run, bad, "timestamps")


def _over_transcript(run: Run, bad: List[str], what: str) -> Outcome:
    total = len(run.transcript)
    if not total:
        return skipped("no responses were received")
    if bad:
        raise Failure(f"{len(bad)} of {total} responses are wrong; the first: {bad[0]}")
    return passed(f"all {total} {what} received")


@dataclass(frozen=True)
class Check:
    """
    One row of the table: the check's name, a sentence saying what it
    checks, and the function that does it.
    """

    name: str
    explanation: str
    run: Callable[[Run], Outcome]


CHECKS: List[Check] = [
    Check(
        "framing-bare",
        "A request sent as bare JSON with nothing after it, as all clients in the field "
        "send, is answered.",
        check_framing_bare,
    ),
    Check(
        "framing-newline",
        "A request sent as JSON followed by a newline is answered.",
        check_framing_newline,
    ),
    Check(
        "help-before-login",
        "help is allowed before login and answered with an info naming every request.",
        check_help_before_login,
    ),
    Check(
        "login",
        "A valid login is answered with info (saying 'success' or 'logged in'), then history.",
        check_login,
    ),
    Check(
        "requests-before-login",
        "Before login, names, msg and logout each get an error, and the msg is not shown.",
        check_requests_before_login,
    ),
    Check(
        "invalid-names",
        "A username that is empty or has anything but A-Z, a-z and 0-9 gets an error.",
        check_invalid_names,
    ),
    Check(
        "taken-names",
        "A username in use by another logged-in client gets an error.",
        check_taken_names,
    ),
    Check(
        "broadcast",
        "A msg reaches every logged-in client, the sender too, as a message from its sender, "
        "and no one else.",
        check_broadcast,
    ),
    Check(
        "history-items",
        "History items are message responses, as JSON strings (objects crash most clients).",
        check_history_items,
    ),
    Check(
        "names",
        "names is answered with an info listing the users logged in.",
        check_names,
    ),
    Check(
        "help",
        "help after login is answered with an info naming every request.",
        check_help,
    ),
    Check(
        "logout",
        "logout is not answered with an error, and the name is free again after it.",
        check_logout,
    ),
    Check(
        "logout-closes",
        "The server closes the connection after logout, as most servers do and clients expect.",
        check_logout_closes,
    ),
    Check(
        "bad-input-malformed",
        "Malformed JSON gets an error (the connection should go on).",
        check_bad_malformed,
    ),
    Check(
        "bad-input-not-object",
        "A JSON value that is not an object gets an error, and the connection goes on.",
        check_bad_not_object,
    ),
    Check(
        "bad-input-no-request",
        'An object without a "request" key gets an error, and the connection goes on.',
        check_bad_no_request,
    ),
    Check(
        "bad-input-unknown",
        "An unknown request gets an error, and the connection goes on.",
        check_bad_unknown,
    ),
    Check(
        "argless-content",
        'Requests without an argument are answered with content "", "None" or none, as '
        "clients send them.",
        check_argless_content,
    ),
    Check(
        "legacy-large-response",
        "No response to a bare-JSON client (login, help) is over 4096 bytes, what clients read.",
        check_legacy_large,
    ),
    Check(
        "legacy-one-per-read",
        "A bare-JSON client gets one response per read, as clients that json.loads each "
        "recv(4096) need.",
        check_legacy_one_per_read,
    ),
    Check(
        "drop",
        "A client that drops without logout leaves the server serving the others and its "
        "name free.",
        check_drop,
    ),
    Check(
        "four-keys",
        "Every response is a JSON object with exactly timestamp, sender, response and content.",
        check_four_keys,
    ),
    Check(
        "field-types",
        "Each sender is a string, response one of the four words, and content a string "
        "(a list for history).",
        check_field_types,
    ),
    Check(
        "timestamp-string",
        "Every timestamp is a JSON string, never a number.",
        check_timestamp_string,
    ),
]


@dataclass(frozen=True)
class Result:
    """
    How one check went.
    """

    name: str
    status: str
    explanation: str
    detail: str


def run_check(run: Run, check: Check) -> Result:
    """
    Run one check, turning whatever goes wrong into a C{FAIL} result, and
    close the connections it opened.
    """
    try:
        outcome = check.run(run)
    except Failure as e:
        outcome = Outcome("FAIL", str(e))
    except ProbeError as e:
        outcome = Outcome("FAIL", str(e))
    except Exception as e:  # a bug in the checker must not hide the other checks
        outcome = Outcome("FAIL", f"the checker itself failed: {type(e).__name__}: {e}")
    finally:
        run.leave_all()
    return Result(check.name, outcome.status, check.explanation, outcome.detail)
