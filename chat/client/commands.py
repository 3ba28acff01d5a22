"""
What the user types: a line to a request, or to one of the client's own
commands.

The client is "stupid" in the standard's sense: the first word of a line is
the request, the rest is its content (PROTOCOL.md, section 2). A few
commands that start with C{/} belong to the client itself (L{LOCAL_COMMANDS})
and never reach the server; C{/me TEXT} sends a standard C{msg} whose content
is C{/me TEXT}, which every other client shows as it is. The extensions'
requests (C{/join dev}, C{/leave}, C{/rooms}, C{/pm bob hi}) are ordinary
lines: the slash is dropped and the word goes to the server.
"""

from __future__ import annotations

from typing import Optional, Tuple

from chat.client.display import ACTION_PREFIX

#: The client's own commands: C{/quit} ends the session (logging out first),
#: C{/clear} clears the screen, C{/presence [on|off]} shows or hides the
#: lines that say who joins and leaves. Words after C{/quit} or C{/clear}
#: (C{/quit bye}, as on IRC) are ignored. Typed without the slash they are
#: sent as requests like any other word.
LOCAL_COMMANDS = ("quit", "clear", "presence")


def local_command(line: str) -> Optional[str]:
    """
    The client's own command in C{line} (C{"quit"} for C{"/quit"} and
    C{"/quit bye"}), or None when the line is for the server.
    """
    text = line.strip()
    if not text.startswith("/"):
        return None
    words = text[1:].split(None, 1)
    word = words[0].lower() if words else ""
    return word if word in LOCAL_COMMANDS else None


def presence_setting(line: str, now: bool) -> Optional[bool]:
    """
    What C{/presence [on|off]} asks for: C{on} or C{off}, and the other of
    C{now} with no argument; None for an argument that is neither.
    """
    parts = line.strip().split(None, 1)
    if len(parts) < 2:
        return not now
    return {"on": True, "off": False, "yes": True, "no": False}.get(parts[1].strip().lower())


def parse_input(line: str) -> Optional[Tuple[str, Optional[str]]]:
    """
    Turn one typed line into C{(request, content)}, or None for a blank line.

    The first word is the request, lower-cased; the rest of the line, if any,
    is the content, else C{None}. A leading C{/} is dropped, as many chat
    clients accept C{/names}; neither convenience changes what the standard
    forms (C{login NAME}, C{msg TEXT}, C{names}, C{help}, C{logout}) send.
    C{/me TEXT} is an action: C{msg} with the content C{/me TEXT}. Line
    breaks inside the rest (a pasted text) are kept.
    """
    text = line.strip()
    if text.startswith("/"):
        text = text[1:].lstrip()
        parts = text.split(None, 1)
        if len(parts) == 2 and "/" + parts[0].lower() + " " == ACTION_PREFIX:
            return "msg", ACTION_PREFIX + parts[1]
    if not text:
        return None
    parts = text.split(None, 1)
    word = parts[0].lower()
    rest = parts[1] if len(parts) > 1 else None
    return word, rest
