"""
Makes C{twistd chat} run the chat server (see L{chat.server.tap}).
"""

from twisted.application.service import ServiceMaker

chat = ServiceMaker(
    "KTN chat server", "chat.server.tap", "A chat server for the TTM4100 KTN JSON protocol.", "chat"
)
