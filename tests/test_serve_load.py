"""The chat server under load on loopback: 50 concurrent users, bounded in time, no event lost
(events sent = events ingested); the latencies are printed (run with -s to see them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # bench scripts import their neighbours by name

import serve_load  # noqa: E402


def test_fifty_concurrent_users_lose_no_event(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()  # --cpu-threads sets torch's process-wide count: give it back after
    try:
        status = serve_load.main(["--users", "50", "--turns", "2", "--max-new-tokens", "4", "--cpu-threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    with capsys.disabled():
        print(f"\nserve load: 50 users, {report['seconds']} s; feedback p95 {report['feedback_ms']['p95']} ms, "
              f"first line p95 {report['first_line_ms']['p95']} ms, turn p95 {report['turn_ms']['p95']} ms (generation included)")
    assert report["errors"] == []
    sent, ingested = report["sent"], report["ingested"]
    assert (sent["thumbs_up"], sent["thumbs_down"], sent["choices"]) == (ingested["thumbs_up"], ingested["thumbs_down"],
                                                                          ingested["preferences"]) == (25, 25, 50)
    assert ingested["conversations"] == 50 and ingested["rejected"] == 0
    assert status == 0
