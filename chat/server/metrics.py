"""
Prometheus metrics for C{twistd chat --metrics ENDPOINT}: C{/metrics} in the
Prometheus text format, served by the official C{prometheus_client}.

The core's counters (L{chat.core.stats.Stats}) are plain integers read at
scrape time by L{ChatCollector}, so serving metrics costs the chat nothing
between scrapes; connection and send-queue gauges are counted then too.
Store latency is timed around every store operation by L{TimedStore}.
"""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional, Sequence

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.twisted import MetricsResource
from twisted.internet.defer import Deferred
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from chat.core.service import ChatService
from chat.storage import IMessageStore, Message


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class ChatCollector:
    """
    Reads the chat's counters and its connections when Prometheus scrapes.
    """

    def __init__(self, chat: ChatService, transport: str = "tcp") -> None:
        self.chat = chat
        self.transport = transport

    def collect(self) -> Iterator[Metric]:
        chat = self.chat
        stats = chat.stats
        yield _counter("chat_logins", "Successful logins.", stats.logins)
        yield _counter("chat_logouts", "Logouts (by the logout request).", stats.logouts)
        yield _counter("chat_messages_stored", "Messages stored.", stats.messages_stored)
        yield _counter(
            "chat_deliveries", "Message responses handed to connections.", stats.deliveries
        )
        yield _counter(
            "chat_sent_bytes",
            "Bytes of message responses handed to connections (as a stream client gets them).",
            stats.bytes_delivered,
        )
        yield _counter(
            "chat_history_windows", "History windows sent at login and join.", stats.history_windows
        )
        yield _counter("chat_history_pages", "Pages of older history sent.", stats.history_pages)
        yield _counter(
            "chat_flood_delayed_requests",
            "Requests that had to wait for flood control.",
            stats.flood_delayed,
        )
        yield _counter(
            "chat_skipped_messages",
            "Messages not sent to a legacy client that reads but was too far behind.",
            stats.skipped,
        )
        requests = CounterMetricFamily(
            "chat_requests", "Requests, by word and outcome.", labels=["word", "outcome"]
        )
        for (word, outcome), count in sorted(stats.requests.items()):
            requests.add_metric([word, outcome], count)
        yield requests
        errors = CounterMetricFamily(
            "chat_errors", "Error responses sent, by kind.", labels=["kind"]
        )
        for kind, count in sorted(stats.errors.items()):
            errors.add_metric([kind], count)
        yield errors
        dropped = CounterMetricFamily(
            "chat_dropped_clients", "Connections the server dropped, by reason.", labels=["reason"]
        )
        for reason in ("not_reading", "flooding", "too_large"):
            dropped.add_metric([reason], stats.dropped[reason])
        yield dropped

        by_dialect = {"stream": 0, "legacy": 0}
        queued = 0
        users = 0
        for session in list(chat._sessions):
            client = session.client
            by_dialect["legacy" if getattr(client, "legacy", False) else "stream"] += 1
            queue = getattr(client, "_queue", None)
            if queue is not None:
                queued += queue.queued
            if session.username is not None:
                users += 1
        connections = GaugeMetricFamily(
            "chat_connections", "Connections open, by transport and dialect.",
            labels=["transport", "dialect"],
        )  # fmt: skip
        for dialect, count in by_dialect.items():
            connections.add_metric([self.transport, dialect], count)
        yield connections
        yield GaugeMetricFamily("chat_users", "Users logged in.", value=users)
        yield GaugeMetricFamily(
            "chat_send_queue_bytes", "Bytes waiting in the connections' send queues.", value=queued
        )
        yield GaugeMetricFamily(
            "chat_history_window_messages",
            "Messages in the lobby's history window.",
            value=len(chat.window),
        )
        yield GaugeMetricFamily(
            "chat_rooms", "Rooms that exist (someone is in them), the lobby included.",
            value=len(chat.rooms()),
        )  # fmt: skip


@implementer(IMessageStore)
class TimedStore:
    """
    An L{IMessageStore} that times every operation of the store it wraps
    (from the call, queueing included, to the answer) in a histogram.
    """

    def __init__(self, store: IMessageStore, histogram: Histogram) -> None:
        self.store = store
        self._histogram = histogram

    def _timed(self, operation: str, d: Deferred) -> Deferred:
        start = time.perf_counter()
        observe = self._histogram.labels(operation).observe

        def done(result: Any) -> Any:
            observe(time.perf_counter() - start)
            return result

        return d.addBoth(done)

    def append(self, messages: Sequence[Message]) -> Deferred:
        return self._timed("append", self.store.append(messages))

    def recent(self, room: str, limit: int) -> Deferred:
        return self._timed("recent", self.store.recent(room, limit))

    def before(self, room: str, before_id: int, limit: int) -> Deferred:
        return self._timed("before", self.store.before(room, before_id, limit))

    def prune(self, keep_days: Optional[float] = None, keep_last: Optional[int] = None) -> Deferred:
        return self._timed("prune", self.store.prune(keep_days, keep_last))

    def backup(self, path: str) -> Deferred:
        return self.store.backup(path)

    def close(self) -> Deferred:
        return self.store.close()


def store_latency(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "chat_store_seconds",
        "Time a store operation took, waiting included, by operation.",
        ["operation"],
        registry=registry,
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    )


class _ScrapedSite(Site):
    """
    A site that writes no access line per request: a scrape every 15 seconds
    would fill the server's log with thousands a day (L{Site} writes each
    to it by default).
    """

    def log(self, request: Any) -> None:
        pass


def metrics_site(registry: CollectorRegistry) -> Site:
    """
    A web site with the registry at C{/metrics}.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    site = _ScrapedSite(root)
    site.displayTracebacks = False
    return site


class Metrics:
    """
    The metrics of one chat server: a registry with the store's latency,
    and, once the chat exists, its counters.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._latency = store_latency(self.registry)

    def timed(self, store: IMessageStore) -> IMessageStore:
        return TimedStore(store, self._latency)

    def watch(self, chat: ChatService) -> None:
        self.registry.register(ChatCollector(chat))

    def site(self) -> Site:
        return metrics_site(self.registry)
