"""
What the client shows: any server's responses turned into safe text.

- L{interpret}: one decoded response, from any server in the field, to a list
  of L{Entry} values (history unpacked, letter case and C{msg} forgiven).
- L{neutralise} and L{Renderer}: an L{Entry} to text that is safe to show;
  nothing received from the network can control the terminal. A message
  whose content starts with C{/me } is shown as an action (C{* alice
  waves}); entries that match a rule in L{HIGHLIGHT_RULES} (a mention of
  the user's own name, a private message to the user) stand out. With the
  extensions of L{chat.client.rooms}: a line of a room is labelled with it
  (C{#dev}) while the user is in more than one room, a private message is
  labelled C{[private]} (C{[private to bob]} for the user's own), and a
  C{presence} response is one dim line (C{--> alice joined dev}).
- L{format_json}: a value as one line of JSON, for C{--json}.
- L{names_from}: the usernames in an answer to C{names}.

Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional, Sequence, Tuple

from chat.client.rooms import RoomState, presence_line, room_name
from chat.wire import DecodeError, encode_json

#: The requests of the standard, for completion at the start of a line.
STANDARD_REQUESTS = ("login", "logout", "msg", "names", "help")

#: A message whose content starts with this is an action: C{/me waves}
#: from alice is shown as C{* alice waves}. Every other client shows the
#: text as it is, which reads well enough.
ACTION_PREFIX = "/me "

#: A username as the standard allows it.
USERNAME = re.compile(r"[A-Za-z0-9]+")
# Names separated by commas, semicolons or spaces. Each separator is
# required, so that no run of letters can be split two ways (which would
# make a long reply take exponential time to match); and the white space at
# the end cannot be split two ways either (around an optional full stop:
# a long run of it before something else took quadratic time).
_NAMES_ANSWER = re.compile(r"\s*[A-Za-z0-9]+(?:(?:\s*[,;]\s*|\s+)[A-Za-z0-9]+)*\s*(?:[.]\s*)?")


# Output: from a decoded value to entries


@dataclass(frozen=True)
class Entry:
    """
    One thing to show, taken from a response.

    @ivar kind: C{"message"}, C{"info"}, C{"error"}, C{"history"} (an empty
        history), C{"malformed"} (data that is not JSON), C{"odd"} (JSON
        that is not an object) or any other response word as received.
    @ivar timestamp: the raw C{timestamp} value, or None.
    @ivar sender: the raw C{sender} value, or None.
    @ivar content: the raw C{content} value.
    @ivar history: whether the entry comes from a C{history} response.
    @ivar room: the room of a message or history (the C{room} key of the
        C{rooms} extension, in lower case), or None.
    @ivar to: the recipient of a private message (the C{to} key of the
        C{private} extension), or None.
    @ivar peer: the other user of a private history (its C{with} key, on
        the history and each of its items), or None.
    """

    kind: str
    timestamp: Any = None
    sender: Any = None
    content: Any = None
    history: bool = False
    room: Optional[str] = None
    to: Optional[str] = None
    peer: Optional[str] = None


def field(obj: dict, key: str) -> Any:
    """
    The value of C{key} in a response, the key matched in any letter case
    (C{{"Response": "Info"}} is still a response); None if missing.
    """
    if key in obj:
        return obj[key]
    for name, value in obj.items():
        if isinstance(name, str) and name.strip().lower() == key:
            return value
    return None


def response_word(value: Any) -> Optional[str]:
    """
    The response word of a decoded value, lower-cased, C{msg} read as
    C{message}; None if the value has none.
    """
    if not isinstance(value, dict):
        return None
    word = field(value, "response")
    if not isinstance(word, str):
        return None
    word = word.strip().lower()
    return "message" if word == "msg" else word


def _decode_nested(value: Any, depth: int = 0) -> Any:
    # History items are often JSON strings, sometimes encoded twice.
    while isinstance(value, str) and depth < 4:
        stripped = value.strip()
        if not stripped or stripped[0] not in '{["':
            return value
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return value
        depth += 1
    return value


def _history_items(content: Any) -> List[Any]:
    content = _decode_nested(content)
    if content is None or content == "":
        return []
    if isinstance(content, list):
        items: List[Any] = []
        for item in content:
            item = _decode_nested(item)
            if isinstance(item, list):
                items.extend(_decode_nested(i) for i in item)
            else:
                items.append(item)
        return items
    return [content]


def interpret(value: Any) -> List[Entry]:
    """
    What to show for one value from the server's stream.

    Accepts every response variant of PROTOCOL.md section 5: any letter case
    in keys and response words, C{msg} for C{message}, history as a list of
    objects, a list of JSON strings or one JSON string. Anything else is
    shown, never dropped.
    """
    if isinstance(value, DecodeError):
        # The decoder's reasons are worded for the server's side.
        reason = value.reason.replace("Request", "Response").replace("request", "response")
        return [Entry("malformed", content=reason)]
    if not isinstance(value, dict):
        return [Entry("odd", content=value)]
    word = response_word(value)
    timestamp = field(value, "timestamp")
    sender = field(value, "sender")
    content = field(value, "content")
    if word is None:
        # No response word: treat an object with content as a message.
        if content is None:
            return [Entry("odd", content=value)]
        word = "message"
    room = room_name(field(value, "room"))
    if word != "history":
        return [Entry(word, timestamp, sender, content, room=room, to=_user(field(value, "to")))]
    peer = _user(field(value, "with"))
    items = _history_items(content)
    if not items:
        return [Entry("history", timestamp, sender, None, history=True, room=room, peer=peer)]
    entries = []
    for item in items:
        if isinstance(item, dict):
            for entry in interpret(item):
                if entry.kind == "history":
                    # A history inside a history: nothing left to show.
                    continue
                entries.append(
                    replace(
                        entry,
                        history=True,
                        room=entry.room or (None if entry.to or peer else room),
                        peer=peer,
                    )
                )
        else:
            entries.append(Entry("message", None, None, item, history=True, room=room))
    return entries


def _user(value: Any) -> Optional[str]:
    # A username from an extension key (to, with), or None.
    return value if isinstance(value, str) and USERNAME.fullmatch(value) else None


# Output: from entries to safe text

# C0 and C1 controls, DEL, lone surrogates, and the characters that reorder
# or break lines on display (bidi controls, line and paragraph separators).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: "re.Match[str]") -> str:
    char = match.group()
    code = ord(char)
    if char == "\t":
        return " "
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def neutralise(text: str) -> str:
    """
    Make text from the network safe to write to a terminal.

    Every control character, escape sequence introducer, bidi control and
    line separator is replaced by a visible stand-in (C{ESC} becomes C{^[},
    C{CR} C{^M}, U+009B C{<U+009B>}), so a peer cannot clear the screen, move
    the cursor, set the title or fake a line. A tab becomes a space.
    """
    return _UNSAFE.sub(_escape, text)


def to_text(value: Any) -> str:
    """
    Any JSON value as text: strings as they are, lists of strings joined
    with commas, anything else as compact JSON.
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return encode_json(value)


def _parse_time(value: Any) -> Optional[datetime]:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.fromisoformat(text)
                # Local time may be past the last (or first) day there is.
                return parsed.astimezone() if parsed.tzinfo is not None else parsed
            except (OverflowError, ValueError):
                return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
            if seconds > 1e11:
                # Milliseconds since the epoch (JavaScript's Date.now()).
                seconds /= 1000.0
            return datetime.fromtimestamp(seconds, timezone.utc).astimezone()
        except (OverflowError, OSError, ValueError):
            return None
    return None


def action_text(entry: Entry) -> Optional[str]:
    """
    The action in a message (C{"waves"} for C{"/me waves"}), or None when
    the entry is not an action.
    """
    content = entry.content
    if entry.kind == "message" and isinstance(content, str) and content.startswith(ACTION_PREFIX):
        return content[len(ACTION_PREFIX) :]
    return None


#: A highlight rule: given an entry and the user's own name, whether the
#: entry should stand out.
HighlightRule = Callable[[Entry, str], bool]


def mentions_me(entry: Entry, me: str) -> bool:
    """
    A message from someone else, not from the history, whose text names
    the user as a word (in any letter case): C{alice:}, C{@alice}, C{Alice?}.
    """
    if entry.kind != "message" or entry.history or not isinstance(entry.content, str):
        return False
    if isinstance(entry.sender, str) and entry.sender.lower() == me.lower():
        return False
    pattern = r"(?<![A-Za-z0-9])" + re.escape(me) + r"(?![A-Za-z0-9])"
    return re.search(pattern, entry.content, re.IGNORECASE) is not None


def private_to_me(entry: Entry, me: str) -> bool:
    """
    A private message to the user (the C{private} extension's C{to} key
    names them), not from the history.
    """
    return (
        entry.kind == "message"
        and not entry.history
        and isinstance(entry.to, str)
        and entry.to.lower() == me.lower()
        and not (isinstance(entry.sender, str) and entry.sender.lower() == me.lower())
    )


#: The rules that make an entry stand out.
HIGHLIGHT_RULES: List[HighlightRule] = [mentions_me, private_to_me]


# Colours: Select Graphic Rendition parameters.
_DIM = "2"
_BOLD = "1"
_RED = "31"
_GREEN = "32"
_YELLOW = "33"
_BLUE = "34"
_MAGENTA = "35"
_CYAN = "36"
_REVERSE = "7"
_SENDER_COLOURS = ("32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96")


class Renderer:
    """
    Turns L{Entry} values into lines of text for a person.

    @param colour: add ANSI colours.
    @param multiline: keep line breaks inside a text (continuation lines are
        indented so they cannot pass for another response); without it every
        entry is exactly one line and a line break shows as C{\\n}.
    @param today: returns the current date; times from another day show their
        date too.
    @param me: returns the user's own name once logged in (else None), for
        L{highlighted}.
    @param rules: the highlight rules (L{HIGHLIGHT_RULES} by default).
    @param rooms: the session's rooms and extensions: which lines show
        their room, and whether presence lines are shown (all are when
        None).
    """

    def __init__(
        self,
        colour: bool = False,
        multiline: bool = False,
        today: Optional[Callable[[], Any]] = None,
        me: Optional[Callable[[], Optional[str]]] = None,
        rules: Optional[Sequence[HighlightRule]] = None,
        rooms: Optional[RoomState] = None,
    ) -> None:
        self.colour = colour
        self.rooms = rooms
        self.multiline = multiline
        self._today = today or (lambda: datetime.now().date())
        self._me = me or (lambda: None)
        self.rules = tuple(HIGHLIGHT_RULES if rules is None else rules)

    def highlighted(self, entry: Entry) -> bool:
        """
        Whether C{entry} should stand out (and ring the bell with C{--bell}):
        whether any highlight rule matches it.
        """
        me = self._me()
        return bool(me) and any(rule(entry, me) for rule in self.rules)

    def _paint(self, text: str, *sgr: str) -> str:
        if not self.colour or not sgr or not text:
            return text
        return f"\x1b[{';'.join(sgr)}m{text}\x1b[0m"

    def time(self, value: Any) -> str:
        """
        A timestamp for display: C{HH:MM:SS} in local time (with the date if
        not today), or the server's text made safe when it is not a time.
        """
        if value is None or value == "":
            return ""
        parsed = _parse_time(value)
        if parsed is None:
            text = neutralise(to_text(value))
            return text if len(text) <= 32 else text[:31] + "…"
        if parsed.date() == self._today():
            return parsed.strftime("%H:%M:%S")
        return parsed.strftime("%Y-%m-%d %H:%M:%S")

    def sender(self, value: Any) -> str:
        text = neutralise(to_text(value)).strip()
        if not text:
            return "<?>"
        colour = _SENDER_COLOURS[sum(text.encode("utf-8")) % len(_SENDER_COLOURS)]
        return self._paint(f"<{text}>", _BOLD, colour)

    def _body(self, value: Any) -> List[str]:
        text = to_text(value).replace("\r\n", "\n")
        lines = text.split("\n")
        if not self.multiline:
            return ["\\n".join(neutralise(line) for line in lines)]
        return [neutralise(line) for line in lines]

    def _labels(self, entry: Entry) -> List[str]:
        # The room of a line (while the user is in more than one room) and
        # whether it is private.
        labels = []
        if entry.kind not in ("message", "history"):
            # Replies name their room in their text; the prompt names the
            # current one.
            return labels
        if entry.room is not None and (self.rooms is None or self.rooms.labelled(entry.room)):
            labels.append(self._paint(f"#{entry.room}", _BOLD, _BLUE))
        sender = entry.sender.lower() if isinstance(entry.sender, str) else None
        if entry.to is not None:
            me = (self._me() or "").lower()
            text = "[private]" if me == entry.to.lower() != sender else f"[private to {entry.to}]"
            labels.append(self._paint(text, _BOLD, _GREEN))
        elif entry.peer is not None and entry.kind == "history":
            labels.append(self._paint(f"[private with {entry.peer}]", _BOLD, _GREEN))
        elif entry.peer is not None:
            # An item of a private history without its own recipient.
            text = "[private]" if sender == entry.peer.lower() else f"[private to {entry.peer}]"
            labels.append(self._paint(text, _BOLD, _GREEN))
        return labels

    def shown(self, entry: Entry) -> bool:
        """
        Whether C{entry} is shown at all: presence lines only while the
        user wants them.
        """
        return entry.kind != "presence" or self.rooms is None or self.rooms.presence_shown

    def lines(self, entry: Entry) -> List[str]:
        """
        The lines that show C{entry} (none for a presence line the user
        turned off).
        """
        if not self.shown(entry):
            return []
        parts = []
        stamp = self.time(entry.timestamp)
        if stamp:
            parts.append(self._paint(stamp, _DIM))
        if entry.kind == "presence" and not entry.history:
            text = neutralise(presence_line(to_text(entry.sender), entry.content, entry.room))
            return [" ".join(parts + [self._paint(text, _DIM)])]
        if entry.history:
            parts.append(self._paint("[history]", _MAGENTA))
        parts.extend(self._labels(entry))
        kind = entry.kind
        body = self._body(entry.content)
        action = action_text(entry)
        if action is not None:
            name = neutralise(to_text(entry.sender)).strip() or "?"
            parts.append(self._paint(f"* {name}", _BOLD))
            body = self._body(action)
        elif kind == "message":
            parts.append(self.sender(entry.sender))
        elif kind == "error":
            parts.append(self._paint("[error]", _BOLD, _RED))
        elif kind == "info":
            parts.append(self._paint("[info]", _CYAN))
        elif kind == "history":
            body = [self._paint("(empty)", _DIM)]
        elif kind == "malformed":
            parts.append(self._paint("[client]", _YELLOW))
            body = [f"ignored data from the server that is not JSON ({entry.content})"]
        elif kind == "odd":
            parts.append(self._paint("[client]", _YELLOW))
            body = [
                "unexpected data from the server: "
                + neutralise(json.dumps(entry.content, ensure_ascii=False))
            ]
        else:
            parts.append(self._paint(f"[{neutralise(kind)}]", _YELLOW))
            if entry.sender not in (None, ""):
                parts.append(self.sender(entry.sender))
        if self.highlighted(entry):
            # Reverse video on the body: stands out whatever the colours.
            body = [self._paint(line, _REVERSE) for line in body]
        head = " ".join(parts)
        first = f"{head} {body[0]}" if body[0] else head
        # Continuation lines start with a bar under the head, so that a text
        # with line breaks cannot pass for other responses.
        return [first] + [self._paint("  | ", _DIM) + line for line in body[1:]]

    def render(self, value: Any) -> Tuple[List[str], bool]:
        """
        The lines that show one decoded value, and whether any of its
        entries is L{highlighted}.
        """
        lines: List[str] = []
        marked = False
        for entry in interpret(value):
            lines.extend(self.lines(entry))
            marked = marked or (self.shown(entry) and self.highlighted(entry))
        return lines, marked

    def notice(self, text: str) -> str:
        """
        A line from the client itself (not from the server).
        """
        return self._paint("***", _YELLOW) + " " + text


# In JSON text written ASCII only: a string, or a number JSON cannot write.
_NON_FINITE = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")|-?Infinity|NaN')


def format_json(value: Any) -> str:
    """
    One decoded value as one line of JSON for C{--json}: compact, and ASCII
    only, so control characters are escaped and the line is safe to print.
    NaN and the infinities (what a server's C{NaN} or C{1e400} decode to),
    which JSON cannot write, are written as C{null}.
    """
    try:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
        return _NON_FINITE.sub(lambda match: match.group(1) or "null", text)


def names_from(content: Any) -> List[str]:
    """
    The usernames in the answer to a C{names} request: a list, or a string
    of names separated by commas or spaces.
    """
    if isinstance(content, list):
        return [n for n in content if isinstance(n, str) and USERNAME.fullmatch(n)]
    if isinstance(content, str) and _NAMES_ANSWER.fullmatch(content):
        return USERNAME.findall(content)
    return []
