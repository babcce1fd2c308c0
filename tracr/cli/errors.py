"""The CLI's errors: what the user got wrong (exit status 2) and model mismatches."""

from __future__ import annotations

import contextlib
from typing import Iterator

from tracr.utils import errors

EXIT_USAGE = 2

EXIT_BUG = 1


class UsageError(errors.TracrUserError):
    """A mistake in the command line: printed as one line, exit status 2."""


@contextlib.contextmanager
def _as_user_error() -> Iterator[None]:
    """ValueErrors raised on what the user gave (an input, a model file) are user errors.

    Elsewhere a ValueError or TypeError is a bug of tracr (see `main`).
    """
    try:
        yield
    except errors.TracrUserError:
        raise
    except ValueError as e:
        raise UsageError(str(e)) from e


class ModelMismatchError(Exception):
    """A compiled model that disagrees with the RASP evaluator: one line, exit status 1."""


# What the user got wrong: one line, exit status 2. Other exceptions are
# tracr's bugs: one line too, exit status 1, the traceback under --debug.
_USER_ERRORS = (errors.TracrUserError, NotImplementedError, OSError, ImportError)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
