"""Data-parallel runs: ``training.fit`` sharded over processes, and the reward and DPO stages launched as two
CPU processes by ``accelerate launch`` against the same stages in one process."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rlhf_organic import distributed
from rlhf_organic.cli import main
from rlhf_organic.errors import UserError
from rlhf_organic.training import Objective, fit

ROOT = Path(__file__).parent.parent
SETTINGS = SimpleNamespace(lr=0.05, weight_decay=0.1, warmup_ratio=0.2, grad_clip=0.5)
# a last step of one item: the second process gets an empty share and must still join the reduction
PLAN = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8]), np.array([9, 10, 11]), np.array([12])] * 2


def _toy(seed=0):
    """A linear regression with a plain-mean loss, and a parameter no step ever gives a gradient."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(13, 5, generator=g), torch.randn(13, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Linear(5, 1)
    unused = torch.nn.Parameter(torch.ones(3))
    params = list(model.parameters()) + [unused]

    def loss(step, total):
        error = model(x[step]).squeeze(-1) - y[step]
        return error.square().sum() / total["items"], {"mae": float(error.detach().abs().sum()) / total["items"]}

    return params, Objective(lambda step: {"items": len(step)}, loss)


def _reference_fit(params, plan, objective, settings):
    """``training.fit`` as it was before the multi-process path (one process)."""
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_ratio * len(plan)))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (len(plan) - s) / max(1, len(plan) - warmup)))
    )
    history = []
    for number, step in enumerate(plan):
        loss, parts = objective.loss(step, objective.totals(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        schedule.step()
        history.append({"step": number + 1, "loss": float(loss.detach()), **parts})
    return history


def test_one_process_fit_is_unchanged_bit_for_bit():
    params, step_loss = _toy()
    history = fit(params, PLAN, step_loss, SETTINGS)
    expected_params, expected_loss = _toy()
    expected = _reference_fit(expected_params, PLAN, expected_loss, SETTINGS)
    assert history == expected
    assert all(torch.equal(a, b) for a, b in zip(params, expected_params))


def test_micro_batches_add_up_to_the_whole_step():
    """Steps split into micro-batches of 2 (and of 1) train what the unsplit steps train, up to float rounding."""
    params, objective = _toy()
    history = fit(params, PLAN, objective, SETTINGS)
    for micro in (1, 2):
        split_params, split_objective = _toy()
        split = fit(split_params, PLAN, split_objective, SimpleNamespace(**vars(SETTINGS), micro_batch_size=micro))
        for a, b in zip(split, history):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["mae"] == pytest.approx(b["mae"], abs=1e-6)
        for a, b in zip(split_params, params):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit_as_rank(rank, world, port, results):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        params, step_loss = _toy()
        history = fit(params, PLAN, step_loss, SETTINGS)
        results.put((rank, history, [p.detach().numpy().copy() for p in params]))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        results.put((rank, repr(exc), None))
    finally:
        distributed._teardown()


def test_two_processes_share_every_step_and_match_one_process():
    """Two forked processes joined by gloo: for a plain-mean loss the sharded steps are the one-process
    steps (up to float rounding), both processes end bitwise equal, and the parameter without a gradient
    stays untouched (AdamW skips it, weight decay included), as in one process."""
    context = multiprocessing.get_context("fork")
    results, port = context.Queue(), _free_port()
    workers = [context.Process(target=_fit_as_rank, args=(r, 2, port, results)) for r in range(2)]
    for w in workers:
        w.start()
    got = dict((r, (h, p)) for r, h, p in (results.get(timeout=60) for _ in workers))
    for w in workers:
        w.join(timeout=30)
    assert all(got[r][1] is not None for r in got), got
    params, step_loss = _toy()
    history = fit(params, PLAN, step_loss, SETTINGS)
    for r in (0, 1):
        for mine, one in zip(got[r][1], params):
            np.testing.assert_allclose(mine, one.detach().numpy(), rtol=0, atol=1e-6)
        for mine, one in zip(got[r][0], history):
            assert mine["step"] == one["step"]
            assert mine["loss"] == pytest.approx(one["loss"], abs=1e-6)
            assert mine["mae"] == pytest.approx(one["mae"], abs=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(got[0][1], got[1][1]))
    assert np.array_equal(got[0][1][-1], np.ones(3))


@pytest.mark.parametrize("env, match", [
    ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
    ({"ACCELERATE_USE_FSDP": "true"}, "FSDP"),
    ({"ACCELERATE_MIXED_PRECISION": "bf16"}, "mixed_precision=bf16"),
    # what `accelerate launch --cpu --num_processes 2` leaves a lone process without mpirun
    ({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}, "ddp_cpu.yaml"),
])
def test_launches_the_loop_cannot_honour_are_refused(monkeypatch, env, match):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=match):
        distributed.setup()


def test_quantized_bases_are_refused_with_several_processes(monkeypatch):
    distributed.check_quantization("4bit")  # one process: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert distributed.world() == 2 and distributed.rank() == 1 and not distributed.is_main()
    with pytest.raises(UserError, match="not supported in a multi-process run"):
        distributed.check_quantization("4bit")
    distributed.check_quantization("none")


# --- the stages, launched -------------------------------------------------------------------------

# Every case is exact: the loop divides each micro-batch's sums by totals of the whole step (weight sums,
# KTO's KL reference point), so two processes, each splitting its share into micro-batches of 3, train what
# one process trains on unsplit steps, up to float rounding: with trust weights and thumbs + A/B choices
# mixed too.
EXACT_ATOL = 1e-4
MICRO = ["--set", "train.micro_batch_size=3"]

DRIVER = textwrap.dedent("""
    import json, os, sys
    from rlhf_organic.cli import main
    print(f"process {os.environ.get('RANK', 0)} of {os.environ.get('WORLD_SIZE', 1)}", flush=True)
    for args in json.loads(sys.argv[1]):
        main(args, standalone_mode=False)
""")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process and two (accelerate launch, ddp_cpu.yaml) run the same stages, side by side."""
    root = tmp_path_factory.mktemp("distributed")
    runner = CliRunner()
    for args in (["simulate", "--preset", "tiny", "--users", "30", "--set", "preferences_per_user=2", "--out", str(root / "sim"), "-q"],
                 ["ingest", str(root / "sim" / "logs"), "--out", str(root / "ds"), "-q"],
                 ["trust", str(root / "ds"), "--scheme", "per_user", "--set", "reference.folds=3", "--out", str(root / "trust"), "-q"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output
    from rlhf_organic.models.tiny import save_tiny
    from rlhf_organic.reward.data import load_reward_data

    data = load_reward_data(root / "ds")
    save_tiny(root / "base", list(data.point["response"]) + [m["content"] for c in data.point["context"] for m in c],
              kind="decoder", vocab_size=400, hidden=32)
    reward = ["reward", "train", str(root / "ds"), "--ground-truth", str(root / "sim"), "-q", "--set", "tiny.hidden=32",
              "--set", "max_length=64", "--set", "train.epochs=1", "--set", "train.batch_size=32"]
    dpo = ["policy", "train", str(root / "ds"), "--method", "dpo", "--set", f"base={root / 'base'}", "-q",
           "--set", "train.batch_size=8", "--set", "train.max_items=40", "--set", "train.lr=0.01",
           "--set", "eval.contexts=4", "--set", "eval.sampling.max_new_tokens=8",
           "--set", "max_prompt_length=48", "--set", "max_completion_length=16"]
    kto = [*dpo[:4], "kto", *dpo[5:], "--trust", str(root / "trust")]
    commands = {"reward": reward + ["--set", "signals=[thumbs]"], "dpo": dpo,
                "reward_trust": reward + ["--trust", str(root / "trust")], "kto": kto}
    (root / "driver.py").write_text(DRIVER)
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    launches = {  # name: (command, stages)
        "one": ([sys.executable, str(root / "driver.py")], list(commands)),
        "two": (accelerate + [str(ROOT / "recipes" / "accelerate" / "ddp_cpu.yaml"), str(root / "driver.py")], list(commands)),
        "fsdp": (accelerate + [str(ROOT / "recipes" / "accelerate" / "fsdp_cpu.yaml"), str(root / "driver.py")], ["reward", "dpo", "kto"]),
    }
    procs = {}
    for name, (launch, stages) in launches.items():  # all at once: each is mostly imports, on 2 cores
        (root / name).mkdir()
        (root / name / "tmp").mkdir()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(root / name / "tmp")}
        for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(var, None)
        todo = [commands[stage] + (MICRO if name != "one" else []) + ["--out", str(root / name / stage)] for stage in stages]
        procs[name] = subprocess.Popen(launch + [json.dumps(todo)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    outputs = {name: p.communicate(timeout=300)[0] for name, p in procs.items()}
    for name, p in procs.items():
        assert p.returncode == 0, f"{name}:\n{outputs[name][-5000:]}"
    return root, outputs


def _tensors(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return {f"{f.relative_to(folder)}:{k}": v for f in sorted(folder.rglob("*.safetensors")) for k, v in load_file(f).items()}


def _numbers(tree, prefix=""):
    """Every number in a metrics tree, by path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


@pytest.mark.parametrize("launch, stage", [("two", "reward"), ("two", "dpo"), ("two", "reward_trust"), ("two", "kto"),
                                           ("fsdp", "reward"), ("fsdp", "dpo"), ("fsdp", "kto")])
def test_two_processes_train_what_one_process_trains(runs, stage, launch):
    """Data parallel (ddp_cpu.yaml) and sharded (fsdp_cpu.yaml), in micro-batches: the one-process weights,
    losses and metrics of unsplit steps, trust-weighted means and KTO's reference point included."""
    root, _ = runs
    one, two = root / "one" / stage, root / launch / stage
    a, b = _tensors(one), _tensors(two)
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=EXACT_ATOL, err_msg=key)
    ha, hb = json.loads((one / "history.json").read_text()), json.loads((two / "history.json").read_text())
    assert [h["step"] for h in ha] == [h["step"] for h in hb]
    np.testing.assert_allclose([h["loss"] for h in hb], [h["loss"] for h in ha], rtol=0, atol=EXACT_ATOL)
    ma, mb = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    sharding = mb["train"].pop("sharding", None)  # only a sharded run has it
    assert (sharding is not None) == (launch == "fsdp")
    na, nb = _numbers({k: v for k, v in ma.items() if k != "seconds"}), _numbers({k: v for k, v in mb.items() if k != "seconds"})
    assert na.keys() == nb.keys() and "train.final_loss" in na
    for key in na:
        assert nb[key] == pytest.approx(na[key], abs=EXACT_ATOL), key


