"""
The extensions a server granted, and the rooms the user is in.

The client asks for the extensions of issue 10 with a C{cap} request (the
wire design is in the server's C{docs/protocol.md}): C{rooms} (a C{room} key
on messages and histories; C{room}, C{rooms} and C{joined} keys on the
replies to C{join}, C{leave}, C{rooms} and C{names}), C{private} (a C{to}
key on private messages, C{with} on a private history) and C{presence} (the
response word C{presence}). A server that does not know C{cap} answers with
an C{error}, or something else that is not a grant; then nothing here
changes what the client shows or sends.

L{RoomState} follows the session from the replies the server sends with
those keys (never from the text of a reply): the current room, the rooms
joined (in join order), and the rooms the last C{rooms} reply listed. The
front ends read it to label lines with their room (only while the user is
in more than one), to name the current room in the prompt, to complete
room names, and to switch rooms. Nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Tuple

#: The extensions the client understands, in the order it asks for them.
EXTENSIONS = ("rooms", "private", "presence")

#: The room every client is put in at login.
LOBBY = "lobby"

#: A room name as the server allows it (shown in lower case).
ROOM_NAME = re.compile(r"[A-Za-z0-9]{1,32}")

#: What a C{presence} response's content says, as the words of a line:
#: whether it is an arrival, and the reason shown in brackets, if any.
PRESENCE_EVENTS: Dict[str, Tuple[bool, Optional[str]]] = {
    "joined": (True, None),
    "logged in": (True, "logged in"),
    "left": (False, None),
    "logged out": (False, "logged out"),
    "disconnected": (False, "disconnected"),
    "dropped": (False, "dropped"),
}


def room_name(value: Any) -> Optional[str]:
    """
    A room name from the wire or from what the user typed, in lower case;
    None when C{value} is not one.
    """
    if isinstance(value, str) and ROOM_NAME.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def granted(value: Any) -> FrozenSet[str]:
    """
    The extensions granted by a response to C{cap}: the names in its
    C{caps} list when it is an C{info} that has one; none for anything
    else (an C{error} from a server that does not know C{cap}, whatever
    its text).
    """
    if not isinstance(value, dict) or value.get("response") != "info":
        return frozenset()
    caps = value.get("caps")
    if not isinstance(caps, list):
        return frozenset()
    return frozenset(c for c in caps if isinstance(c, str) and c in EXTENSIONS)


def presence_line(sender: Any, content: Any, room: Any) -> str:
    """
    The words of a presence line: C{--> alice joined dev}, C{<-- bob left
    lobby (disconnected)}. An event the client does not know is shown as
    it came.
    """
    who = sender if isinstance(sender, str) and sender.strip() else "?"
    where = room_name(room) or (room if isinstance(room, str) else "?")
    event = content.strip().lower() if isinstance(content, str) else ""
    if event not in PRESENCE_EVENTS:
        return f"--- {who} {content if isinstance(content, str) else event} {where}".rstrip()
    arrival, reason = PRESENCE_EVENTS[event]
    text = f"--> {who} joined {where}" if arrival else f"<-- {who} left {where}"
    return f"{text} ({reason})" if reason else text


class RoomState:
    """
    What the client knows of the extensions and rooms of its session.

    @ivar extensions: the extensions the server granted on this connection
        (none until it answered C{cap}, and none from a server that does
        not know it).
    @ivar wanted: the extensions to ask for (L{EXTENSIONS} less those the
        user turned off); empty to send no C{cap} at all.
    @ivar current: the current room (None when in no room or not known).
    @ivar joined: the rooms the user is in, in join order.
    @ivar listed: the rooms and their member counts from the last C{rooms}
        reply.
    """

    def __init__(self, wanted: Iterable[str] = EXTENSIONS) -> None:
        self.wanted: Tuple[str, ...] = tuple(e for e in EXTENSIONS if e in set(wanted))
        self.extensions: FrozenSet[str] = frozenset()
        self.current: Optional[str] = None
        self.joined: List[str] = []
        self.listed: Dict[str, int] = {}
        self.logged_in = False

    @property
    def rooms_on(self) -> bool:
        """
        Whether the server sends rooms (the C{rooms} extension is granted).
        """
        return "rooms" in self.extensions

    @property
    def presence_shown(self) -> bool:
        """
        Whether presence lines are shown (the user has not turned them off).
        """
        return "presence" in self.wanted

    def set_presence(self, on: bool) -> None:
        """
        Turn presence lines on or off; L{wanted} says what to ask for next.
        """
        wanted = set(self.wanted) | {"presence"} if on else set(self.wanted) - {"presence"}
        self.wanted = tuple(e for e in EXTENSIONS if e in wanted)

    def cap_content(self) -> str:
        """
        The content of the C{cap} request: the wanted names separated by
        spaces (a string, the type every server in the field expects).
        """
        return " ".join(self.wanted)

    def set_extensions(self, extensions: FrozenSet[str]) -> None:
        """
        The server answered C{cap} with these extensions.
        """
        self.extensions = extensions
        if not self.rooms_on:
            self.current, self.joined = None, []

    def connection_lost(self) -> Tuple[List[str], Optional[str]]:
        """
        The connection is gone: forget what it granted and which rooms it
        was in; return the rooms and the current room it had, to join
        again after the next login.
        """
        before = (list(self.joined), self.current)
        self.extensions = frozenset()
        self.current, self.joined = None, []
        self.logged_in = False
        return before

    def answered(self, request: str, content: Any, value: Any) -> None:
        """
        Follow the session from the answer C{value} to the request
        C{(request, content)}, using the extension keys only.
        """
        if not self.rooms_on or not isinstance(value, dict) or value.get("response") != "info":
            return
        if request == "login":
            # Every client is put in the lobby at login.
            self.current, self.joined = LOBBY, [LOBBY]
            self.logged_in = True
            return
        if request not in ("join", "leave", "rooms", "names") or "room" not in value:
            return
        now = room_name(value["room"])
        if request == "join" and now is not None and now not in self.joined:
            self.joined.append(now)
        elif request == "leave":
            text = content.strip() if isinstance(content, str) else ""
            left = self.current if text in ("", "None") else room_name(text)
            if left in self.joined:
                self.joined.remove(left)
        elif request == "rooms":
            listed = value.get("rooms")
            if isinstance(listed, dict):
                self.listed = {
                    name: count
                    for name, count in ((room_name(k), v) for k, v in listed.items())
                    if name is not None
                }
            joined = value.get("joined")
            if isinstance(joined, list):
                self.joined = [r for r in (room_name(j) for j in joined) if r is not None]
        self.current = now
        if now is not None and now not in self.joined:
            self.joined.append(now)

    def labelled(self, room: Any) -> bool:
        """
        Whether a line of C{room} shows its room: unless the user is in
        that room alone.
        """
        name = room_name(room)
        return name is not None and self.joined != [name]

    def names(self) -> List[str]:
        """
        The room names to complete: those joined and those listed.
        """
        return sorted(set(self.joined) | set(self.listed))

    def next_room(self) -> Optional[str]:
        """
        The joined room after the current one (in join order, wrapping
        round), to switch to; None when there is no other.
        """
        others = [r for r in self.joined if r != self.current]
        if not others:
            return None
        if self.current not in self.joined:
            return others[0]
        at = self.joined.index(self.current)
        return (self.joined[at + 1 :] + self.joined[:at])[0]

    def prompt(self) -> Optional[str]:
        """
        The prompt naming the current room (C{"dev> "}, C{"(no room)> "}),
        or None for the usual prompt: when the server sends no rooms, and
        while the user is in the lobby alone (the standard's one chat, as a
        user who never joins a room has it), as lines show no room then.
        """
        if not self.rooms_on or not self.logged_in or self.joined == [LOBBY]:
            return None
        return f"{self.current or '(no room)'}> "


def rejoin_requests(rooms: List[str], current: Optional[str]) -> List[Tuple[str, str]]:
    """
    The requests that put a session logged in again (in the lobby only)
    back in C{rooms} with C{current} as its current room: a C{join} of
    each other room in order, a C{leave} of the lobby if the user had left
    it, and a C{join} of the current room to switch to it.
    """
    requests = [("join", room) for room in rooms if room != LOBBY]
    if rooms and LOBBY not in rooms:
        requests.append(("leave", LOBBY))
    last = [r for r in rooms if r != LOBBY][-1:] or [LOBBY]
    if current is not None and current in rooms and current != last[0]:
        requests.append(("join", current))
    return requests
