"""
What the chat core needs of a connected client: the small interface every
transport (TCP today, WebSocket next, test fakes) implements.
"""

from __future__ import annotations

from typing import List

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """
    What the core needs of a connected client.
    """

    max_response_size = Attribute(
        "The largest single response, in bytes, this client can take, or None "
        "for no limit. A long history is split into several responses to fit."
    )

    def deliver(data: bytes) -> None:
        """
        Send encoded responses: one or more complete JSON objects, each
        followed by its newline (a broadcast batch comes as one C{data}).
        """

    def disconnect() -> None:
        """
        Close the connection once what was delivered has been sent.
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

    def deliver_burst(responses: List[bytes]) -> None:
        """
        Send a one-off burst of responses (the history at login), not counted
        against the client's send-queue limit.
        """
