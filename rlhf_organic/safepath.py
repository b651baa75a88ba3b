"""Paths built from names that come from data or settings, kept inside the folder they belong to.

``confined(root, *parts)`` joins ``parts`` onto ``root`` and refuses, with a clear ``UserError``, any
part that is absolute, holds a ``..`` component or a NUL byte, or leads (through a symbolic link
already on disk) out of ``root``. Use it wherever a value taken from data or from a grid (a cell
label, a user-supplied name, a file name read from an input) becomes part of an output path.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import UserError


class PathEscapeError(UserError):
    """A path built from a name would leave the folder it must stay in."""


def _check_part(root: Path, part: str, what: str) -> None:
    text = os.fspath(part)
    if not text:
        raise PathEscapeError(f"{what} is empty: it cannot name a path inside {root}")
    if "\x00" in text:
        raise PathEscapeError(f"{what} {text!r} contains a NUL byte")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute() or PureWindowsPath(text).drive:
        raise PathEscapeError(f"{what} {text!r} is an absolute path; it must stay inside {root}")
    pieces = text.replace("\\", "/").split("/")
    if ".." in pieces:
        raise PathEscapeError(f"{what} {text!r} contains '..'; it must stay inside {root}")


def confined(root: str | os.PathLike, *parts: str | os.PathLike, what: str = "name") -> Path:
    """``root / parts...``, refusing anything that would end up outside ``root``.

    Refused: an absolute part, a ``..`` component (``/`` and ``\\`` both count as separators), a NUL
    byte, an empty part, and a path that resolves outside ``root`` because a component already on disk
    is a symbolic link pointing elsewhere. ``what`` names the value in the error message (``"cell
    name"``, ``"user id"``). Returns the joined path unresolved (relative if ``root`` is).
    """
    root = Path(root)
    for part in parts:
        _check_part(root, part, what)
    path = root.joinpath(*parts)
    base = root.resolve()
    target = path.resolve()  # follows links that exist; the rest of the path is taken as written
    if target != base and base not in target.parents:
        raise PathEscapeError(
            f"{what} {os.fspath(Path(*parts))!r} leads outside {root} (to {target}, through a symbolic link)"
        )
    return path


__all__ = ["PathEscapeError", "confined"]
