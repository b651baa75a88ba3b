"""The trust schemes, by name. A new scheme is one module here plus one entry in ``_MODULES``."""

from . import bayesian, combined, crowd, per_example, per_user, per_user_example, safety_filter, soft_purr, uniform

_MODULES = (uniform, safety_filter, per_example, per_user, per_user_example, soft_purr, bayesian, crowd, combined)
SCHEMES = {m.NAME: m for m in _MODULES}
