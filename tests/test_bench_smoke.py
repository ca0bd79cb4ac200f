"""`make bench` still works: a smoke run (BENCH_SMOKE=1, about a second per round, on a SQLite
file) writes every figure that bench/README.md and the README quote to results.json, and every count
in the database matches. Its figures mean nothing and are not checked: speed belongs to the bench."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FIGURES = {
    **{
        f"webhooks_{senders}": {"per_s", "bare_per_s", "floor_per_s", "p50_ms", "p99_ms", "errors"}
        for senders in (1, 16, 64)
    },
    "apply": {"per_s", "cpu_ms_per_notification", "backlog_drained_s", "ack_to_paid_p50_ms", "ack_to_paid_p99_ms"},
    "checkout": {"per_s", "bare_per_s", "p50_ms", "p99_ms", "errors"},
}
PAGES = ("catalog", "cart", "result", "checkout")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="the bench drives the shop with wrk (apt-get install wrk)")
def test_a_smoke_run_of_the_bench_writes_every_figure(tmp_path):
    results_path = tmp_path / "results.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("BENCH_")}
    env.update(BENCH_SMOKE="1", BENCH_RESULTS=str(results_path))
    run = subprocess.run(
        [sys.executable, "bench/run.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    results = json.loads(results_path.read_text())
    assert set(results) == {*FIGURES, "pages", "counts_ok"}
    for group, names in FIGURES.items():
        assert names <= set(results[group]), group
        for name in names:
            assert isinstance(results[group][name]["value"], (int, float)), (group, name)
    for page in PAGES:
        assert {"p50_ms", "p99_ms", "per_s"} <= set(results["pages"][page])
        assert results["pages"][page]["per_s"]["value"] > 0
    for senders in (1, 16, 64):
        per_s = results[f"webhooks_{senders}"]["per_s"]
        assert per_s["baseline"] == results[f"webhooks_{senders}"]["floor_per_s"]["value"]
    assert results["counts_ok"] == {"value": True}
