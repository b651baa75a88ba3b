"""Data-parallel runs over several processes (``accelerate launch``, ``torchrun``, ``mpirun``): DDP semantics
for the project's own optimisation loop (``training.fit``), without wrapping the model.

Every process builds the same model from the same seed and walks the same step plan; ``training.fit``
gives each process its share of every step's items, sums the gradients across processes (each
process's loss is scaled by its share of the step, so the sum is the average DDP would take) and then
clips and steps identically everywhere, so every process keeps the same parameters. Only the main
process writes output folders (``atomic.atomic_dir``) and logs; the others write into a throwaway
folder and wait at a barrier.

The launch is read from the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` from torchrun /
accelerate, or the OpenMPI / MPICH / MVAPICH variables from mpirun). ``setup`` joins the processes
once, through torch's ``env://`` rendezvous, in a **private** gloo process group: torch's default group
stays uninitialised, so transformers, peft and the rest behave in every process exactly as in a
one-process run (transformers, for one, stops writing ``save_pretrained`` files outside rank 0 once the
default group exists, and the stages read back what they write). ``world``, ``rank``, ``is_main`` only
read the environment (no torch import), so the command line can ask them cheaply.

Under an accelerate FSDP launch (``ACCELERATE_USE_FSDP``, ``fsdp_settings``) ``training.fit`` also shards the
model it trains (``rlhf_organic.fsdp``); torch's default process group then exists for the length of that
call only (``open_default_group``, ``close_default_group``). Details and guarantees: ``docs/distributed.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import UserError

_RANK = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_WORLD = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK = ("LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MV2_COMM_WORLD_LOCAL_RANK")
BUCKET_ELEMENTS = 1 << 24  # values per flattened buffer in one collective (64 MB of float32)
TIMEOUT_ENV = "RLHF_ORGANIC_DIST_TIMEOUT"  # seconds a process waits for the others (default 1800)

_state: dict = {}  # "group": the private gloo process group, "store": its rendezvous store


def _env_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return default


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def world() -> int:
    """Number of processes of this run (1 when not launched as several)."""
    return max(1, _env_int(_WORLD, 1))


def rank() -> int:
    """This process's index in the run (0 when not launched as several)."""
    return _env_int(_RANK, 0) if world() > 1 else 0


def local_rank() -> int:
    """This process's index on its machine."""
    return _env_int(_LOCAL_RANK, 0) if world() > 1 else 0


def is_main() -> bool:
    """Whether this process writes outputs and logs (rank 0)."""
    return rank() == 0


def _force_cpu() -> bool:
    return _flag("ACCELERATE_USE_CPU")


def _use_cuda() -> bool:
    import torch

    return torch.cuda.is_available() and not _force_cpu()


def device():
    """The device this process's tensors belong on: ``cuda:LOCAL_RANK`` with a GPU, else the CPU."""
    import torch

    return torch.device("cuda", local_rank()) if _use_cuda() else torch.device("cpu")


def check_launch() -> None:
    """Refuse launches whose settings our loop would silently ignore; see ``docs/distributed.md``."""
    for var, what in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_MEGATRON_LM", "Megatron-LM")):
        if _flag(var):
            raise UserError(
                f"accelerate launched this run with {what}, which rlhf_organic does not support: its training loop is "
                "plain torch, so ZeRO / tensor-parallel sharding would be silently ignored. To shard the model over "
                "the processes, launch with an FSDP config (recipes/accelerate/fsdp_multi_gpu.yaml, or "
                "fsdp_cpu.yaml); for plain data parallelism, a DDP config (recipes/accelerate/ddp_multi_gpu.yaml). "
                "See docs/distributed.md")
    if _flag("ACCELERATE_USE_PARALLELISM_CONFIG"):
        raise UserError(
            "accelerate launched this run with a parallelism_config (tensor / context / sequence parallelism, or "
            "hybrid sharding), which rlhf_organic does not honour: it shards data and, with an FSDP config, the model "
            "over all processes. Remove parallelism_config from the accelerate config (docs/distributed.md)")
    if _flag("ACCELERATE_USE_FSDP"):
        fsdp_settings()
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
    if precision not in ("", "no"):
        raise UserError(
            f"accelerate launched this run with mixed_precision={precision}, which rlhf_organic's loop does not apply; "
            "launch with mixed_precision: no and choose the model's precision with --set dtype=bfloat16 instead")
    if (world() == 1 and _force_cpu() and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")
            and not os.environ.get("RANK")):
        # accelerate's simple launcher sets MASTER_ADDR only when asked for several processes, yet with
        # --cpu it starts just one unless mpirun does the rest (--mpirun_hostfile)
        raise UserError(
            "accelerate launch --cpu --num_processes N started a single process: accelerate starts several CPU "
            "processes only through mpirun (--mpirun_hostfile). Launch with "
            "`accelerate launch --config_file recipes/accelerate/ddp_cpu.yaml ...` (torchrun, gloo) instead, or drop "
            "--num_processes (and unset MASTER_ADDR) for one process")


