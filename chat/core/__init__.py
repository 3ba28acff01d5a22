"""
The chat core, with no sockets: the rules of the standard, sessions, the
dispatch table, history and fan-out. Transports reach it through
L{chat.core.interfaces.IChatClient}.
"""
