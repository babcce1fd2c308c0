"""Splitting a lean model's weights over the model axis of a device mesh.

A compiled model too big for one device is split by its hidden units: each
device of the mesh's "model" axis (`batching.make_mesh`) holds a slice of
every MLP's hidden units (`w_1` columns, `w_2` rows) and of every attention
sublayer's head dimensions (the query/key/value columns of `w_qkv`, the
matching rows of `w_out`). The batch is split over the "batch" axis as
before. XLA inserts the collectives, so outputs equal the unsharded ones::

    mesh = batching.make_mesh(model=2)
    runner = batching.BatchRunner(
        fast.outputs, weights, codec=codec, mesh=mesh,
        weight_sharding=sharding.weight_shardings(weights, mesh),
    )

An axis is split only where its length divides evenly over the model axis;
other arrays (embedding table, biases of outputs, gathers) are replicated.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tracr.transformer import batching, fast


def _split(mesh: Mesh, array: Optional[jax.Array], axis: int) -> Optional[NamedSharding]:
    """Split `array` along `axis` over the model axis, or replicate it."""
    if array is None:
        return None
    size = mesh.shape[batching.MODEL_AXIS]
    spec = [None] * array.ndim
    if array.ndim and array.shape[axis] % size == 0 and array.shape[axis] >= size:
        spec[axis] = batching.MODEL_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def _projection(mesh: Mesh, p: fast.Projection, axis: int) -> fast.Projection:
    """A dense projection split along `axis`; a gather (index, scale) replicated."""
    return fast.Projection(
        w=_split(mesh, p.w, axis), scale=_replicated(mesh, p.scale), index=p.index, width=p.width
    )


def _replicated(mesh: Mesh, array: Optional[jax.Array]) -> Optional[NamedSharding]:
    return None if array is None else NamedSharding(mesh, PartitionSpec())


def weight_shardings(weights: fast.LeanWeights, mesh: Mesh) -> Any:
    """A pytree of `NamedSharding`s matching `weights`, split over the model axis.

    Args:
      weights: lean weights (`AssembledTransformerModel.lean_weights()`).
      mesh: a mesh with a "model" axis (`batching.make_mesh`).

    Raises:
      ValueError: the mesh has no "model" axis.
    """
    if batching.MODEL_AXIS not in mesh.shape:
        raise ValueError(
            f"mesh has axes {tuple(mesh.shape)}; it needs a {batching.MODEL_AXIS!r} axis "
            "(build it with batching.make_mesh)."
        )
    sublayers = []
    for s in weights.sublayers:
        if isinstance(s, fast.LeanAttention):
            sublayers.append(
                dataclasses.replace(
                    s,
                    w_qkv=_split(mesh, s.w_qkv, 1),
                    b_qkv=_split(mesh, s.b_qkv, 0),
                    gathered=_projection(mesh, s.gathered, 1),
                    w_out=_projection(mesh, s.w_out, 0),
                    b_out=_replicated(mesh, s.b_out),
                )
            )
        else:
            sublayers.append(
                dataclasses.replace(
                    s,
                    w_1=_projection(mesh, s.w_1, 1),
                    b_1=_split(mesh, s.b_1, 0),
                    w_2=_projection(mesh, s.w_2, 0),
                    b_2=_replicated(mesh, s.b_2),
                )
            )
    return dataclasses.replace(
        weights,
        embedding=_replicated(mesh, weights.embedding),
        sublayers=tuple(sublayers),
        unembedding=_replicated(mesh, weights.unembedding),
    )
