"""Fully sharded data parallelism (torch FSDP2, ``fully_shard``) for one ``training.fit`` call.

Under ``accelerate launch`` with an FSDP config (``recipes/accelerate/fsdp_*.yaml``; accelerate sets
``ACCELERATE_USE_FSDP`` and ``FSDP_*``), ``training.fit`` hands the model it trains to ``shard``: every
decoder layer (the classes the model lists in ``_no_split_modules``, or ``fsdp_transformer_layer_cls_to_wrap``)
and then the whole model become FSDP2 units, so each of the N processes keeps 1/N of every parameter,
the frozen base weights included. Before a unit runs, FSDP all-gathers its parameters; after backward it
reduce-scatters their gradients, **summed** (not averaged: ``fit`` already scales each process's loss by its
share of the step, as in the data-parallel path), so each process ends a step holding its shard of the
step's gradient. Clipping, AdamW and the schedule then run on the shards.

When ``fit`` ends, ``Sharded.unshard`` gathers the trained values, puts them back into the model's original
``Parameter`` objects and takes FSDP off the model again (hooks, classes, per-module state), so that
evaluation, sampling and saving after training run exactly as in a data-parallel run. That last part
reaches into FSDP2's internals (torch has no public "undo ``fully_shard``"); ``unshard`` checks that
nothing of FSDP is left on the model and stops with an error if a torch version changed them.

FSDP2's ``DeviceMesh`` needs torch's default process group; it exists only while the sharded ``fit`` runs
(``distributed.open_default_group``), so transformers behaves as in one process everywhere else
(``docs/distributed.md``).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

import torch
from torch import nn

from . import distributed
from .errors import UserError

_last_report: dict = {}


def take_report() -> dict | None:
    """What the last sharded ``fit`` of this process sharded (``Sharded.report``), once; None if none."""
    report = dict(_last_report) or None
    _last_report.clear()
    return report


def layer_modules(model: nn.Module, classes: list[str] | None) -> list[nn.Module]:
    """The submodules that become their own FSDP units, innermost first: instances of ``classes`` (class
    names), or of the ``_no_split_modules`` of the transformers model inside ``model`` when None."""
    if classes is None:
        names: set[str] = set()
        for module in model.modules():
            names.update(getattr(module, "_no_split_modules", None) or ())
        if not names:
            raise UserError(
                f"FSDP cannot tell the layers of {type(model).__name__} (its transformers model lists no "
                "_no_split_modules): name them with fsdp_transformer_layer_cls_to_wrap in the accelerate config, "
                "or set fsdp_auto_wrap_policy: NO_WRAP to shard the model as one unit")
    else:
        names = set(classes)
    found = [m for m in model.modules() if m is not model and type(m).__name__ in names]
    if classes is not None:
        missing = names - {type(m).__name__ for m in found}
        if missing:
            raise UserError(f"fsdp_transformer_layer_cls_to_wrap names {', '.join(sorted(missing))}, which "
                            f"{type(model).__name__} does not contain")
    # a module nested in another has fewer submodules than it: smallest first shards the inner ones first,
    # as fully_shard needs; layers of one size keep the model's order
    return sorted(found, key=lambda m: sum(1 for _ in m.modules()))


@dataclass
class Sharded:
    """A model sharded by ``shard``: ``params`` are the sharded stand-ins of the trainable parameters,
    in the caller's order."""

    model: nn.Module
    params: list
    mesh: object
    report: dict
    _slots: list = field(default_factory=list)  # (module, attribute, original Parameter) of every parameter
    _owns_group: bool = False
    _done: bool = False

    def full(self, tensor: torch.Tensor) -> torch.Tensor:
        """The whole of a (possibly sharded) tensor, on the CPU. A collective: every process calls it,
        for the same tensors in the same order."""
        from torch.distributed.tensor import DTensor

        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        return tensor.detach().cpu().contiguous()

    def place(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``value`` (a whole tensor) cut to this process's shard, shaped as ``like`` (no communication)."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        if not isinstance(like, DTensor):
            return value.to(like.device)
        return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)

    def grad_norm(self, max_norm: float) -> float:
        """Clip the gradients of ``params`` to ``max_norm`` (the norm over all shards); returns that norm."""
        from torch.distributed.tensor import DTensor

        norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        return float(norm)

    def unshard(self) -> None:
        """Put the trained values back into the model's own parameters and take FSDP off the model.
        Every process calls it (it gathers every sharded parameter)."""
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor

        if self._done:
            return
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()  # every module holds its sharded parameters again
        with torch.no_grad():
            gathered: dict[int, torch.Tensor] = {}
            for module, name, _ in self._slots:  # the same order everywhere: one all-gather per parameter
                current = module._parameters[name]
                if id(current) not in gathered:
                    gathered[id(current)] = (current.full_tensor() if isinstance(current, DTensor) else current.detach())
            _remove_fsdp(self.model)
            for module, name, original in self._slots:
                current = module._parameters[name]
                original.data = gathered[id(current)]
                original.grad = None
                module._parameters[name] = original
        self._done = True
        self.close()
        gc.collect()  # FSDP's state objects refer to each other: free the shards and buffers now, before evaluation
        left = [n for n, p in self.model.named_parameters() if isinstance(p, DTensor)]
        if left:
            raise RuntimeError(f"FSDP left sharded parameters on the model after training ({left[:3]}): this torch "
                               "version's FSDP internals differ from what rlhf_organic expects")

    def close(self) -> None:
        """Drop torch's default process group if ``shard`` made it (also after a failure, without talking)."""
        if self._owns_group:
            distributed.close_default_group()
            self._owns_group = False


