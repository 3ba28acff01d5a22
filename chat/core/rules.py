"""
The standard's naming rules, shared by the core's parts.
"""

import re

#: The name the server uses as C{sender} of C{error}, C{info} and C{history};
#: reserved, so no user can pass for it.
SERVER_NAME = "server"

#: A username: ASCII letters and digits only (PROTOCOL.md, section 4).
USERNAME = re.compile(r"[A-Za-z0-9]+")

#: Values of C{content} that clients in the field send for "no argument".
NO_ARGUMENT = (None, "", "None")

#: A room's name: the username rule (docs/protocol.md, "Rooms"); rooms are
#: compared and shown in lower case.
ROOM_NAME = USERNAME

#: Where a private conversation's key starts: no room name can.
PRIVATE_PREFIX = "@"

#: The extensions a client can ask for with C{cap} (docs/protocol.md).
EXTENSIONS = frozenset({"rooms", "private", "presence"})


def private_key(one: str, other: str) -> str:
    """
    The store's room key of the private conversation between two users:
    the same for both, whatever the letter case of their names.
    """
    first, second = sorted((one.lower(), other.lower()))
    return f"{PRIVATE_PREFIX}{first},{second}"