@dataclass(frozen=True)
class FsdpSettings:
    """The FSDP settings of an ``accelerate launch`` that rlhf_organic honours (``fsdp_settings``)."""

    reshard_after_forward: bool = True  # free a layer's gathered parameters after its forward
    wrap_layers: bool = True  # every decoder layer its own unit (TRANSFORMER_BASED_WRAP); False: one unit (NO_WRAP)
    layer_classes: list[str] | None = None  # class names of the layers; None: the model's _no_split_modules


def fsdp() -> bool:
    """Whether ``training.fit`` shards the model it trains with FSDP2 (a multi-process FSDP launch)."""
    return _flag("ACCELERATE_USE_FSDP") and world() > 1


def _fsdp_env(name: str) -> str | None:
    value = os.environ.get(name)
    return None if value is None or value.strip().lower() in ("", "none") else value.strip()


def fsdp_settings() -> FsdpSettings:
    """The ``FSDP_*`` settings accelerate passed, checked: a setting rlhf_organic would not honour is refused
    (a UserError naming it) rather than ignored. See ``docs/distributed.md``."""
    def refuse(setting: str, why: str):
        raise UserError(f"accelerate launched this run with FSDP {setting}, which rlhf_organic does not honour: {why}. "
                        "Start from recipes/accelerate/fsdp_multi_gpu.yaml (docs/distributed.md)")

    version = _fsdp_env("FSDP_VERSION") or "1"
    if version != "2":
        refuse(f"version {version}", "it shards with FSDP2 (torch's fully_shard); set fsdp_version: 2")
    strategy = (_fsdp_env("FSDP_SHARDING_STRATEGY") or "FULL_SHARD").upper()
    if strategy not in ("FULL_SHARD", "1"):
        refuse(f"sharding_strategy {strategy}", "FSDP2 always shards fully (FULL_SHARD); to keep gathered layers "
               "between forward and backward set fsdp_reshard_after_forward: false")
    reshard = (_fsdp_env("FSDP_RESHARD_AFTER_FORWARD") or "true").lower()
    if reshard not in ("true", "false"):
        refuse(f"reshard_after_forward {reshard}", "FSDP2 takes true or false here")
    policy = (_fsdp_env("FSDP_AUTO_WRAP_POLICY") or "TRANSFORMER_BASED_WRAP").upper()
    if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
        refuse(f"auto_wrap_policy {policy}", "it shards per decoder layer (TRANSFORMER_BASED_WRAP) or the whole model "
               "as one unit (NO_WRAP)")
    classes = _fsdp_env("FSDP_TRANSFORMER_CLS_TO_WRAP")
    for var, setting, why in (
            ("FSDP_OFFLOAD_PARAMS", "offload_params", "CPU offload is not supported; set fsdp_offload_params: false"),
            ("FSDP_FORWARD_PREFETCH", "forward_prefetch", "an FSDP1 option (FSDP2 prefetches by itself)"),
            ("FSDP_CPU_RAM_EFFICIENT_LOADING", "cpu_ram_efficient_loading",
             "every process loads the whole base before it is sharded; set fsdp_cpu_ram_efficient_loading: false"),
            ("FSDP_ACTIVATION_CHECKPOINTING", "activation_checkpointing",
             "use the stage's own setting instead (the reward model's train.gradient_checkpointing)"),
            ("FSDP_ACTIVATION_CHECKPOINTING_OFFLOAD", "activation_checkpointing_offload", "not supported")):
        if (_fsdp_env(var) or "false").lower() == "true":
            refuse(f"{setting}: true", why)
    if (_fsdp_env("FSDP_USE_ORIG_PARAMS") or "true").lower() != "true":
        refuse("use_orig_params: false", "an FSDP1 option; FSDP2 always keeps the original parameters")
    if _fsdp_env("FSDP_BACKWARD_PREFETCH"):
        refuse(f"backward_prefetch {_fsdp_env('FSDP_BACKWARD_PREFETCH')}", "an FSDP1 option (FSDP2 prefetches by itself)")
    state_dict = (_fsdp_env("FSDP_STATE_DICT_TYPE") or "FULL_STATE_DICT").upper()
    if state_dict != "FULL_STATE_DICT":
        refuse(f"state_dict_type {state_dict}", "checkpoints and saved models always hold whole tensors, written by "
               "the main process (FULL_STATE_DICT)")
    if _fsdp_env("FSDP_IGNORED_MODULES"):
        refuse("ignored_modules", "every parameter of the trained model is sharded")
    return FsdpSettings(reshard_after_forward=reshard == "true", wrap_layers=policy == "TRANSFORMER_BASED_WRAP",
                        layer_classes=[c.strip() for c in classes.split(",") if c.strip()] if classes else None)


