"""The policy methods, registered by name. Each module declares ``CONTRACT``, a ``MethodContract``
(``contracts.py``): its ``Config`` section (the recipe's ``policy.<name>``), ``train(run: MethodRun) -> dict``
and what it needs and returns. A new method is one module + one line here (or one ``register_method``
call, for a method defined outside the package)."""

from ...contracts import MethodContract, Registry
from . import cringe, dpo, grpo, kto, online_dpo, ppo, rejection_sampling, rloo

METHODS: Registry[MethodContract] = Registry("policy method", [
    dpo.CONTRACT,
    kto.CONTRACT,
    cringe.CONTRACT,
    rejection_sampling.CONTRACT,
    ppo.CONTRACT,
    rloo.CONTRACT,
    grpo.CONTRACT,
    online_dpo.CONTRACT,
])


def register_method(contract: MethodContract) -> MethodContract:
    """Add a method at run time: the recipe's ``policy`` section, ``policy train --method`` and the
    listings take it at once. Its name must be new."""
    return METHODS.add(contract)


def unregister_method(name: str) -> MethodContract:
    """Remove a method ``register_method`` added (the sections are rebuilt without it)."""
    return METHODS.remove(name)
