"""kill -9 in the middle of ingest, trust, the reward model and a DPO policy, then ``run --resume``: the run
continues (from the last training checkpoint inside a stage) and ends with the metrics of a run that was
never interrupted."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SETTINGS = ["data.simulate.preset=tiny", "data.simulate.users=40", "trust.scheme=combined",
            "reward.spec=tiny", "reward.override={train: {epochs: 1, batch_size: 8}}",
            "policy.method=dpo", "policy.base=tiny", "policy.tiny.imitation_max=300", "policy.tiny.imitation_epochs=1",
            "policy.max_prompt_length=48", "policy.max_completion_length=16", "policy.train.batch_size=2",
            "policy.train.max_items=16", "policy.eval.contexts=6", "policy.eval.sampling.max_new_tokens=8",
            "output.checkpoint_steps=1", "output.report_to=none"]


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "k.yaml"
    path.write_text("name: k\ndata: {source: simulate}\nreward: {spec: tiny}\npolicy: {method: dpo}\n")
    return path


def _start(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # same arithmetic in every process
    return subprocess.Popen([sys.executable, "-m", "rlhf_organic", "run", str(recipe), "-q", *SETTINGS,
                             f"output.dir={out}", *extra], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every few ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"the run ended before the moment to kill it: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.003)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _marker(run: Path, folder: str) -> dict | None:
    path = run / folder / "stage.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _checkpoint(run: Path, stage: str, at_least: int) -> bool:
    steps = [int(p.name.split("-")[1]) for p in run.glob(f".checkpoints/{stage}-*/fit-*/step-*")]
    return bool(steps) and max(steps) >= at_least


def test_kill_9_in_every_stage_then_resume_matches_an_uninterrupted_run(tmp_path):
    recipe = _recipe(tmp_path)
    clean = _start(recipe, tmp_path / "clean")
    run = tmp_path / "killed"
    rng = random.Random(0)

    # ingest: while its temporary folder is being written
    _kill_when(_start(recipe, run), lambda: any(run.glob(".dataset.partial-*")))
    assert _marker(run, "dataset") is None
    # trust: at a random moment after the dataset is complete
    first = []
    _kill_when(_start(recipe, run, "--resume"), lambda: _marker(run, "dataset") is not None and (
        first.append(time.monotonic()) or time.monotonic() - first[0] > rng.uniform(0.05, 0.5)))
    # the reward model: in the middle of training, with a checkpoint written
    _kill_when(_start(recipe, run, "--resume"), lambda: _checkpoint(run, "reward", 3))
    assert _marker(run, "reward") is None
    # the policy: in the middle of DPO training
    _kill_when(_start(recipe, run, "--resume"), lambda: _checkpoint(run, "policy", 2))
    assert _marker(run, "policy") is None
    steps_before = max(int(p.name.split("-")[1]) for p in run.glob(".checkpoints/policy-*/fit-*/step-*"))

    resumed = _start(recipe, run, "--resume")
    assert resumed.wait() == 0, resumed.stderr.read().decode()[-3000:]
    assert clean.wait() == 0, clean.stderr.read().decode()[-3000:]

    assert not list(run.glob(".*.partial-*")) and not list(run.glob(".checkpoints/*"))  # nothing stale left
    for folder in ("dataset", "trust", "reward", "policy"):
        a, b = _marker(tmp_path / "clean", folder)["metrics"], _marker(run, folder)["metrics"]
        assert _numbers(a) == pytest.approx(_numbers(b), rel=1e-5, abs=1e-6), folder
    history = json.loads((run / "policy" / "history.json").read_text())
    assert len(history) == 8 and steps_before < 8  # the resumed policy went on from its checkpoint


def _numbers(metrics: dict, prefix: str = "") -> dict:
    """Numeric leaves except timings and paths (which differ between the two run folders)."""
    out = {}
    for key, value in metrics.items():
        name = f"{prefix}.{key}"
        if key in ("seconds", "trust", "reward_model", "dataset", "inputs"):
            continue
        if isinstance(value, dict):
            out.update(_numbers(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


ONLINE = [s for s in SETTINGS if not s.startswith("policy.method")]
ROUNDS = {  # three rounds of each online method, small enough for seconds a round
    "ppo": ["policy.ppo.rounds=3", "policy.ppo.contexts_per_round=4", "policy.ppo.minibatch_size=2",
            "policy.ppo.ppo_epochs=2", "policy.ppo.max_new_tokens=8"],
    "rloo": ["policy.rloo.rounds=3", "policy.rloo.contexts_per_round=2", "policy.rloo.k=2", "policy.rloo.epochs=2",
             "policy.rloo.minibatch_size=2", "policy.rloo.max_new_tokens=8"],
    "online_dpo": ["policy.online_dpo.rounds=3", "policy.online_dpo.contexts_per_round=4", "policy.online_dpo.k=2",
                   "policy.online_dpo.minibatch_size=2", "policy.online_dpo.max_new_tokens=8"],
}


@pytest.mark.parametrize("method", sorted(ROUNDS))
def test_kill_9_in_the_middle_of_an_online_method_then_resume_matches_an_uninterrupted_run(tmp_path, method):
    """PPO, RLOO (GRPO shares its rounds) and online DPO run on the shared loop, one optimizer across rounds:
    a checkpoint per round, so a run killed in its second round goes on from there (the rounds before are
    re-sampled from the restored policy with the same seeds) and ends where an uninterrupted run ends.

    One run folder, so the stages before the policy run once: killed in the policy's second round,
    resumed, then the policy alone trained again from scratch (its folder removed) as the uninterrupted
    reference."""
    recipe = _recipe(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    settings = [*ONLINE, f"policy.method={method}", *ROUNDS[method]]
    run = tmp_path / "run"

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "rlhf_organic", "run", str(recipe), "-q", *settings, f"output.dir={run}",
                                 *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(process: subprocess.Popen) -> tuple[dict, list]:
        assert process.wait() == 0, process.stderr.read().decode()[-3000:]
        return _marker(run, "policy")["metrics"], json.loads((run / "policy" / "history.json").read_text())

    second_round = lambda: any(run.glob(".checkpoints/policy-*/fit-001/step-*"))  # noqa: E731
    _kill_when(start(), second_round)
    assert _marker(run, "policy") is None and _marker(run, "reward") is not None
    resumed, resumed_history = finish(start("--resume"))
    shutil.rmtree(run / "policy")
    assert not any(run.glob(".checkpoints/policy-*")), "a finished stage leaves no checkpoint behind"
    clean, clean_history = finish(start("--resume"))  # every stage reused but the policy, trained from its start
    assert _numbers(resumed) == pytest.approx(_numbers(clean), rel=1e-5, abs=1e-6)
    assert resumed_history == clean_history
    assert {row["round"] for row in clean_history} == {1, 2, 3}
