"""The trust schemes, by name. Each module declares ``CONTRACT``, a ``SchemeContract`` (``contracts.py``):
its ``Config`` section (the recipe's ``trust.<name>``), ``compute(data, cfg, ctx) -> TrustResult`` and what
it needs and returns. A new scheme is one module here plus one line below (or one ``register_scheme``
call, for a scheme defined outside the package)."""

from ...contracts import Registry, SchemeContract
from . import bayesian, combined, crowd, per_example, per_user, per_user_example, safety_filter, soft_purr, uniform

SCHEMES: Registry[SchemeContract] = Registry("trust scheme", [
    uniform.CONTRACT,
    safety_filter.CONTRACT,
    per_example.CONTRACT,
    per_user.CONTRACT,
    per_user_example.CONTRACT,
    soft_purr.CONTRACT,
    bayesian.CONTRACT,
    crowd.CONTRACT,
    combined.CONTRACT,
])


def register_scheme(contract: SchemeContract) -> SchemeContract:
    """Add a scheme at run time: the recipe's ``trust`` section, ``trust --scheme`` and ``--list-schemes``
    take it at once. Its name must be new."""
    return SCHEMES.add(contract)


def unregister_scheme(name: str) -> SchemeContract:
    """Remove a scheme ``register_scheme`` added (the sections are rebuilt without it)."""
    return SCHEMES.remove(name)
