"""Helpers for running user functions whose domain we can't see in advance.

The compiler applies a program's ``Map``/``SequenceMap`` functions to every
value an input *could* take, including combinations that never happen at run
time (``1 / 0`` when a divisor of zero is impossible in practice). Such
arithmetic errors mean "no output for this input", not a broken program::

    safe_div = ignoring_arithmetic_errors(lambda x, y: x / y)
    safe_div(1, 0)   # -> None
    safe_div(1, 2)   # -> 0.5
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

_LOG = logging.getLogger(__name__)


def ignoring_arithmetic_errors(fun: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps ``fun`` so that an ``ArithmeticError`` it raises gives ``None``.

    Args:
      fun: any callable.

    Returns:
      A callable with the same arguments that returns ``fun``'s result, or
      ``None`` where ``fun`` raised an ``ArithmeticError`` (``ZeroDivisionError``,
      ``OverflowError``, ...). Other exceptions propagate.
    """

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fun(*args, **kwargs)
        except ArithmeticError as e:
            log_ignored_arithmetic_error(fun, args, e)
            return None

    return wrapped


def log_ignored_arithmetic_error(fun: Callable[..., Any], args: Any, error: Exception) -> None:
    """Warns, with Tracr's wording, that ``fun`` raised ``error`` on ``args`` and is ignored.

    Silent dropping hides real bugs in a program's functions; the warning lets users see it.
    """
    _LOG.warning(
        "Encountered arithmetic error in function %s for input %s. "
        "Assuming this input will never occur. (%r)",
        getattr(fun, "__name__", repr(fun)),
        args,
        error,
    )


class TracrUserError(ValueError):
    """A mistake in what the user gave (a program, an input, a file), not a bug of tracr.

    The message names the argument or expression and says how to fix it; the
    CLI prints it as one line. A ValueError, so callers catching that keep working.
    """
