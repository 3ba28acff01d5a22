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