def test_two_processes_write_one_complete_folder_and_log_once(runs):
    root, outputs = runs
    assert "process 0 of 2" in outputs["two"] and "process 1 of 2" in outputs["two"] and "process 0 of 1" in outputs["one"]
    for stage in ("reward", "dpo", "reward_trust", "kto"):
        assert sorted(p.name for p in (root / "two" / stage).iterdir()) == sorted(p.name for p in (root / "one" / stage).iterdir())
    assert sorted(p.name for p in (root / "two").iterdir()) == ["dpo", "kto", "reward", "reward_trust", "tmp"]  # no .partial-*
    assert not list((root / "two" / "tmp").glob("rlhf_organic-rank*"))  # the other process's throwaway folders are gone
    assert outputs["two"].count("[reward] tiny:") == outputs["one"].count("[reward] tiny:") == 4  # 2 runs x 2 lines
    assert outputs["two"].count("[policy] dpo") == outputs["one"].count("[policy] dpo")


@pytest.mark.parametrize("stage", ["reward", "dpo"])
def test_fsdp_shards_the_whole_model_between_the_processes(runs, stage):
    """Each process held half of every parameter while training, the frozen base included: the two
    processes' shards add up to the whole model (LoRA adapter, head, base) and neither held more than half
    plus a layer's rounding."""
    root, outputs = runs
    assert "process 0 of 2" in outputs["fsdp"] and "process 1 of 2" in outputs["fsdp"]
    sharding = json.loads((root / "fsdp" / stage / "metrics.json").read_text())["train"]["sharding"]
    trainable = json.loads((root / "one" / stage / "metrics.json").read_text())["train"]["trainable_parameters"]
    total, local = sharding["parameter_elements"], sharding["local_parameter_elements"]
    assert sharding["processes"] == 2 and len(local) == 2 and sum(local) == total
    assert all(0.45 * total <= n <= 0.55 * total for n in local), local
    assert max(local) < total - trainable  # less than the frozen base alone: the base was sharded too
    assert sharding["units"] == 3  # two decoder layers and the rest of the model
    assert sorted(p.name for p in (root / "fsdp" / stage).iterdir()) == sorted(p.name for p in (root / "one" / stage).iterdir())
    assert sorted(p.name for p in (root / "fsdp").iterdir()) == ["dpo", "kto", "reward", "tmp"]  # no .partial-*
    assert not list((root / "fsdp" / "tmp").glob("rlhf_organic-rank*"))  # rank 1's throwaway folders are gone
