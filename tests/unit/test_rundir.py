"""What a run directory records about each stage's cost (stages/timings.jsonl)."""

from __future__ import annotations

import time

from unpact.rundir import RunDir, stage_timings


def test_a_computed_stage_records_its_cost_and_a_stage_read_back_records_none(tmp_path):
    rd = RunDir(tmp_path)

    def slow():
        time.sleep(0.05)
        return {"x": 1}

    assert rd.stage("original/evaluate", slow) == ({"x": 1}, True)
    assert rd.stage("original/evaluate", slow) == ({"x": 1}, False)
    rd.stage("ga/unlearn", lambda: [1, 2])
    rows = stage_timings(tmp_path)
    assert [r["stage"] for r in rows] == ["original/evaluate", "ga/unlearn"]
    assert rows[0]["seconds"] >= 0.05 > rows[1]["seconds"] >= 0
    assert all(r["peak_rss_gb"] > 0 and r["cpu_seconds"] >= 0 for r in rows)
    assert rows[1]["peak_rss_gb"] >= rows[0]["peak_rss_gb"]  # the peak so far never falls