def shard(model: nn.Module, params: list, settings: distributed.FsdpSettings) -> Sharded:
    """Shard ``model`` (whose trainable parameters are ``params``) over the processes with FSDP2."""
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import FSDPModule, fully_shard
    from torch.distributed.tensor import DTensor

    where: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        where.setdefault(id(p), name)
    outside = [i for i, p in enumerate(params) if id(p) not in where]
    if outside:
        raise UserError(f"FSDP shards the model being trained, but {len(outside)} of its trainable parameters live "
                        "outside it; this training step does not support FSDP yet (launch it with a DDP config)")
    if any(isinstance(p, DTensor) for p in model.parameters()):
        raise RuntimeError("the model is already sharded by FSDP")
    trainable = {p.dtype for p in params}
    if len(trainable) > 1:
        raise UserError(f"FSDP here needs the trainable parameters in one dtype, got {', '.join(sorted(map(str, trainable)))} "
                        "(with dtype bfloat16 / float16, PEFT keeps the LoRA weights in float32 while other trained "
                        "weights keep the base's dtype): train with dtype float32 under FSDP, or launch with a DDP config")
    slots = [(m, n, p) for m in model.modules() for n, p in m._parameters.items() if p is not None]
    names = [where[id(p)] for p in params]
    total = sum(p.numel() for p in {id(p): p for _, _, p in slots}.values())

    owns = distributed.open_default_group()
    try:
        import torch.distributed as td

        mesh = DeviceMesh.from_group(td.group.WORLD, distributed.device().type)
        layers = layer_modules(model, settings.layer_classes) if settings.wrap_layers else []
        for layer in layers:
            fully_shard(layer, mesh=mesh, reshard_after_forward=settings.reshard_after_forward)
        # the rest of the model: by default (None) not freed after forward, since backward needs it first
        fully_shard(model, mesh=mesh, reshard_after_forward=None if settings.reshard_after_forward else False)
        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.set_gradient_divide_factor(1.0)  # a sum: fit scales each process's loss by its share
                module.set_force_sum_reduction_for_comms(True)  # gloo has no AVG / PREMUL_SUM reduction
                module.set_reduce_scatter_unused_params(True, recurse=False)  # every process joins every reduction
        with torch.no_grad():
            for _, _, original in slots:  # FSDP copied the values into its shards: free the whole tensors
                original.data = torch.empty(0, dtype=original.dtype, device=original.device)
        current = dict(model.named_parameters(remove_duplicate=False))
        sharded_params = [current[n] for n in names]
        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in {id(p): p for p in current.values()}.values())
        counts = distributed.gather(local)
    except BaseException:
        if owns:
            distributed.close_default_group()
        raise
    report = {"processes": distributed.world(), "parameter_elements": total, "local_parameter_elements": counts,
              "units": len(layers) + 1, "reshard_after_forward": settings.reshard_after_forward}
    _last_report.clear()
    _last_report.update(report)
    return Sharded(model, sharded_params, mesh, report, slots, owns)


def _remove_fsdp(model: nn.Module) -> None:
    """Take FSDP2 off every module of ``model``: its forward and state-dict hooks, its class and its
    per-module state (the parameters are put back by the caller)."""
    from torch.distributed import _composable_state
    from torch.distributed._composable.contract import REGISTRY_KEY, STATE_KEY
    from torch.distributed.fsdp import FSDPModule

    for module in list(model.modules()):
        if isinstance(module, FSDPModule):
            state = module._get_fsdp_state()
            for handle in {id(h): h for h in (state._pre_forward_hook_handle, state._post_forward_hook_handle)}.values():
                handle.remove()
            for group in state._fsdp_param_groups:
                for hooks in (group._module_to_pre_save_state_dict_hook_handle, group._module_to_pre_load_state_dict_hook_handle):
                    for handle in hooks.values():
                        handle.remove()
                    hooks.clear()
                for fsdp_param in group.fsdp_params:
                    fsdp_param._post_load_hook_handle.remove()
            mro = type(module).__mro__
            if len(mro) < 3 or mro[1] is not FSDPModule:
                raise RuntimeError(f"unexpected FSDP class layout {mro[:3]}: this torch version's FSDP internals differ "
                                   "from what rlhf_organic expects")
            module.__class__ = mro[2]
            _composable_state._module_state_mapping.pop(module, None)
            states = module.__dict__.get(STATE_KEY)
            if isinstance(states, dict):
                for key in [k for k, v in states.items() if v is state]:
                    del states[key]
            registry = module.__dict__.get(REGISTRY_KEY)
            if isinstance(registry, dict):
                registry.pop("fully_shard", None)
        for flag in ("_is_fsdp_managed_module", "_fsdp_use_orig_params"):
            module.__dict__.pop(flag, None)
    if any(isinstance(m, FSDPModule) or _composable_state._get_module_state(m) is not None or fsdp_hooks(m)
           for m in model.modules()):
        raise RuntimeError("FSDP is still attached to the model after training: this torch version's FSDP internals "
                           "differ from what rlhf_organic expects")


def fsdp_hooks(module: nn.Module) -> list:
    """The hooks FSDP left on ``module`` (forward, state-dict and load hooks whose code is FSDP's)."""
    found = []
    for hooks in (module._forward_pre_hooks, module._forward_hooks, module._state_dict_pre_hooks,
                  module._load_state_dict_pre_hooks, module._load_state_dict_post_hooks):
        for hook in hooks.values():
            code = getattr(hook, "func", hook)  # functools.partial
            code = getattr(code, "hook", code)  # torch's load_state_dict pre-hook wrapper
            if (getattr(code, "__module__", "") or "").startswith("torch.distributed.fsdp"):
                found.append(hook)
    return found
