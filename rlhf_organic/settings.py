"""Settings helpers every section and stage config uses: ``key=value`` overrides, validation with
readable errors (the file and line of each bad key, the valid keys, the nearest one), and
``did_you_mean``. A leaf module: it imports nothing from the package's sections, so any section can
import it (``recipe.py`` assembles the sections and imports them all)."""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from .errors import RecipeError


def did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section class found by following ``loc`` from ``model`` (None if it leaves the models)."""
    for key in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or key not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[key].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X."""
    while get_origin(annotation) in (Union, Annotated) or str(get_origin(annotation)) == "typing.Union":
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation


def key_lines(text: str) -> dict[tuple, int]:
    """1-based line of every key path in a YAML text, for error messages."""
    lines: dict[tuple, int] = {}

    def walk(node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[path + (key.value,)] = key.start_mark.line + 1
                walk(value, path + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[path + (i,)] = value.start_mark.line + 1
                walk(value, path + (i,))

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), ())
    except yaml.YAMLError:
        pass
    return lines


def set_by(loc: tuple, items: dict[tuple, str], key_lines: dict[tuple, int]) -> str | None:
    """Which of ``items`` (key path -> its text, e.g. the ``key=value`` typed on the command line) a
    problem at ``loc`` comes from, or None.

    An item is to blame when it set ``loc`` or a section above it, or when it created ``loc`` (an
    unknown key such as ``outptu`` from ``outptu.dir=x``, which the file does not have). The last such
    item wins, as its value does."""
    for path, item in reversed(items.items()):
        if loc[: len(path)] == path:
            return item
    if loc and loc not in key_lines:
        for path, item in reversed(items.items()):
            if path[: len(loc)] == loc:
                return item
    return None


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel],
    locate: Callable[[tuple], tuple[str, str]],
) -> list[str]:
    """One readable line per problem: where (``locate(loc)``: file:line or the command-line item, and
    the key path to print), what, and what would be valid."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        where, path = locate(loc)
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = sorted(parent.model_fields) if parent else []
            msg = f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), valid)}; valid keys: {', '.join(valid)}"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] != "missing" and not isinstance(err.get("input"), (dict, BaseModel)):
                msg += f" (got {err.get('input')!r})"
            if err["type"] == "literal_error":
                msg += did_you_mean(err.get("input"), re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        problems.append(f"  {where}: {path}: {msg}")
    return problems


def locator(source: str, key_lines: dict[tuple, int], overridden: dict[tuple, str]) -> Callable[[tuple], tuple[str, str]]:
    """``locate`` for settings read from ``source`` (a file, or a name such as "policy settings") with
    command-line items applied: the item as typed, else the file and line of the key, else the file."""

    def locate(loc: tuple) -> tuple[str, str]:
        path = ".".join(str(p) for p in loc) or "(top level)"
        item = set_by(loc, overridden, key_lines)
        if item is not None:
            return f"command line: {item}", path
        return (f"{source}:{key_lines[loc]}" if loc in key_lines else source), path

    return locate


def format_validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    source: str,
    key_lines: dict[tuple, int] | None = None,
    overridden: dict[tuple, str] | None = None,
) -> str:
    """Every problem of ``exc``, one line each, under ``SOURCE: invalid settings``; ``overridden`` maps
    each key path set on the command line to its ``key=value`` text."""
    problems = validation_problems(exc, model, locator(source, key_lines or {}, overridden or {}))
    return f"{source}: invalid settings\n" + "\n".join(problems)


def typed_overrides(items: list[str], parsed: list[tuple[tuple[str, ...], Any]]) -> dict[tuple, str]:
    """Key path -> the ``key=value`` item as typed, for error messages (``parsed`` from ``parse_overrides``)."""
    return {path: item.strip() for item, (path, _) in zip(items, parsed)}


def parse_overrides(overrides: list[str]) -> list[tuple[tuple[str, ...], Any]]:
    """``a.b=value`` strings -> (key path, YAML-typed value)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not key=value (e.g. data.simulate.users=100)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise RecipeError(f"override {item!r}: value is not valid YAML: {exc}") from None
        parsed.append((tuple(key.strip().split(".")), value))
    return parsed


def apply_overrides(data: dict, overrides: list[tuple[tuple[str, ...], Any]]) -> dict:
    """A copy of ``data`` with each (path, value) set, creating sections as needed."""
    data = copy.deepcopy(data)
    for path, value in overrides:
        node = data
        for i, key in enumerate(path[:-1]):
            if not isinstance(node.get(key, {}), dict):
                raise RecipeError(f"override {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


M = TypeVar("M", bound=BaseModel)


def validate_settings(model: type[M], data: Any, source: str, **context) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, model, source, **context)) from None
