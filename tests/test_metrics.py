"""GET /metrics: Prometheus text with the inventory, storages, operations and latencies."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(url):
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_follow_the_inventory(server):
    c = server.client
    await c.add_storage(name="d1", kind="posix", root="/d1", capacity=1000,
                        config={"verify_ingest": False})  # no payloads: metrics only
    await c.add_items([{"item_name": f"m/{i}", "storage": "d1", "size": 10} for i in range(5)])
    await c.add_item(item_name="m/init")
    m = await scrape(server.url)
    assert m[("dlm_items", (("state", "READY"),))] == 5
    assert m[("dlm_items", (("state", "INITIALISED"),))] == 1
    assert m[("dlm_replicas", (("state", "complete"),))] == 5
    assert m[("dlm_storage_used_bytes", (("storage", "d1"),))] == 50
    assert m[("dlm_storage_capacity_bytes", (("storage", "d1"),))] == 1000
    assert m[("dlm_write_transactions_total", ())] >= 3
    assert m[("dlm_commit_in_doubt", ())] == 0
    route = (("method", "POST"), ("route", "/v1/items"))
    assert m[("dlm_http_request_seconds_count", route)] == 2
    transactions = m[("dlm_write_transactions_total", ())]
    assert m[("dlm_commit_seconds_count", ())] == transactions
    assert m[("dlm_commit_seconds_bucket", (("le", "+Inf"),))] == transactions
    assert m[("dlm_group_commit_size_bucket", (("le", "1"),))] >= 1


async def test_metrics_need_a_reader_token_once_tokens_exist(sqlite_server):
    await sqlite_server.client.request("POST", "/v1/tokens", json={"name": "o",
                                                                   "role": "operator"})
    async with aiohttp.ClientSession() as s, s.get(sqlite_server.url + "/metrics") as resp:
        assert resp.status == 401


def test_request_latency_histogram_buckets_are_cumulative_and_inclusive():
    from prometheus_client import CollectorRegistry, generate_latest

    from inventory.server.metrics import LATENCY_BUCKETS, RequestLatency

    latency = RequestLatency()
    registry = CollectorRegistry()
    registry.register(latency)
    for seconds in (0.0005, 0.0007, 0.003, 10.0):  # on a bound, inside, beyond the last
        latency.observe("GET", "/v1/items", seconds)
    latency.observe("POST", "/v1/items", 0.2)
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def bucket(method, le):
        return samples[("dlm_http_request_seconds_bucket",
                        (("le", le), ("method", method), ("route", "/v1/items")))]

    assert bucket("GET", "0.0005") == 1  # le: a value equal to the bound counts in it
    assert bucket("GET", "0.001") == 2
    assert bucket("GET", "0.005") == 3
    assert bucket("GET", "5.0") == 3
    assert bucket("GET", "+Inf") == 4
    assert bucket("POST", "0.1") == 0 and bucket("POST", "0.25") == 1
    get = (("method", "GET"), ("route", "/v1/items"))
    assert samples[("dlm_http_request_seconds_count", get)] == 4
    assert abs(samples[("dlm_http_request_seconds_sum", get)] - 10.0042) < 1e-9
    assert len([k for k in samples if k[0] == "dlm_http_request_seconds_bucket"]) == \
        2 * (len(LATENCY_BUCKETS) + 1)