def check_quantization(quantization: str) -> None:
    """Refuse 4/8-bit models in a multi-process run: never run with the gloo gradient exchange."""
    if world() > 1 and quantization != "none":
        raise UserError(
            f"quantization {quantization!r} is not supported in a multi-process run yet: quantized bases are loaded "
            "onto each process's GPU, untested with the gradient exchange of several processes. Run QLoRA in one process")


def setup() -> int:
    """Check the launch and, in a multi-process run, join the processes once; returns ``world()``."""
    check_launch()
    n = world()
    if n > 1 and "group" not in _state:
        _state["group"] = _join(n)
    return n


def _join(n: int):
    import atexit
    from datetime import timedelta

    import torch
    import torch.distributed as td

    if not td.is_available():
        raise UserError("this torch build has no torch.distributed: a multi-process run is not possible")
    if _use_cuda():
        torch.cuda.set_device(local_rank())
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    if td.is_initialized():  # someone (the caller's own code) set up torch's default group: share its store
        from torch.distributed.distributed_c10d import _get_default_store

        store = _get_default_store()
    else:
        if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            raise UserError(f"a run of {n} processes needs MASTER_ADDR and MASTER_PORT in the environment "
                            "(accelerate launch and torchrun set them)")
        store, _, _ = next(td.rendezvous("env://", rank(), n, timeout=timeout))
    _state["store"] = store
    group = td.ProcessGroupGloo(td.PrefixStore("rlhf_organic/", store), rank(), n, timeout)
    atexit.register(_teardown)
    return group


def open_default_group() -> bool:
    """Start torch's default process group over this run's processes (FSDP2's DeviceMesh needs it), through
    the rendezvous store ``setup`` made; returns False when one exists already (then it is left alone).
    Close it with ``close_default_group`` as soon as it is not needed: while it exists, transformers writes
    ``save_pretrained`` files on rank 0 only (module docstring)."""
    from datetime import timedelta

    import torch.distributed as td

    setup()
    if td.is_initialized():
        return False
    number = _state["default_groups"] = _state.get("default_groups", 0) + 1  # the same count in every process
    timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, 1800)))
    td.init_process_group("cpu:gloo,cuda:nccl" if _use_cuda() else "gloo", timeout=timeout, rank=rank(), world_size=world(),
                          store=td.PrefixStore(f"rlhf_organic/default-{number}/", _state["store"]))
    return True


def close_default_group() -> None:
    import torch.distributed as td

    if td.is_initialized():
        td.destroy_process_group()


