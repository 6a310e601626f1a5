"""The bench's own arithmetic: CI floors for the usage workloads and the headline's
median / spread / ratio (pure functions over driver results; no server needed)."""

from __future__ import annotations

from bench import report
from bench.headline import summarise


def _quick(**workloads: dict) -> dict:
    base = {
        "enqueue_latency": {"p50_ms": 0.1, "p99_ms": 0.3},
        "drain_noop": {"jobs_per_min": 600_000},
        "drain_sleep1ms": {"jobs_per_min": 600_000},
        "drain_fail_once": {"jobs_per_min": 300_000},
    }
    return {"peers": {"streamjobs": {"workloads": {**base, **workloads}}}}


def test_usage_floors_pass_above_and_fail_below() -> None:
    ok = _quick(enqueue_concurrent={"jobs_per_s": 8_000.0},
                http_enqueue={"req_per_s": 1_400.0})
    assert report.check_floors(ok) == []
    low = _quick(enqueue_concurrent={"jobs_per_s": 900.0}, http_enqueue={"req_per_s": 50.0})
    fails = report.check_floors(low)
    assert len(fails) == 2
    assert fails[0].startswith("enqueue_concurrent: 900.0 jobs/s")
    assert fails[1].startswith("http_enqueue: 50.0 req/s")


def test_usage_floor_fails_when_the_workload_ran_without_a_figure() -> None:
    data = _quick(http_enqueue={"error": "wrk not found"})
    assert report.check_floors(data) == ["http_enqueue: no measurement (wrk not found)"]


def test_headline_median_spread_and_ratio_of_medians() -> None:
    def rnd(sj: float, bm: float) -> dict:
        return {"streamjobs": {"workloads": {"drain_cli": {"jobs_per_s": sj}}},
                "bullmq": {"workloads": {"drain_noop": {"jobs_per_s": bm}}}}

    rows = summarise([rnd(30.0, 10.0), rnd(10.0, 20.0), rnd(20.0, 40.0)])
    drain = rows[0]
    assert drain["streamjobs"]["median"] == 20.0
    assert (drain["streamjobs"]["min"], drain["streamjobs"]["max"]) == (10.0, 30.0)
    assert drain["bullmq"]["median"] == 20.0
    assert drain["ratio_of_medians"] == 1.0
    http = next(r for r in rows if r["figure"].startswith("HTTP enqueue, 50"))
    assert http["streamjobs"] is None and http["ratio_of_medians"] is None
