"""Prometheus metrics: what an operator graphs and alerts on.

Every series is listed, with its type and labels, in docs/metrics.md. Label
values come from fixed sets (dialects, directions, error and close codes,
limits), never from document ids or peer names, so the number of series stays
bounded however many documents and peers there are.

Two kinds of values:

- *events* are counted where they happen, on prometheus-client metrics that
  :class:`Metrics` creates: a frame read or written, an error frame, a
  close, a commit and its latency. The per-frame ones are label children
  bound once (:class:`DialectMetrics`), so the hot path is one ``inc``.
- *states* that an object keeps anyway (documents loaded, connections held,
  the bus's counters) are read when scraped, by :class:`LiveValues`, a
  custom collector: nothing has to keep them in step.

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so
several apps in one process (tests, an app that mounts two bridges) never
collide; ``app.state.metrics.registry`` is there for an app that exposes
the bridge's series on its own ``/metrics``.

Under ``serve --workers N`` each scrape reaches one worker at random, so the
workers run prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``,
set by the supervisor before the workers start): events go to per-process
files that any worker (or the supervisor, with ``--metrics-port``) sums up.
A custom collector cannot be read across processes, so there every worker
copies its :class:`LiveValues` into the files (:class:`_Mirror`) every
``SHARE_INTERVAL`` and before it answers a scrape.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import anyio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import CloseCode, ErrorCode

if TYPE_CHECKING:
    from .cluster.node import ClusterNode
    from .hub import Hub
    from .server.admission import Admission

NAMESPACE = "automerge_bridge"
# The `dialect` label: the protocol a connection speaks. Only "native"
# (protocol v1) exists today; automerge-repo's protocol and an HTTP one will
# count under the other two.
DIALECTS = ("native", "repo", "http")
CONNECTION_STATES = ("handshake", "open")  # handshake: admitted, no welcome yet
ERROR_CODES = tuple(value for name, value in vars(ErrorCode).items() if name.isupper())
CLOSE_CODES = tuple(value for name, value in vars(CloseCode).items() if name.isupper() and isinstance(value, int))
PEER_CLOSED = "peer"  # the `code` of a close the peer made (or a peer that vanished)
# Why changes were refused: the error code the peer (or HTTP caller) got.
REJECTION_REASONS = (ErrorCode.BAD_SYNC, ErrorCode.READ_ONLY, ErrorCode.QUOTA)
# Which limit a 4429 close was for: a connection's frames or bytes, a client
# back before its retry delay, or admission's bounds (bridge/server/admission.py).
RATE_LIMITS = ("frames", "bytes", "reconnect", "total", "per_address", "unauthenticated")

# fsync'd commits take milliseconds; a flush may wait up to its timeout (10 s).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)  # GroupCommit.max_batch is 5000

SHARE_INTERVAL = 2.0  # multiprocess mode: seconds between two copies of a worker's live values


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when this process runs in it.
    prometheus-client decides once, when it is imported, from the variable."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


class DialectMetrics:
    """The children one dialect's connections count on, bound once: a frame
    costs an ``inc``, not a label lookup."""

    __slots__ = ("name", "frames_in", "frames_out", "bytes_in", "bytes_out", "_metrics", "_errors", "_closes",
                 "rate_limited")

    def __init__(self, metrics: "Metrics", name: str) -> None:
        self.name = name
        self._metrics = metrics
        self.frames_in = metrics.frames.labels(name, "in")
        self.frames_out = metrics.frames.labels(name, "out")
        self.bytes_in = metrics.frame_bytes.labels(name, "in")
        self.bytes_out = metrics.frame_bytes.labels(name, "out")
        self._errors = {code: metrics.errors_sent.labels(name, code) for code in ERROR_CODES}
        self._closes = {str(code): metrics.closes.labels(name, str(code)) for code in (*CLOSE_CODES, PEER_CLOSED)}
        self.rate_limited = metrics.rate_limited

    def error_sent(self, code: str) -> None:
        child = self._errors.get(code)
        if child is None:  # a code added since (codes are ours: still a bounded set)
            child = self._errors[code] = self._metrics.errors_sent.labels(self.name, code)
        child.inc()

    def closed(self, code: int | str) -> None:
        """A connection ended: ``code`` is the close code the bridge sent, or
        :data:`PEER_CLOSED`."""
        key = str(code)
        child = self._closes.get(key)
        if child is None:
            child = self._closes[key] = self._metrics.closes.labels(self.name, key)
        child.inc()


class Metrics:
    """The bridge's series, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        self.port: int | None = None  # the port of its own, once served there (create_app's metrics_port)

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace=NAMESPACE, registry=self.registry)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, namespace=NAMESPACE, registry=self.registry, buckets=buckets)

        # Connections (per dialect; bound in DialectMetrics).
        self.frames = counter("frames", "WebSocket frames received (in) and sent (out)", ("dialect", "direction"))
        self.frame_bytes = counter("frame_bytes", "bytes of WebSocket frames received (in) and sent (out)",
                                   ("dialect", "direction"))
        self.errors_sent = counter("errors_sent", "error frames sent, by error code", ("dialect", "code"))
        self.closes = counter("closes", "connections ended, by the close code the bridge sent (peer: the peer "
                              "closed or vanished first)", ("dialect", "code"))
        rate_limit_closes = counter("rate_limit_closes", "connections closed with 4429, by the limit they broke",
                                    ("limit",))
        self.rate_limited = {limit: rate_limit_closes.labels(limit) for limit in RATE_LIMITS}
        # Documents and changes.
        self.changes_accepted = counter("changes_accepted", "changes accepted from peers, HTTP and in-process "
                                        "handles (applied, handed to group commit)")
        rejected = counter("changes_rejected", "sync messages and HTTP bodies of which changes were refused, by "
                           "the error code the sender got", ("reason",))
        self.rejected = {reason: rejected.labels(reason) for reason in REJECTION_REASONS}
        self.load_seconds = histogram("document_load_seconds", "seconds to read a document from the store and "
                                      "load it (or find it new)", LATENCY_BUCKETS)
        # Durability.
        self.commit_batch = histogram("commit_batch_writes", "writes per committed transaction (group commit); "
                                      "_count is the number of commits", BATCH_BUCKETS)
        self.commit_seconds = histogram("commit_seconds", "seconds one store transaction took to commit "
                                        "(fsync included)", LATENCY_BUCKETS)
        self.commit_failures = counter("commit_failures", "store transactions that failed (retried; nothing in "
                                       "them was acknowledged)")
        self.writes_set_aside = counter("writes_set_aside", "writes set aside because they fail alone while "
                                        "others commit (never acknowledged; see the log)")
        self.flush_seconds = histogram("flush_seconds", "seconds from a peer's flush to its answer that the heads "
                                       "are durable", LATENCY_BUCKETS)
        self.flush_timeouts = counter("flush_timeouts", "flushes answered flush_timeout")

        self._dialects: dict[str, DialectMetrics] = {}
        self.dialect(DIALECTS[0])
        self.live = LiveValues()
        if self.multiprocess_dir is None:
            self.registry.register(self.live)
            # What the default registry would show: memory, CPU, descriptors,
            # Python version. (Per process: meaningless summed over workers.)
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self._mirror = None
        else:
            self._mirror = _Mirror()

    def dialect(self, name: str) -> DialectMetrics:
        """The bound children for one dialect's connections."""
        bound = self._dialects.get(name)
        if bound is None:
            bound = self._dialects[name] = DialectMetrics(self, name)
        return bound

    def watch(self, *, hub: "Hub | None" = None, admission: "Admission | None" = None,
              node: "ClusterNode | None" = None) -> None:
        """Where the values read at scrape time are kept."""
        if hub is not None:
            self.live.hub = hub
        if admission is not None:
            self.live.admission = admission
        if node is not None:
            self.live.node = node

    # --- exposition ------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The body and content type of a scrape (Prometheus text, or
        OpenMetrics when ``accept`` asks for it)."""
        encode, content_type = choose_encoder(accept or "")
        if self.multiprocess_dir is None:
            return encode(self.registry), content_type
        self.share()
        registry = CollectorRegistry()
        registry.register(AllWorkers(self.multiprocess_dir))
        return encode(registry), content_type

    def share(self) -> None:
        """Multiprocess mode: copy this process's live values into the files."""
        if self._mirror is not None:
            self._mirror.copy(self.live.collect())

    async def share_periodically(self) -> None:
        """Multiprocess mode: keep this worker's live values in the files fresh,
        for the scrapes other workers answer."""
        while True:
            self.share()
            await anyio.sleep(SHARE_INTERVAL)

    def process_exiting(self) -> None:
        """Multiprocess mode: this worker's live values stop counting."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)


@functools.cache
def uncounted() -> Metrics:
    """Metrics nobody scrapes, for a hub, a group commit or a pump made
    without an app (tests, tools): counting never needs an ``if``."""
    return Metrics()


class LiveValues(Collector):
    """Values the bridge keeps anyway, read at each scrape."""

    def __init__(self) -> None:
        self.hub: Hub | None = None
        self.admission: Admission | None = None
        self.node: ClusterNode | None = None

    def collect(self) -> Iterator[Metric]:
        if self.admission is not None:
            yield self._connections(self.admission)
        if self.hub is not None:
            yield from self._documents(self.hub)
        if self.node is not None:
            yield from self._cluster(self.node)

    @staticmethod
    def _connections(admission: "Admission") -> Metric:
        family = GaugeMetricFamily(f"{NAMESPACE}_connections", "WebSocket connections held, by dialect and state "
                                   "(handshake: no welcome yet)", labels=("dialect", "state"))
        counts = {(DIALECTS[0], state): 0 for state in CONNECTION_STATES} | dict(admission.by_dialect)
        for (dialect, state), count in sorted(counts.items()):
            family.add_metric((dialect, state), count)
        return family

    @staticmethod
    def _documents(hub: "Hub") -> Iterator[Metric]:
        docs = list(hub.loaded.values())
        yield _gauge("documents_loaded", "documents in memory", len(docs))
        yield _gauge("documents_open", "loaded documents that someone follows (a peer or an in-process handle)",
                     sum(1 for live in docs if live.subscribers))
        yield _gauge("subscriptions", "document subscriptions (one per peer per open document)",
                     sum(len(live.subscribers) for live in docs))
        yield _gauge("documents_degraded", "loaded documents with stored records left out (see /healthz)",
                     sum(1 for live in docs if live.degraded))
        yield _gauge("documents_unavailable", "documents whose stored state does not load (see /healthz)",
                     len(hub.unavailable))
        yield _gauge("commit_queue_writes", "writes waiting for the next group commit", hub.writer.queued)
        yield _gauge("commits_failing", "1 while commits fail (/healthz says failing)", int(bool(hub.writer.failing)))
        yield _counter("core_recoveries", "documents reloaded after the Automerge core failed on them",
                       hub.recoveries)

    @staticmethod
    def _cluster(node: "ClusterNode") -> Iterator[Metric]:
        health = node.health()
        yield _gauge("bus_connected", "1 while the bus is connected and subscribed", int(health["bus_connected"]))
        yield _gauge("cluster_docs_behind", "loaded documents with commits of other bridges not seen yet (a gap)",
                     health["docs_with_gaps"])
        yield _gauge("cluster_gap_seconds", "age of the oldest open gap: how far behind the bus this bridge is",
                     health["oldest_gap_seconds"])
        yield _counter("cluster_heals", "documents read back from the store (gaps, reconnects, periodic look)",
                       health["heals"])
        yield _counter("cluster_healed_changes", "changes that store reads brought and the bus had not",
                       health["healed_changes"])
        yield _counter("bus_applied", "bus messages whose changes were applied here", health["applied"])
        yield _counter("bus_refused", "bus payloads that did not decode", health["refused"])
        snapshot = getattr(node.bus, "snapshot", None)
        if snapshot is not None:
            bus = snapshot()
            messages = CounterMetricFamily(f"{NAMESPACE}_bus_messages", "bus messages published (out, acknowledged "
                                           "by the broker) and received (in)", labels=("direction",))
            messages.add_metric(("out",), bus["published"])
            messages.add_metric(("in",), bus["received"])
            yield messages
            yield _counter("bus_dropped", "bus messages never sent or lost in flight (the store heals them)",
                           bus["dropped"])
            yield _counter("bus_reconnects", "bus connections after the first", bus["reconnects"])
            yield _gauge("bus_queued", "bus messages waiting to be published", bus["queued"])


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)


# How the workers' copies of a live gauge add up (default: summed over the
# live workers, so a 0/1 flag says for how many of them it holds).
MIRROR_MODES = {f"{NAMESPACE}_cluster_gap_seconds": "livemax"}


class _Mirror:
    """Multiprocess mode: :class:`LiveValues` copied into metrics that
    prometheus-client writes to this process's files. Gauges are set;
    counters grow by what they grew since the last copy."""

    def __init__(self) -> None:
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._last: dict[tuple, float] = {}

    def copy(self, families: Iterable[Metric]) -> None:
        for family in families:
            for sample in family.samples:
                if family.type == "gauge":
                    self._child(self._gauges, Gauge, family, sample.labels).set(sample.value)
                elif family.type == "counter" and sample.name.endswith("_total"):
                    key = (family.name, tuple(sorted(sample.labels.items())))
                    grown = sample.value - self._last.get(key, 0.0)
                    self._last[key] = sample.value
                    child = self._child(self._counters, Counter, family, sample.labels)  # shown at 0 too
                    if grown > 0:
                        child.inc(grown)

    @staticmethod
    def _child(made: dict, kind: type, family: Metric, labels: dict[str, str]):
        metric = made.get(family.name)
        if metric is None:
            extra = {"multiprocess_mode": MIRROR_MODES.get(family.name, "livesum")} if kind is Gauge else {}
            # No registry: the files are what is read (by AllWorkers).
            metric = made[family.name] = kind(family.name, family.documentation, tuple(labels), registry=None, **extra)
        return metric.labels(**labels) if labels else metric


class AllWorkers(Collector):
    """Multiprocess mode: every worker's series, summed from the files. The
    live gauges of workers that are gone (killed, restarted) are dropped
    first; their counters stay, as counters should."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._files = multiprocess.MultiProcessCollector(None, path)

    def collect(self) -> Iterable[Metric]:
        for file in Path(self._path).glob("gauge_live*_*.db"):
            pid = file.stem.rsplit("_", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                multiprocess.mark_process_dead(int(pid), self._path)
        return self._files.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
