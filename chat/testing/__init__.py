"""
Test helpers shipped with the package, so that tests of other transports
and of programs built on the core can use them: L{chat.testing.fakes}.
"""

from chat.testing.fakes import FakeClient

__all__ = ["FakeClient"]
