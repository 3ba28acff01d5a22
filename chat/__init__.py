"""
chat: a server and terminal client for the TTM4100 "KTN" JSON chat protocol,
built on Twisted.

The package is laid out by layer; each depends only on those above it:

- L{chat.wire}: framing (bytes to JSON values) and messages (requests,
  responses), shared by server and client.
- L{chat.core}: the pure chat core (rules, sessions, commands, history).
- L{chat.transports}: the Twisted protocols that connect clients to the core.
- L{chat.server}: twistd options and service composition (C{twistd chat}).
- L{chat.testing}: fakes for tests of code built on the core.
"""

__version__ = "0.1.0"
