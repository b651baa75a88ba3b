"""Load test of the chat server on loopback: N concurrent simulated users chat, thumb every reply and pick
one side of an A/B pair; then the log is ingested and every event sent must be there.

    python bench/serve_load.py [--model BASE_OR_POLICY] [--users 50] [--turns 3] [--max-new-tokens 8]

Without --model a tiny random model is built (the generation itself is not what is measured). Latencies
reported (milliseconds, p50 / p95 / max):
- ``feedback``: a thumbs or an A/B choice, answered once the event is fsync-ed to disk;
- ``first_line``: from sending a message to the first line of its streamed answer (the human turn,
  logged and fsync-ed), which comes before the reply is generated;
- ``turn``: a whole turn with its reply, generation included (queued behind every other user's: one model,
  one generation at a time), for scale only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


async def _user(client: httpx.AsyncClient, index: int, turns: int, stats: dict) -> None:
    await client.get("/")  # the page: sets this user's cookie
    start = time.perf_counter()
    chat = (await _post(client, "/api/chat", {}, stats)).json()["chat_id"]
    stats["feedback"].append(time.perf_counter() - start)
    for turn in range(turns):
        mode = "ab" if turn == turns - 1 else "single"
        start = time.perf_counter()
        events = []
        async with client.stream("POST", f"/api/chat/{chat}/message", json={"text": f"user {index} says hello {turn}", "mode": mode}) as r:
            if r.status_code != 200:
                stats["errors"].append(f"message {r.status_code}: {(await r.aread())[:200]!r}")
                return
            async for line in r.aiter_lines():
                if line.strip():
                    if not events:
                        stats["first_line"].append(time.perf_counter() - start)
                    events.append(json.loads(line))
        stats["turn"].append(time.perf_counter() - start)
        end = events[-2] if len(events) >= 2 else {}
        start = time.perf_counter()
        if end.get("type") == "reply":
            thumbs = "up" if (index + turn) % 2 else "down"
            await _post(client, f"/api/chat/{chat}/feedback", {"message_id": end["message_id"], "thumbs": thumbs}, stats)
            stats["sent"]["thumbs_" + thumbs] += 1
        elif end.get("type") == "ab":
            await _post(client, f"/api/chat/{chat}/choose", {"ab_id": end["ab_id"], "choice": "ab"[index % 2]}, stats)
            stats["sent"]["choices"] += 1
        else:
            stats["errors"].append(f"no reply: {events[-1:]}")
            return
        stats["feedback"].append(time.perf_counter() - start)


async def _post(client: httpx.AsyncClient, path: str, body: dict, stats: dict) -> httpx.Response:
    response = await client.post(path, json=body)
    if response.status_code != 200:
        stats["errors"].append(f"{path} {response.status_code}: {response.text[:200]}")
        raise RuntimeError(stats["errors"][-1])
    return response


async def run_load(url: str, users: int = 50, turns: int = 3, timeout: float = 120) -> dict:
    """Run ``users`` concurrent users against ``url``; latencies (seconds) and the counts of events sent."""
    stats: dict = {"feedback": [], "first_line": [], "turn": [], "errors": [],
                   "sent": {"thumbs_up": 0, "thumbs_down": 0, "choices": 0}}
    clients = [httpx.AsyncClient(base_url=url, timeout=timeout) for _ in range(users)]  # one cookie jar each
    started = time.perf_counter()
    tasks = [asyncio.create_task(_user(c, i, turns, stats)) for i, c in enumerate(clients)]
    try:
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:  # bounded in time: what was acknowledged so far still has to be in the log
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for c in clients:
            await c.aclose()
    if pending:
        stats["errors"].append(f"timed out after {timeout} s with {len(pending)} of {users} users unfinished")
    stats["errors"] += [repr(t.exception()) for t in done if t.exception() is not None]
    stats["seconds"] = time.perf_counter() - started
    return stats


def summary(stats: dict) -> dict:
    def ms(values):
        v = np.asarray(values) * 1000
        return {"n": len(v), "p50": round(float(np.percentile(v, 50)), 1), "p95": round(float(np.percentile(v, 95)), 1),
                "max": round(float(v.max()), 1)} if len(v) else {"n": 0}

    return {"seconds": round(stats["seconds"], 2), "sent": stats["sent"], "errors": stats["errors"][:5],
            "feedback_ms": ms(stats["feedback"]), "first_line_ms": ms(stats["first_line"]), "turn_ms": ms(stats["turn"])}


def main(argv: list[str] | None = None) -> int:
    from click.testing import CliRunner

    from rlhf_organic.cli import main as cli
    from rlhf_organic.serve.app import Server
    from rlhf_organic.serve.generate import Sampling, load_replier
    from rlhf_organic.serve.run import open_log_folder, serve_in_background

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="base model or policy folder (default: a tiny random model)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--cpu-threads", type=int, help="torch CPU threads for generation (default: torch's)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds the users have in all")
    parser.add_argument("--out", help="folder for the log and dataset (default: a temporary folder)")
    args = parser.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="serve-load-"))
    model = args.model
    if model is None:
        from rlhf_organic.models.tiny import save_tiny

        model = str(save_tiny(root / "base", ["hello there, how are you?", "I like books and tea."] * 50, vocab_size=300,
                              hidden=32, layers=1, heads=2))
    replier = load_replier(model, Sampling(max_new_tokens=args.max_new_tokens, cpu_threads=args.cpu_threads), log=lambda message: None)
    server = Server(replier, open_log_folder(root / "log"), new_users_per_minute=10 * args.users)
    running = serve_in_background(server)
    try:
        stats = asyncio.run(run_load(running.url, args.users, args.turns, args.timeout))
    finally:
        running.stop()
    result = CliRunner().invoke(cli, ["ingest", str(root / "log" / "data"), "--out", str(root / "dataset"), "-q"])
    if result.exit_code != 0:
        print(result.output, file=sys.stderr)
        return 1
    ingested = json.loads((root / "dataset" / "summary.json").read_text())
    report = summary(stats)
    report["ingested"] = {k: ingested[k] for k in ("conversations", "thumbs_up", "thumbs_down", "preferences", "rejected")}
    report["device"] = str(next(replier.model.parameters()).device)
    sent = stats["sent"]
    # an event counts as sent once the server acknowledged it: each must be in the dataset. (After a time-out,
    # a request cut off in flight may be logged without its acknowledgement arriving: more, never fewer.)
    lost = (sent["thumbs_up"] > ingested["thumbs_up"] or sent["thumbs_down"] > ingested["thumbs_down"]
            or sent["choices"] > ingested["preferences"])
    report["lost"] = lost
    print(json.dumps(report, indent=2))
    return 1 if lost or stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
