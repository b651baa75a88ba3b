"""FSDP (torch FSDP2) inside ``training.fit``: two forked CPU processes joined by gloo shard a small model,
train it as one process would, survive a checkpoint resume, and hand the model back whole; launches with
FSDP settings the loop does not honour are refused. The stages under ``accelerate launch`` with
``fsdp_cpu.yaml`` are in ``tests/test_distributed.py``."""

import multiprocessing
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhf_organic import checkpoint, distributed
from rlhf_organic.errors import UserError
from rlhf_organic.training import Objective, Trainer, fit

SETTINGS = SimpleNamespace(lr=0.05, weight_decay=0.1, warmup_ratio=0.2, grad_clip=0.5)
# the last step of each epoch has one item: the second process has an empty share and must still join
# FSDP's gathers and reductions (a zero-weight pass)
PLAN = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7, 8]), np.array([9, 10, 11]), np.array([12])] * 2
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_TRANSFORMER_CLS_TO_WRAP": "Block",
            "FSDP_CPU_RAM_EFFICIENT_LOADING": "false"}


class Block(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(self.linear(x))


class Toy(torch.nn.Module):
    """Two blocks (each its own FSDP unit) and a head; the first block is frozen, as a LoRA base is."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(6), Block(6)])
        self.head = torch.nn.Linear(6, 1)
        self.blocks[0].requires_grad_(False)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x).sum(-1)  # not a view (FSDP warns about views a root returns)


def _toy(seed=0, fail_at=None):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(13, 6, generator=g), torch.randn(13, generator=g)
    torch.manual_seed(seed)
    model = Toy()
    calls = []

    def loss(step, total):
        calls.append(len(step))
        if fail_at is not None and len(calls) == fail_at:
            raise KeyboardInterrupt("stopped on purpose")
        error = model(x[step]) - y[step]
        return error.square().sum() / total["items"], {"mae": float(error.detach().abs().sum()) / total["items"]}

    return model, Objective(lambda step: {"items": len(step)}, loss)


def _two_rounds() -> dict:
    """An online method's shape: one Trainer, two plans in turn (the optimizer state crosses the sharding and
    unsharding between them), in micro-batches of 2."""
    model, objective = _toy()
    trainer = Trainer([p for p in model.parameters() if p.requires_grad], SimpleNamespace(**vars(SETTINGS), micro_batch_size=2),
                      2 * len(PLAN), model=model)
    history = trainer.fit(PLAN, objective) + trainer.fit(PLAN[::-1], objective)
    return {"history": history, "state": {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_rank(rank, world, port, folder, results, env=None):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), **FSDP_ENV, **(env or {}))
    torch.set_num_threads(1)
    try:
        out = {}
        model, step_loss = _toy()
        trainable = [p for p in model.parameters() if p.requires_grad]
        history = fit(trainable, PLAN, step_loss, SETTINGS, model=model)
        from rlhf_organic import fsdp

        out["report"] = fsdp.take_report()
        out["history"] = history
        out["state"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        if env:  # a variant of the settings: the first fit only
            results.put((rank, out))
            return
        out["same_objects"] = all(a is b for a, b in zip(trainable, [p for p in model.parameters() if p.requires_grad]))
        out["plain"] = type(model.blocks[0]) is Block and not any(type(p) is not torch.nn.Parameter for p in model.parameters())
        out["hooks_left"] = sum(len(fsdp.fsdp_hooks(m)) for m in model.modules())
        model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})  # plain loading: no FSDP hook runs
        out["loaded"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        out["rounds"] = _two_rounds()
        # a run stopped after 5 steps (the same failure in both processes), then resumed from its checkpoint;
        # checkpoints are due by the clock on rank 0 only (every step), never on rank 1: saving gathers the
        # shards, so the main process's decision must hold for both
        model, step_loss = _toy(fail_at=6)
        with checkpoint.checkpointing(folder, every_steps=1000, every_minutes=0 if rank == 0 else 1000):
            try:
                fit([p for p in model.parameters() if p.requires_grad], PLAN, step_loss, SETTINGS, model=model)
            except KeyboardInterrupt:
                pass
        distributed.barrier()  # rank 0 has written its last checkpoint (a new launch would start after that)
        out["left"] = sorted(p.name for p in (folder / "fit-000").iterdir())
        model, step_loss = _toy()
        with checkpoint.checkpointing(folder, every_steps=1000, every_minutes=0 if rank == 0 else 1000):
            out["resumed"] = fit([p for p in model.parameters() if p.requires_grad], PLAN, step_loss, SETTINGS, model=model)
        out["resumed_state"] = {k: v.numpy().copy() for k, v in model.state_dict().items()}
        results.put((rank, out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        results.put((rank, traceback.format_exc() + repr(exc)))
    finally:
        distributed._teardown()


def _launch(folder, env=None):
    context = multiprocessing.get_context("fork")
    results, port = context.Queue(), _free_port()
    workers = [context.Process(target=_as_rank, args=(r, 2, port, folder, results, env)) for r in range(2)]
    for w in workers:
        w.start()
    got = dict(results.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=30)
    for r in (0, 1):
        assert isinstance(got[r], dict), got[r]
    return got


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    return _launch(tmp_path_factory.mktemp("fsdp"))  # the checkpoint folder both processes see (rank 0 writes it)


def _check_matches_one_process(runs):
    model, step_loss = _toy()
    history = fit([p for p in model.parameters() if p.requires_grad], PLAN, step_loss, SETTINGS, model=model)
    expected = {k: v.numpy() for k, v in model.state_dict().items()}
    for r in (0, 1):
        out = runs[r]
        assert out["state"].keys() == expected.keys()
        for key in expected:
            np.testing.assert_allclose(out["state"][key], expected[key], rtol=0, atol=1e-6, err_msg=key)
        assert [h["step"] for h in out["history"]] == [h["step"] for h in history]
        np.testing.assert_allclose([h["loss"] for h in out["history"]], [h["loss"] for h in history], rtol=0, atol=1e-6)
        np.testing.assert_allclose([h["mae"] for h in out["history"]], [h["mae"] for h in history], rtol=0, atol=1e-6)
    # the frozen block never moved, and both processes hold the same whole model afterwards
    np.testing.assert_array_equal(runs[0]["state"]["blocks.0.linear.weight"], expected["blocks.0.linear.weight"])
    for key in expected:
        np.testing.assert_array_equal(runs[0]["state"][key], runs[1]["state"][key])


def test_sharded_fit_trains_what_one_process_trains(sharded_runs):
    _check_matches_one_process(sharded_runs)


def test_sharded_rounds_keep_the_optimizer_state_as_one_process_does(sharded_runs):
    """Two rounds on one Trainer under FSDP, micro-batched: the one-process whole-step result (AdamW's moments
    are gathered after the first round and cut into the second round's shards)."""
    expected = _two_rounds()
    for r in (0, 1):
        got = sharded_runs[r]["rounds"]
        np.testing.assert_allclose([h["loss"] for h in got["history"]], [h["loss"] for h in expected["history"]], rtol=0, atol=1e-6)
        for key, value in expected["state"].items():
            np.testing.assert_allclose(got["state"][key], value, rtol=0, atol=1e-6, err_msg=key)


def test_one_unit_kept_gathered_until_backward_trains_the_same(tmp_path):
    """fsdp_auto_wrap_policy NO_WRAP (the whole model one unit) and fsdp_reshard_after_forward false."""
    runs = _launch(tmp_path, {"FSDP_AUTO_WRAP_POLICY": "NO_WRAP", "FSDP_RESHARD_AFTER_FORWARD": "false"})
    _check_matches_one_process(runs)
    assert runs[0]["report"]["units"] == 1 and runs[0]["report"]["reshard_after_forward"] is False
    assert sum(runs[0]["report"]["local_parameter_elements"]) == runs[0]["report"]["parameter_elements"]


def test_each_process_held_half_of_every_parameter_and_got_the_model_back_plain(sharded_runs):
    total = sum(p.numel() for p in Toy().parameters())
    for r in (0, 1):
        report = sharded_runs[r]["report"]
        assert report["processes"] == 2 and report["parameter_elements"] == total and report["units"] == 3
        local = report["local_parameter_elements"]
        assert sum(local) == total and all(n <= total * 0.6 for n in local), local  # 6-row weights: 3 rows each
        assert sharded_runs[r]["same_objects"] and sharded_runs[r]["plain"] and sharded_runs[r]["hooks_left"] == 0
        for key, value in sharded_runs[r]["state"].items():
            np.testing.assert_array_equal(sharded_runs[r]["loaded"][key], value + 1)


def test_sharded_fit_resumes_from_its_checkpoint(sharded_runs):
    """Stopped during step 6, resumed from the checkpoint of step 5 (whole tensors, written by rank 0):
    the same steps and weights as a run never stopped."""
    for r in (0, 1):
        out = sharded_runs[r]
        assert out["left"] == ["step-0000005"]
        np.testing.assert_allclose([h["loss"] for h in out["resumed"]], [h["loss"] for h in out["history"]], rtol=0, atol=1e-6)
        for key, value in out["state"].items():
            np.testing.assert_allclose(out["resumed_state"][key], value, rtol=0, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("env, match", [
    ({}, "version 1"),  # accelerate's default fsdp_version
    ({"FSDP_OFFLOAD_PARAMS": "true"}, "offload_params"),
    ({"FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}, "cpu_ram_efficient_loading"),
    ({"FSDP_SHARDING_STRATEGY": "HYBRID_SHARD"}, "sharding_strategy HYBRID_SHARD"),
    ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "auto_wrap_policy SIZE_BASED_WRAP"),
    ({"FSDP_BACKWARD_PREFETCH": "BACKWARD_PRE"}, "backward_prefetch"),
    ({"FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT"}, "state_dict_type SHARDED_STATE_DICT"),
    ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "activation_checkpointing"),
])
def test_fsdp_settings_the_loop_does_not_honour_are_refused(monkeypatch, env, match):
    for var in [v for v in os.environ if v.startswith("FSDP_")] + ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    if env:
        monkeypatch.setenv("FSDP_VERSION", "2")
        monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match=match):
        distributed.setup()


def test_the_shipped_fsdp_settings_are_accepted(monkeypatch):
    for var in [v for v in os.environ if v.startswith("FSDP_")]:
        monkeypatch.delenv(var, raising=False)
    # what accelerate passes for recipes/accelerate/fsdp_cpu.yaml (its defaults for the keys the file leaves out)
    for var, value in {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_SHARDING_STRATEGY": "FULL_SHARD",
                       "FSDP_RESHARD_AFTER_FORWARD": "true", "FSDP_OFFLOAD_PARAMS": "false", "FSDP_MIN_NUM_PARAMS": "100000000",
                       "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP", "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
                       "FSDP_FORWARD_PREFETCH": "false", "FSDP_USE_ORIG_PARAMS": "true",
                       "FSDP_CPU_RAM_EFFICIENT_LOADING": "false", "FSDP_SYNC_MODULE_STATES": "true",
                       "FSDP_ACTIVATION_CHECKPOINTING": "false", "FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD": "false"}.items():
        monkeypatch.setenv(var, value)
    settings = distributed.fsdp_settings()
    assert settings.reshard_after_forward and settings.wrap_layers and settings.layer_classes is None
    assert not distributed.fsdp()  # one process: nothing to shard


def test_a_parallelism_config_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_PARALLELISM_CONFIG", "true")
    with pytest.raises(UserError, match="parallelism_config"):
        distributed.setup()


def test_deepspeed_is_refused_with_a_pointer_to_fsdp(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(UserError, match="fsdp_multi_gpu.yaml"):
        distributed.setup()


def test_ppo_is_refused_under_fsdp_naming_the_methods_that_run(monkeypatch, tmp_path):
    from rlhf_organic.policy.config import settings_from_cli
    from rlhf_organic.policy.stage import train_policy

    for var, value in {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2", "RANK": "0"}.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(UserError, match="ppo does not run under FSDP.*dpo, kto, cringe, rejection_sampling"):
        train_policy(tmp_path, tmp_path / "out", settings_from_cli("ppo", []))
    assert not (tmp_path / "out").exists()


def test_units_are_sharded_innermost_first_and_unknown_layer_classes_are_refused():
    from rlhf_organic.fsdp import layer_modules

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Block(2), Block(2)

    model = torch.nn.Sequential(Outer(), Block(2))
    assert [type(m).__name__ for m in layer_modules(model, ["Outer", "Block"])] == ["Block", "Block", "Block", "Outer"]
    toy = Toy()
    assert layer_modules(toy, ["Block"]) == list(toy.blocks)
    with pytest.raises(UserError, match="names Decoder, which Sequential does not contain"):
        layer_modules(model, ["Block", "Decoder"])
    with pytest.raises(UserError, match="no _no_split_modules"):
        layer_modules(model, None)
