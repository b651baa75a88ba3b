"""Contracts: what a policy method or a trust scheme declares about itself, in one frozen record.

A method's module ends with ``CONTRACT = MethodContract(...)`` (its name, its settings section, its
``train`` function, whether it needs a reward model, whether it samples from the policy, whether it
runs under FSDP, what its result holds); a scheme's with ``CONTRACT = SchemeContract(...)``. The
registries (``policy/methods/__init__.py``, ``trust/schemes/__init__.py``) are one line per contract.
Everything that used to list methods or schemes by hand is built from the registries: the recipe's
``policy`` and ``trust`` sections (the ``method`` / ``scheme`` choice and one sub-section each, hence
the recipe's JSON schema), the command line's help and listings, the FSDP refusal, the early
reward-model check and the check of a method's result.

``register_method`` / ``register_scheme`` add a contract at run time (a method defined outside the
package); the sections are rebuilt in place, so that ``PolicySection``, ``TrustSection`` and ``Recipe``
stay the same classes everyone imported. A leaf module: it imports nothing from the package's stages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .settings import did_you_mean

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _check_name(kind: str, name: str) -> None:
    if not name or not name[0].isalpha() or not set(name) <= _NAME_CHARS:
        raise ValueError(f"{kind} name {name!r}: lower-case letters, digits and _, starting with a letter")


@dataclass(frozen=True)
class MethodContract:
    """What a policy method needs and returns. ``train(run: MethodRun) -> dict`` gets the model, the
    settings and the weighted data (``policy/train.py``) and returns ``history`` (one dict per optimizer
    step) plus the keys named in ``returns``."""

    name: str
    description: str  # one line: the CLI listing and the recipe schema's description of ``policy.<name>``
    settings: type[BaseModel]  # the recipe's ``policy.<name>`` section (a ``Section``)
    train: Callable[[Any], dict[str, Any]]
    # a reward model: True (always), False (never; it may still score the evaluation), or a function of the
    # method's settings saying whether these settings need one, with ``reward_model_when`` naming those settings
    needs_reward_model: bool | Callable[[Any], bool] = False
    reward_model_when: str = ""
    generates: bool = False  # samples replies from the policy while training (at least with some settings)
    online: bool = False  # rounds of sample-then-train; ``train.keep_optimizer`` applies
    fsdp: bool | str = True  # True: trains through the shared loop under FSDP; else the reason it cannot
    returns: tuple[str, ...] = ("items", "weight_sum")  # keys of train()'s result besides ``history``

    def __post_init__(self) -> None:
        _check_name("method", self.name)
        if self.fsdp is False or self.fsdp == "":
            raise ValueError(f"method {self.name}: fsdp is True or the reason it does not run under FSDP")
        if callable(self.needs_reward_model) and not self.reward_model_when:
            raise ValueError(f"method {self.name}: a settings-dependent reward model needs reward_model_when")
        if "history" in self.returns:
            raise ValueError(f"method {self.name}: 'history' is always returned; list only the other keys")

    @property
    def supports_fsdp(self) -> bool:
        return self.fsdp is True

    def requires_reward(self, settings: Any) -> bool:
        """Whether the method, with ``settings`` (its ``policy.<name>`` section), needs a reward model."""
        need = self.needs_reward_model
        return bool(need(settings)) if callable(need) else need

    def reward_use(self) -> str:
        """How the method uses a reward model, in a few words (listings, help)."""
        if callable(self.needs_reward_model):
            return f"with {self.reward_model_when}"
        return "always" if self.needs_reward_model else "no"

    def check_result(self, result: Any) -> None:
        """A method's result holds ``history`` (a list) and every key its contract names: a failure is a bug."""
        missing = [key for key in ("history", *self.returns) if not isinstance(result, dict) or key not in result]
        if missing or not isinstance(result["history"], list):
            raise RuntimeError(f"policy method {self.name} broke its contract: its result lacks "
                               f"{', '.join(missing) or 'a history list'} (MethodContract.returns)")


@dataclass(frozen=True)
class SchemeContract:
    """What a trust scheme needs and returns. ``compute(data, settings, ctx) -> TrustResult`` gets the
    feedback (``trust/data.py``), the scheme's settings and the context that holds the held-out reference
    (``trust/scheme.py``); it returns trust per user and a weight per label, both in [0, 1]."""

    name: str
    description: str
    settings: type[BaseModel]  # the recipe's ``trust.<name>`` section (a ``SchemeConfig``)
    compute: Callable[[Any, Any, Any], Any]
    reference: bool = True  # asks the k-fold reference (``ctx.held_out``) for its predictions
    message_flags: bool = False  # reads the users' own messages' safety flags
    judges_users: bool = True  # scores users from their labels (False: labels need no user id)
    label_weights: bool = True  # may weigh a label apart from its user's trust (False: weight = the user's trust)
    tune: tuple[str, tuple[float, ...]] | None = None  # (setting, candidates) that select_on_gold chooses from

    def __post_init__(self) -> None:
        _check_name("scheme", self.name)
        if self.tune is not None and self.tune[0] not in self.settings.model_fields:
            raise ValueError(f"scheme {self.name}: tune names {self.tune[0]!r}, which is not one of its settings")

    def needs(self) -> list[str]:
        """What the scheme reads besides the labels, in words (listings)."""
        needs = [what for what, used in (("the k-fold reference", self.reference), ("message safety flags", self.message_flags))
                 if used]
        if self.tune:
            needs.append(f"clean labels, when there are enough, to choose {self.tune[0]} (select_on_gold)")
        return needs


C = TypeVar("C", MethodContract, SchemeContract)


class Registry(Mapping[str, C], Generic[C]):
    """Name -> contract, in registration order. ``add`` / ``remove`` tell the listeners (the sections built
    from the registry), which rebuild themselves."""

    def __init__(self, kind: str, contracts: Iterable[C] = ()):
        self.kind = kind
        self._contracts: dict[str, C] = {}
        self._listeners: list[Callable[[], None]] = []
        for contract in contracts:
            self._put(contract)

    def __getitem__(self, name: str) -> C:
        try:
            return self._contracts[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}{did_you_mean(name, self._contracts)}; "
                           f"{self.kind}s: {', '.join(self._contracts)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._contracts)

    def __len__(self) -> int:
        return len(self._contracts)

    def _put(self, contract: C) -> None:
        if contract.name in self._contracts:
            raise ValueError(f"a {self.kind} named {contract.name!r} is already registered")
        self._contracts[contract.name] = contract

    def add(self, contract: C) -> C:
        self._put(contract)
        self._changed()
        return contract

    def remove(self, name: str) -> C:
        contract = self[name]
        del self._contracts[name]
        self._changed()
        return contract

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change (it rebuilds what is built from the registry)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def sentence(self) -> str:
        """The names as a phrase: 'dpo, kto or ppo'."""
        names = list(self._contracts)
        return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def set_fields(model: type[BaseModel], fields: Mapping[str, tuple[Any, Any]], drop: Iterable[str] = ()) -> None:
    """Replace, add or ``drop`` fields of ``model`` in place and rebuild its validator and schema. In place,
    so that the class everyone imported (and every model that holds it as a field, after its own
    ``model_rebuild(force=True)``) takes the change. Fields keep their order; new ones go last."""
    current = model.__pydantic_fields__
    for name in drop:
        current.pop(name, None)
    for name, (annotation, info) in fields.items():
        current[name] = FieldInfo.from_annotated_attribute(annotation, info)
    model.model_rebuild(force=True)
