"""The loop: serve, collect feedback until N new events, then ingest -> trust -> reward -> policy, and swap
the new adapter into the running server; conversations go on across the swap (docs/serve.md).

Each training step is the ``rlhf-organic`` command a user would run, in a child process: the server
keeps answering in this one meanwhile (training here would hold the interpreter), and a failed step
stops the loop with its own message while the server keeps serving the adapter it had. Every round
writes its folders under ``WORK/round-K/`` (dataset, trust, reward, policy) and ``WORK/rounds.json``.
Each round ingests the whole log so far: the policy of round K learns from every event up to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_text
from ..errors import UserError
from .app import Server


@dataclass(frozen=True)
class LoopSettings:
    events: int  # new feedback events to wait for before each round
    rounds: int = 1
    method: str = "kto"
    trust_scheme: str = "combined"
    trust_sets: list[str] = field(default_factory=list)
    reward_sets: list[str] = field(default_factory=list)
    policy_sets: list[str] = field(default_factory=list)
    poll_seconds: float = 0.5


def _cli(args: list[str], log: Callable[[str], None]) -> None:
    log(f"[loop] rlhf-organic {' '.join(args)}")
    done = subprocess.run([sys.executable, "-m", "rlhf_organic", *args, "-q"], capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise UserError(f"the loop stopped: `rlhf-organic {args[0]}` failed (exit status {done.returncode}); "
                        f"the server keeps serving its current adapter.\n{tail}")


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def train_round(server: Server, round_dir: Path, settings: LoopSettings, log: Callable[[str], None]) -> Path:
    """Ingest the log so far, score the users, train a reward model and a policy on the served base."""
    data, ds = server.log.folder / "data", round_dir / "dataset"
    trust, reward, policy = round_dir / "trust", round_dir / "reward", round_dir / "policy"
    _cli(["ingest", str(data), "--out", str(ds), "--overwrite"], log)
    _cli(["trust", str(ds), "--scheme", settings.trust_scheme, *_sets(settings.trust_sets), "--out", str(trust), "--overwrite"], log)
    _cli(["reward", "train", str(ds), "--trust", str(trust), *_sets(settings.reward_sets), "--out", str(reward), "--overwrite"], log)
    # the served base, so that the adapter fits the model in memory (given last: it wins over policy_sets)
    _cli(["policy", "train", str(ds), "--method", settings.method, "--trust", str(trust), "--reward", str(reward),
          *_sets(settings.policy_sets), "--set", f"base={server.replier.base}", "--out", str(policy), "--overwrite"], log)
    return policy


def run_loop(server: Server, work: str | Path, settings: LoopSettings, log: Callable[[str], None] = print,
             should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Run ``settings.rounds`` rounds against a running ``server``; returns what each round did."""
    if settings.events < 1:
        raise UserError("the loop needs at least 1 feedback event per round")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rounds: list[dict] = []
    for k in range(1, settings.rounds + 1):
        target = server.store.feedback_events + settings.events
        log(f"[loop] round {k}: waiting for {settings.events} feedback events (until {target} since start)")
        while server.store.feedback_events < target:
            if should_stop():
                return rounds
            time.sleep(settings.poll_seconds)
        started = time.time()
        policy = train_round(server, work / f"round-{k}", settings, log)
        version = server.swap(policy)
        rounds.append({"round": k, "events": server.store.feedback_events, "policy": str(policy), "version": version,
                       "seconds": round(time.time() - started, 1)})
        write_text(work / "rounds.json", json.dumps(rounds, indent=2) + "\n")
        log(f"[loop] round {k}: serving {policy} (version {version}) after {rounds[-1]['seconds']} s of training")
    return rounds


__all__ = ["LoopSettings", "run_loop", "train_round"]
