"""``GET /metrics`` in the Prometheus text format.

Inventory figures are read from memory at scrape time (a custom collector: nothing to keep in
step); request latency is a histogram filled by a middleware. Each app has its own registry,
so several servers in one process (the tests) do not collide.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from inventory import model
from inventory.scheduler import COMMIT_BUCKETS, GROUP_BUCKETS
from inventory.server.auth import requires
from inventory.server.state import ServerState, state_of

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5)  # seconds


class RequestLatency(Collector):
    """Request latency by method and route, exported as the ``dlm_http_request_seconds``
    histogram. Every request passes here: an observation is a bisect and two additions on the
    event loop (~0.4 us), where ``prometheus_client.Histogram`` took a lock and looped over
    the buckets in Python (~2 us)."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], list] = {}  # (method, route) -> [counts, sum]

    def observe(self, method: str, route: str, seconds: float) -> None:
        series = self.series.get((method, route))
        if series is None:
            series = self.series[method, route] = [[0] * (len(LATENCY_BUCKETS) + 1), 0.0]
        series[0][bisect_left(LATENCY_BUCKETS, seconds)] += 1  # le: seconds <= bound
        series[1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily("dlm_http_request_seconds", "Request latency by route",
                                       labels=["method", "route"])
        for (method, route), (counts, total) in list(self.series.items()):
            cumulative, running = [], 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))
            family.add_metric([method, route], cumulative, sum_value=total)
        yield family


LATENCY = web.AppKey("request_latency", RequestLatency)

routes = web.RouteTableDef()


