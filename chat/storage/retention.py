"""
Retention while the server runs: a service that prunes the store at start
and then every C{interval} seconds.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from chat.storage.interfaces import IMessageStore, check_retention


class RetentionService(TimerService):
    """
    Keep messages for C{keep_days} days and/or the last C{keep_last} of each
    room. Start it once the store is open and stop it before closing the
    store (stopping waits for a prune under way). A failed prune is logged
    and tried again at the next interval.
    """

    log = Logger()

    def __init__(
        self,
        store: IMessageStore,
        keep_days: Optional[float] = None,
        keep_last: Optional[int] = None,
        interval: float = 3600.0,
        clock: Any = None,
    ) -> None:
        check_retention(keep_days, keep_last)
        super().__init__(interval, self.prune)
        self.store = store
        self.keep_days = keep_days
        self.keep_last = keep_last
        self.clock = clock

    def prune(self) -> Deferred:
        """
        Prune once; the Deferred fires (never fails) when done.
        """
        d = self.store.prune(keep_days=self.keep_days, keep_last=self.keep_last)

        def pruned(removed: int) -> None:
            if removed:
                self.log.info("Retention removed {removed} messages", removed=removed)

        def failed(failure: Any) -> None:
            self.log.error("Retention failed: {error}", error=failure.getErrorMessage())

        return d.addCallbacks(pruned, failed)
