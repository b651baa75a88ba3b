"""The policy methods, registered by name. Each module has ``DESCRIPTION``, a ``Config`` section (the
recipe's ``policy.<name>``) and ``train(run: MethodRun) -> dict``. A new method is one module + one line."""

from . import cringe, dpo, kto, ppo, rejection_sampling

METHODS = {"dpo": dpo, "kto": kto, "cringe": cringe, "rejection_sampling": rejection_sampling, "ppo": ppo}
