"""Small helpers for looking at arrays while debugging compiled models.

Example::

    print_arrays([np.eye(2), np.ones(2)], labels=["eye", "ones"], colwidth=6)

prints each array under its label, rows on separate lines, every number
right-aligned in a column ``colwidth`` characters wide.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np


def _format(value: Any, colwidth: int) -> str:
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.4g}"
    else:
        text = str(value)
    return (" " + text).rjust(colwidth)  # the space keeps wide values apart


def print_arrays(
    arrays: Sequence[Any], labels: Optional[Sequence[str]] = None, colwidth: int = 12
) -> None:
    """Prints arrays (scalars, vectors or matrices) one after another.

    Args:
      arrays: the arrays to print; anything ``np.asarray`` accepts.
      labels: an optional label per array, printed above it.
      colwidth: the width of each column of numbers.

    Raises:
      ValueError: if ``labels`` doesn't have one entry per array, or an array
        has more than two dimensions.
    """
    arrays = list(arrays)
    if labels is not None and len(labels) != len(arrays):
        raise ValueError(
            f"print_arrays got {len(arrays)} arrays but {len(labels)} labels; "
            f"pass one label per array or none."
        )
    for i, array in enumerate(arrays):
        a = np.asarray(array)
        if a.ndim > 2:
            raise ValueError(
                f"print_arrays prints scalars, vectors and matrices; array {i} has shape "
                f"{a.shape}. Slice it to two dimensions first."
            )
        if labels is not None:
            print(labels[i])
        rows = np.atleast_2d(a)
        for row in rows:
            print("".join(_format(v, colwidth) for v in row))
