"""Output folders (docs/safety.md): overwrite replaces only a folder rlhf-organic wrote (its marker file),
never one that is, contains or sits inside an input; one run at a time per run folder (a lock); stale
``.partial`` folders of killed commands are cleaned; a resumed stage says where it resumed; progress bars
print nothing stray into piped logs."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlhf_organic import atomic
from rlhf_organic.cli import main
from rlhf_organic.errors import UserError

from conftest import bb3x_conversation, write_lines

ROOT = Path(__file__).parent.parent


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _dataset(tmp_path: Path) -> Path:
    from rlhf_organic.data.ingest import ingest

    src = write_lines(tmp_path / "logs" / "a.jsonl", [bb3x_conversation(f"c{i}", f"u{i % 3}") for i in range(6)])
    ingest([str(src)], tmp_path / "ds", log=lambda m: None, progress=False)
    return tmp_path / "ds"


# ---------------------------------------------------------------- what overwrite may delete

def test_every_output_folder_carries_the_marker(tmp_path):
    from rlhf_organic.simulator.simulate import preset_config, simulate
    from rlhf_organic.trust.config import TrustSection
    from rlhf_organic.trust.stage import compute_trust

    simulate(preset_config("tiny", users=6), tmp_path / "sim", progress=False)
    ds = _dataset(tmp_path)
    compute_trust(ds, tmp_path / "trust", TrustSection(scheme="uniform"), log=lambda m: None, progress=False)
    for folder in ("sim", "ds", "trust"):
        assert atomic.is_output(tmp_path / folder), folder
    with atomic.atomic_dir(tmp_path / "x") as tmp:
        (tmp / "f").write_text("1")
    assert atomic.is_output(tmp_path / "x") and not atomic.is_output(tmp_path / "logs")


def test_overwrite_replaces_only_a_marked_folder_and_an_empty_one_is_used(tmp_path):
    from rlhf_organic.data.ingest import ingest

    src = write_lines(tmp_path / "logs" / "a.jsonl", [bb3x_conversation()])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=r"not written by rlhf-organic.*\.rlhf_organic"):
        ingest([str(src)], mine, overwrite=True, log=lambda m: None, progress=False)
    assert (mine / "thesis.tex").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    assert ingest([str(src)], tmp_path / "empty", log=lambda m: None, progress=False)["conversations"] == 1
    with pytest.raises(UserError, match="already exists"):
        ingest([str(src)], tmp_path / "empty", log=lambda m: None, progress=False)
    assert ingest([str(src)], tmp_path / "empty", overwrite=True, log=lambda m: None, progress=False)["conversations"] == 1


def test_atomic_dir_never_removes_an_unmarked_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    with pytest.raises(UserError, match="not written by rlhf-organic"):
        with atomic.atomic_dir(out) as tmp:
            (tmp / "f").write_text("1")
    assert (out / "keep").is_file() and not list(tmp_path.glob(".out.partial-*"))


def test_a_stage_never_writes_over_or_inside_its_inputs(tmp_path):
    from rlhf_organic.trust.config import TrustSection
    from rlhf_organic.trust.stage import compute_trust

    ds = _dataset(tmp_path)
    before = sorted(p.name for p in ds.iterdir())
    for out, relation in ((ds, "is the input"), (ds / "trust", "sits inside the input"), (tmp_path, "contains the input")):
        with pytest.raises(UserError, match=relation):
            compute_trust(ds, out, TrustSection(scheme="uniform"), overwrite=True, log=lambda m: None, progress=False)
    assert sorted(p.name for p in ds.iterdir()) == before
    res = CliRunner().invoke(main, ["trust", str(ds), "--scheme", "uniform", "--out", str(ds), "--overwrite"])
    assert res.exit_code == 2 and "is the input" in res.stderr
    res = CliRunner().invoke(main, ["reward", "train", str(ds), "--out", str(ds), "--overwrite"])
    assert res.exit_code == 2 and "is the input" in res.stderr
    res = CliRunner().invoke(main, ["policy", "judge", str(ds), "--ground-truth", str(tmp_path / "logs"),
                                    "--out", str(tmp_path / "logs" / "judge")])
    assert res.exit_code == 2 and "sits inside the input" in res.stderr
    assert sorted(p.name for p in ds.iterdir()) == before


def test_reward_score_replaces_only_a_score_file(tmp_path):
    ds = _dataset(tmp_path)
    theirs = tmp_path / "theirs.parquet"
    theirs.write_bytes(b"PAR1 not ours")
    for out, message in ((theirs, "not a score file written by rlhf-organic"), (ds / "examples.parquet", "input"),
                         (tmp_path / "logs", "is a directory")):
        res = CliRunner().invoke(main, ["reward", "score", str(ds), "--data", str(ds), "--out", str(out), "--overwrite"])
        assert res.exit_code == 2 and message in res.stderr, res.output
    assert theirs.read_bytes() == b"PAR1 not ours"


def test_simulate_overwrites_only_its_own_simulation(tmp_path):
    from rlhf_organic.simulator.simulate import preset_config, simulate

    project = tmp_path / "project"
    write_lines(project / "logs" / "real.jsonl", [bb3x_conversation()])
    with pytest.raises(UserError, match="not written by rlhf-organic"):
        simulate(preset_config("tiny", users=5), project, overwrite=True, progress=False)
    (project / "logs" / "real.jsonl").unlink()
    (project / "logs").rmdir()
    (project / "notes.txt").write_text("mine")  # a folder of the user's: not made into a simulation folder
    with pytest.raises(UserError, match="not written by rlhf-organic"):
        simulate(preset_config("tiny", users=5), project, progress=False)
    assert sorted(p.name for p in project.iterdir()) == ["notes.txt"]


def test_ablation_overwrite_replaces_only_an_ablation_folder(tmp_path):
    from rlhf_organic.ablate import run_ablation

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: a\ndata: {simulate: {preset: tiny, users: 10}}\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not written by rlhf-organic"):
        run_ablation(recipe, ["output.overwrite=true"], grid_items=["trust.scheme=uniform,combined"], out=mine,
                     log=lambda m: None, echo=lambda m: None, progress=False)
    with pytest.raises(UserError, match="recipe"):
        run_ablation(recipe, ["output.overwrite=true"], grid_items=["trust.scheme=uniform,combined"], out=tmp_path,
                     log=lambda m: None, echo=lambda m: None, progress=False)
    assert (mine / "keep.txt").is_file() and recipe.is_file()


def _recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(f"name: t\ndata: {{simulate: {{preset: tiny, users: 12}}}}\ntrust: {{scheme: uniform}}\n"
                    f"output: {{dir: '{tmp_path}/run', report_to: none}}\n")
    return path


def test_a_run_folder_replaced_with_overwrite_is_emptied_in_place(tmp_path, monkeypatch):
    """``output.dir=.`` inside a run folder: the folder itself stays (it is the current folder)."""
    recipe = _recipe(tmp_path)
    assert CliRunner().invoke(main, ["run", str(recipe), "-q"]).exit_code == 0
    run = tmp_path / "run"
    (run / "extra.txt").write_text("old")
    monkeypatch.chdir(run)
    res = CliRunner().invoke(main, ["run", str(recipe), "-q", "output.dir=.", "output.overwrite=true"])
    assert res.exit_code == 0, res.output
    assert not (run / "extra.txt").exists() and (run / "report.txt").is_file() and atomic.is_output(run)


def test_a_run_whose_data_inputs_hold_the_run_folder_is_refused(tmp_path):
    logs = write_lines(tmp_path / "logs" / "a.jsonl", [bb3x_conversation()]).parent
    recipe = tmp_path / "f.yaml"
    recipe.write_text(f"name: f\ndata: {{source: files, inputs: ['{logs}']}}\noutput: {{dir: '{logs}/run'}}\n")
    res = CliRunner().invoke(main, ["run", str(recipe), "-q"])
    assert res.exit_code == 2 and "sits inside the input" in res.stderr and not (logs / "run").exists()


# ---------------------------------------------------------------- one run per folder; stale leftovers

def test_a_second_run_into_a_locked_folder_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path):
    recipe = _recipe(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    atomic.mark_output(run, "run")
    with atomic.locked(run):
        res = CliRunner().invoke(main, ["run", str(recipe), "-q", "--resume"])
        assert res.exit_code == 2, res.output
        assert f"in use by process {os.getpid()}" in res.stderr and atomic.LOCK in res.stderr
    said = []
    (run / atomic.LOCK).write_text(f"{_dead_pid()}\n")  # left by a run killed with -9
    with atomic.locked(run, log=said.append):
        assert (run / atomic.LOCK).read_text().strip() == str(os.getpid())
    assert any("no longer running" in m for m in said)
    assert not (run / atomic.LOCK).exists()


def test_the_lock_holds_across_processes(tmp_path):
    code = ("import sys, time\nfrom pathlib import Path\nfrom rlhf_organic import atomic\n"
            "with atomic.locked(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"in use by process {holder.pid}"):
            with atomic.locked(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with atomic.locked(tmp_path):  # killed: the kernel released its lock
        pass


def test_stale_partial_folders_of_dead_processes_are_cleaned(tmp_path):
    out = tmp_path / "model"
    dead = tmp_path / f".model.partial-{_dead_pid()}"
    alive = tmp_path / f".model.partial-{os.getppid()}"
    unmarked = tmp_path / f".model.partial-{_dead_pid()}9"
    # killed between creating its folder and marking it: nothing in it to lose
    unmarked_empty = tmp_path / f".model.partial-{_dead_pid()}8"
    for folder in (dead, alive):
        folder.mkdir()
        atomic.mark_output(folder, "partial")
    unmarked.mkdir()
    (unmarked / "data.csv").write_text("someone's file")
    unmarked_empty.mkdir()
    with atomic.atomic_dir(out) as tmp:
        (tmp / "f").write_text("1")
    assert not dead.exists() and alive.is_dir() and not unmarked_empty.exists()
    assert (unmarked / "data.csv").read_text() == "someone's file"  # not ours: never deleted


def test_standalone_trust_cleans_what_a_killed_one_left(tmp_path):
    from rlhf_organic.trust.config import TrustSection
    from rlhf_organic.trust.stage import compute_trust

    ds = _dataset(tmp_path)
    left = tmp_path / f".trust.partial-{_dead_pid()}"
    left.mkdir()
    atomic.mark_output(left, "trust")
    compute_trust(ds, tmp_path / "trust", TrustSection(scheme="uniform"), log=lambda m: None, progress=False)
    assert not left.exists()


# ---------------------------------------------------------------- resume says where; bars in piped logs

def test_a_resumed_fit_says_from_which_step(tmp_path):
    import numpy as np
    import torch

    from rlhf_organic.checkpoint import checkpointing
    from rlhf_organic.training import Objective, fit, step_plan

    settings = type("S", (), {"lr": 0.1, "weight_decay": 0.0, "warmup_ratio": 0.0, "grad_clip": 1.0})()
    plan = step_plan(np.ones(10), 2, 1, False, np.random.default_rng(0))
    weight = torch.nn.Parameter(torch.ones(3))

    def dies_at_step_4(step, total, calls=[]):  # noqa: B006 - the list counts the calls
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # as if killed during the fourth step
        return (weight ** 2).sum(), {}

    with pytest.raises(KeyboardInterrupt), checkpointing(tmp_path, every_steps=1, stage="reward", log=print):
        fit([weight], plan, Objective(lambda step: {}, dies_at_step_4), settings)
    said = []
    with checkpointing(tmp_path, every_steps=1, stage="reward", log=said.append):
        fit([weight], plan, Objective(lambda step: {}, lambda step, total: ((weight ** 2).sum(), {})), settings)
    assert said == [f"resuming reward from step 3 of {len(plan)}"]


TOKENIZER = ("from rlhf_organic.models.tiny import train_tokenizer\n"
             "train_tokenizer(['hello world %d' % i for i in range(300)], 300)\n")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_the_tokenizer_prints_no_blank_lines_into_a_pipe():
    done = subprocess.run([sys.executable, "-c", TOKENIZER], cwd=ROOT, env=ENV, capture_output=True)
    assert done.returncode == 0 and done.stderr.decode() == "" and done.stdout.decode() == ""


def test_the_tokenizer_bar_on_a_terminal_has_a_total():
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a new pty is 0 x 0: no bar fits
    child = subprocess.Popen([sys.executable, "-c", TOKENIZER], cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=follower)
    os.close(follower)
    shown = b""
    try:
        while True:
            try:
                part = os.read(leader, 1 << 16)
            except OSError:  # the terminal's other end closed: the child is done
                break
            if not part:
                break
            shown += part
    finally:
        os.close(leader)
        child.wait()
    assert child.returncode == 0
    text = shown.decode(errors="replace").replace("\r", "\n")
    assert "tokenizer" in text and "Compute merges" not in text  # our bar, with its total; not the trainer's
    assert not re.search(r"\d+\s*/\s*0\s*$", text, re.MULTILINE), text[-500:]
