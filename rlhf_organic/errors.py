"""Errors the CLI turns into a clear message and a non-zero exit, without a traceback."""


class UserError(Exception):
    """Something the user can fix: bad recipe, bad input, missing file."""


class RecipeError(UserError):
    """A recipe (or a command-line override) does not validate."""


class InputError(UserError):
    """An input record cannot be used; raised at the first one in --strict mode."""