class InventoryCollector(Collector):
    def __init__(self, state: Callable[[], ServerState | None]) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        if state is None:
            return
        inv = state.inventory
        items = GaugeMetricFamily("dlm_items", "Data items by state", labels=["state"])
        for name, count in zip(model.ITEM_STATES, inv.counts.items_by_state, strict=True):
            items.add_metric([name], count)
        yield items
        replicas = GaugeMetricFamily("dlm_replicas", "Replicas by state", labels=["state"])
        in_use = inv.counts.replicas
        counts = {code: inv.r_state.count(code) for code in range(len(model.REPLICA_STATES))}
        removed = len(inv.r_item) - in_use  # empty rows keep their last state
        counts[model.REPLICA_STATE["deleting"]] = max(
            counts[model.REPLICA_STATE["deleting"]] - removed, 0)
        for code, name in enumerate(model.REPLICA_STATES):
            replicas.add_metric([name], counts[code])
        yield replicas
        yield GaugeMetricFamily("dlm_inventory_version", "Version of the last committed write",
                                value=inv.version)
        used = GaugeMetricFamily("dlm_storage_used_bytes", "Bytes held", labels=["storage"])
        cap = GaugeMetricFamily("dlm_storage_capacity_bytes", "Capacity", labels=["storage"])
        nrep = GaugeMetricFamily("dlm_storage_replicas", "Replicas held", labels=["storage"])
        copies = CounterMetricFamily("dlm_storage_copies", "Copies written, by outcome",
                                     labels=["storage", "outcome"])
        deletions = CounterMetricFamily("dlm_storage_deletions", "Deletions, by outcome",
                                        labels=["storage", "outcome"])
        copied = CounterMetricFamily("dlm_storage_copied_bytes", "Bytes copied in",
                                     labels=["storage"])
        for s in inv.storages.values():
            rel = s.reliability
            used.add_metric([s.name], s.used)
            cap.add_metric([s.name], s.capacity)
            nrep.add_metric([s.name], s.replica_count)
            copies.add_metric([s.name, "ok"], rel.copies_ok)
            copies.add_metric([s.name, "failed"], rel.copies_failed)
            deletions.add_metric([s.name, "ok"], rel.deletions_ok)
            deletions.add_metric([s.name, "failed"], rel.deletions_failed)
            copied.add_metric([s.name], rel.bytes_copied)
        yield from (used, cap, nrep, copies, deletions, copied)
        ops = GaugeMetricFamily("dlm_operations", "Operations by kind and state",
                                labels=["kind", "state"])
        for (kind, op_state), count in Counter(
                (o.kind, o.state) for o in inv.operations.values()).items():
            ops.add_metric([kind, op_state], count)
        yield ops
        stats = state.scheduler.stats
        yield CounterMetricFamily("dlm_write_transactions", "Committed write transactions",
                                  value=stats.transactions)
        yield CounterMetricFamily("dlm_writes", "Writes committed (many per transaction)",
                                  value=stats.writes)
        yield CounterMetricFamily("dlm_commit_failures", "Commits the database refused",
                                  value=stats.failed_commits)
        yield _histogram("dlm_commit_seconds", "Database commit latency of write transactions",
                         COMMIT_BUCKETS, stats.commit_buckets, stats.commit_seconds)
        yield _histogram("dlm_group_commit_size", "Writes grouped into one transaction",
                         GROUP_BUCKETS, stats.group_buckets, float(stats.writes))
        yield GaugeMetricFamily("dlm_last_group_size", "Writes in the last group commit",
                                value=stats.last_group_size)
        yield GaugeMetricFamily("dlm_commit_in_doubt", "1 while a commit's outcome is unknown",
                                value=int(stats.in_doubt))
        last = GaugeMetricFamily("dlm_cycle_last_seconds", "Duration of the last cycle",
                                 labels=["kind"])
        latest: dict[str, object] = {}
        for cycle in sorted(inv.cycles.values(), key=lambda c: c.id):
            latest[cycle.kind] = cycle
        for kind, cycle in latest.items():
            if cycle.ended is not None:
                last.add_metric([kind], cycle.ended - cycle.started)
        yield last
        partition = GaugeMetricFamily(
            "dlm_partition_used_bytes", "Bytes of a policy partition per storage, projected "
            "after the last Detox cycle of that policy", labels=["partition", "storage"])
        for cycle in latest_by_policy(inv.cycles.values(), "detox"):
            name = (cycle.summary.get("policy") or {}).get("name", "")
            for st in cycle.summary.get("storages", ()):
                if isinstance(st, dict) and "used_after" in st:
                    partition.add_metric([name, str(st.get("name"))], st["used_after"])
        yield partition
        if state.read_workers is not None:
            workers = state.read_workers.describe()
            yield GaugeMetricFamily("dlm_read_workers_serving", "Read workers answering "
                                    "item queries (dlm serve --workers)",
                                    value=sum(w["serving"] for w in workers))
            yield CounterMetricFamily("dlm_read_worker_starts", "Read worker processes "
                                      "started, restarts included",
                                      value=sum(w["starts"] for w in workers))


def latest_by_policy(cycles, kind: str) -> list:
    """The newest cycle of ``kind`` for each policy (partition) name."""
    newest: dict[str, object] = {}
    for cycle in sorted(cycles, key=lambda c: c.id):
        if cycle.kind == kind:
            newest[(cycle.summary.get("policy") or {}).get("name", "")] = cycle
    return list(newest.values())


def _histogram(name: str, doc: str, bounds: tuple[float, ...], counts: list[int],
               total: float) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


def install(app: web.Application, state: Callable[[], ServerState | None]) -> None:
    registry = CollectorRegistry()
    registry.register(InventoryCollector(state))
    app[REGISTRY] = registry
    app[LATENCY] = RequestLatency()
    registry.register(app[LATENCY])


def observe(request: web.Request, started: float) -> None:
    """Record a request's latency under its route (called by the request middleware)."""
    latency = request.app.get(LATENCY)
    if latency is not None:
        resource = request.match_info.route.resource
        latency.observe(request.method, resource.canonical if resource is not None
                        else "unmatched", time.perf_counter() - started)


@routes.get("/metrics")
@requires("reader")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    state_of(request)  # 503 before start-up is done
    return response
