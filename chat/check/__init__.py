"""
A conformance checker for the TTM4100 KTN JSON chat protocol: point it at
any server (C{python -m chat.check HOST PORT}, or C{chat-check}) and it
tests the standard's rules one by one.

L{chat.check.checks} holds the rules, L{chat.check.probe} the client
connections, L{chat.check.cli} the command line.
"""
