"""
What the chat core needs of a connected client: the small interface every
transport (TCP today, WebSocket next, test fakes) implements.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """
    What the core needs of a connected client: a way to tell it events
    (L{chat.core.events}) and to close it. A transport turns the events
    into bytes for its client.
    """

    history_budget = Attribute(
        "Bytes of history items this client takes at once (a login's window "
        "or a page), or None for no limit: a client that reads one response "
        "per recv() gets the newest part of the window that it can take "
        "quickly, and pages back from there."
    )

    def send(event: object) -> None:
        """
        Tell the client an event: a L{chat.core.events.Notice}, L{Names},
        L{Broadcast} or L{HistoryWindow}. Events are shared between clients
        and must not be changed.
        """

    def disconnect() -> None:
        """
        Close the connection once what was sent has been written.
        """


class IFlowControlledClient(IChatClient):
    """
    A client whose transport can be slowed down; the core uses these when a
    client provides them (a test fake need not).
    """

    def pause_reading() -> None:
        """
        Stop reading requests from the client (its requests wait in TCP).
        """

    def resume_reading() -> None:
        """
        Read requests again.
        """