def _teardown() -> None:
    group = _state.pop("group", None)
    if group is not None:
        group.shutdown()  # without it the process aborts at exit ("terminate called without an active exception")
    _state.pop("store", None)


def _group():
    setup()
    return _state["group"]


def barrier() -> None:
    """Wait for every process (nothing to wait for in a one-process run)."""
    if world() > 1:
        _group().barrier().wait()


def _all_reduce(tensor, op: str = "sum") -> None:
    import torch.distributed as td

    options = td.AllreduceOptions()
    options.reduceOp = {"sum": td.ReduceOp.SUM, "min": td.ReduceOp.MIN, "max": td.ReduceOp.MAX}[op]
    _group().allreduce([tensor], options).wait()


def _broadcast(tensor, source: int = 0) -> None:
    import torch.distributed as td

    options = td.BroadcastOptions()
    options.rootRank, options.rootTensor = source, 0
    _group().broadcast([tensor], options).wait()


def gather(obj) -> list:
    """Every process's ``obj`` (JSON: numbers, strings, lists, dicts; tuples come back as lists), in rank
    order; ``[obj]`` in a one-process run. JSON, not pickle: nothing received can run code."""
    n = world()
    if n == 1:
        return [obj]
    import json

    import torch

    data = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(n)]
    _group().allgather([sizes], [torch.tensor([len(data)], dtype=torch.int64)]).wait()
    width = int(max(s.item() for s in sizes))
    padded = torch.zeros(width, dtype=torch.uint8)
    padded[: len(data)] = data
    out = [torch.zeros(width, dtype=torch.uint8) for _ in range(n)]
    _group().allgather([out], [padded]).wait()
    return [json.loads(o[: int(s.item())].numpy().tobytes()) for o, s in zip(out, sizes)]


def _coalesced(tensors: list, operation: Callable) -> None:
    """Run ``operation`` on flat buffers holding ``tensors`` (grouped by device and dtype, in buckets of
    ``BUCKET_ELEMENTS``), then copy the results back into ``tensors``."""
    import torch

    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for members in groups.values():
        bucket, size = [], 0
        for t in members + [None]:
            if t is not None and (not bucket or size + t.numel() <= BUCKET_ELEMENTS):
                bucket.append(t)
                size += t.numel()
                continue
            if bucket:
                flat = torch.cat([b.reshape(-1) for b in bucket])
                operation(flat)
                offset = 0
                for b in bucket:
                    b.copy_(flat[offset: offset + b.numel()].view_as(b))
                    offset += b.numel()
            bucket, size = ([t], t.numel()) if t is not None else ([], 0)


def broadcast_params(params: list) -> None:
    """Copy the main process's values of ``params`` to every process (as DDP does at the start)."""
    if world() == 1 or not params:
        return
    import torch

    with torch.no_grad():
        _coalesced([p.data for p in params], _broadcast)


def all_reduce_grads(params: list) -> None:
    """Sum the gradients of ``params`` over the processes, in place.

    A process without a gradient for a parameter (an empty share of a step, a branch it did not take)
    joins with zeros; a parameter no process has a gradient for keeps ``grad = None``, as in a one-process
    run (AdamW then leaves it alone, weight decay included).
    """
    if world() == 1 or not params:
        return
    import torch

    has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32)
    _all_reduce(has)
    grads = []
    for p, anyone in zip(params, has.tolist()):
        if not anyone:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads.append(p.grad)
    with torch.no_grad():
        _coalesced(grads, _all_reduce)


def check_in_sync(params: list, what: str = "parameters") -> None:
    """Raise when the processes' ``params`` differ (they must stay bitwise equal under data parallelism)."""
    if world() == 1 or not params:
        return
    import torch

    with torch.no_grad():
        mine = torch.stack([torch.stack([p.detach().double().sum(), p.detach().double().square().sum()]).cpu()
                            for p in params])
    low, high = mine.clone(), mine.clone()
    _all_reduce(low, "min")
    _all_reduce(high, "max")
    if not torch.equal(low, high):
        raise RuntimeError(f"the processes' {what} differ: data-parallel training lost sync "
                           f"(largest gap {float((high - low).abs().max()):.3g})")
