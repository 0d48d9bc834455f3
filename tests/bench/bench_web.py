"""Web and metrics figures: the cost metrics add to the hot path, API latencies on a store with a few thousand
messages, and a /metrics scrape. Run with `make bench` (prints figures; asserts nothing about speed)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))

from websupport import hl7, start_hub

from hub import metrics
from hub.store import NewDelivery, NewMessage


def _per_call(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def test_bench_metrics_hot_path():
    n = 200_000
    per_receive = _per_call(lambda: metrics.count_received("bench", ("accepted",), 0.001), n)
    per_delivery = _per_call(lambda: metrics.count_delivery("bench", "d", "sent", 0.5), n)
    print(
        f"\nmetrics: count_received {per_receive * 1e6:.2f} µs/input, count_delivery {per_delivery * 1e6:.2f} "
        f"µs/attempt"
    )


async def test_bench_api(tmp_path):
    import asyncio

    hub = await start_hub(tmp_path)
    try:
        store = hub.engine.store
        batch = [
            NewMessage(
                "adt",
                hl7(f"B{i}", f"MRN{i % 500}"),
                "hl7v2",
                meta={"control_id": f"B{i}", "patient_id": f"MRN{i % 500}", "message_type": "ADT^A04"},
                deliveries=[NewDelivery("ehr"), NewDelivery("flaky")],
            )
            for i in range(5000)
        ]
        await asyncio.to_thread(store.accept, batch)
        await asyncio.sleep(1.0)
        op = hub.client("operator")
        for label, path, params in [
            ("channels overview", "/api/channels", {}),
            ("search by patient id", "/api/messages", {"patient_id": "MRN42"}),
            ("search page of 50", "/api/messages", {"limit": 50}),
            ("message detail (HL7 rendered)", "/api/messages/4000", {}),
            ("/metrics", "/metrics", {}),
        ]:
            await op.get(path, params=params)  # warm caches (hl7apy tables, status cache)
            times = []
            for _ in range(20):
                hub.app.state.hub.invalidate()
                t = time.perf_counter()
                r = await op.get(path, params=params)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200
            times.sort()
            print(
                f"api {label:32} median {times[10] * 1000:7.1f} ms  p95 {times[18] * 1000:7.1f} ms  (5000 messages, "
                f"10000 deliveries)"
            )
        col = metrics.QueueCollector(
            lambda: __import__("hub.web.queries", fromlist=["queue_rows"]).queue_rows(store), ttl=0
        )
        t = time.perf_counter()
        for _ in range(20):
            list(col.collect())
        print(f"queue gauges: {(time.perf_counter() - t) / 20 * 1000:.1f} ms per uncached read")
    finally:
        await hub.close()
