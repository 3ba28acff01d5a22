"""
Test helpers shipped with the package, so that tests of other transports
and of programs built on the core can use them: L{chat.testing.fakes} (an
L{IChatClient} that records events) and L{chat.testing.harness} (clients
connected to a real server in memory, over iosim).
"""

from chat.testing.fakes import FakeClient
from chat.testing.harness import ChatHarness, RecordingClient

__all__ = ["ChatHarness", "FakeClient", "RecordingClient"]
