"""
chat: a server and terminal client for the TTM4100 "KTN" JSON chat protocol,
built on Twisted.

The package is laid out by layer:

- L{chat.wire}: bytes <-> JSON values; request parsing; response encoding.
- L{chat.service}: the pure chat core (sessions, rules, dispatch, history).
- L{chat.store}: history stores (memory and SQLite).
- L{chat.protocol}: the Twisted server protocol and factory.
- L{chat.tap}: twistd options and service composition.
"""

__version__ = "0.1.0"
