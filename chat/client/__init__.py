"""
The terminal client of the KTN chat protocol: C{chat}, or
C{python -m chat.client}.

It is a "stupid" client in the standard's sense: it turns what the user types
into requests and shows what the server answers (PROTOCOL.md, section 5,
"What our client sends and accepts"). The modules, none of which imports a
later one's caller:

- L{chat.client.rooms}: the extensions the server granted (rooms, private
  messages, presence) and the rooms the user is in.
- L{chat.client.display}: responses from any server to safe text.
- L{chat.client.commands}: typed lines to requests; the client's own
  commands (C{/me}, C{/quit}, C{/clear}).
- L{chat.client.connection}: the Twisted protocol (one connection) and the
  session across connections (reconnect, log in again).
- L{chat.client.config}: the config file and the input history file.
- L{chat.client.streams}: standard input and output for both front ends.
- L{chat.client.plain}: the scriptable front end.
- L{chat.client.console}: the interactive front end (line editor).
- L{chat.client.cli}: options and C{main}.
"""
