"""Metrics that work on compiled models: logits with a certified temperature, KL and MSE.

A compiled categorical output is a one-hot of magnitude 1: softmax of it
gives the correct value a probability of about e/(e + O - 1), so KL divergence
and logit differences say little (ACDC dropped its KL metric for Tracr). The
magnitudes divided by a temperature fix that::

    t = certified_temperature(model)        # from the compiled margins
    z = logits(model, [[bos, "a", "b"]])    # [B, T, O] = magnitudes / t

The temperature is chosen so that the correct value's probability is at least
`1 - eps` (default 1e-6) wherever the output has a value: with margin m (the
correct magnitude minus the largest other) at every such position and O
values, p >= 1 / (1 + (O - 1) exp(-m / t)), so t = m / log((O - 1)(1 - eps) / eps)
suffices. m is measured on the model's domain and halved, so that the bound
still holds where lower precision (bfloat16) shrinks the margins; the tests
certify it with `tracr.compiler.certificate` in float32 and bfloat16.

Numerical outputs have no softmax: `logits` returns their values and the
default metric is the mean squared error.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tracr.circuits import domain as domain_lib
from tracr.circuits import forward
from tracr.transformer import assembled
from tracr.transformer import spec as spec_lib

EPS = 1e-6
SAFETY = 0.5  # the share of the measured margin the temperature relies on


def output_margin(
    model: assembled.AssembledTransformerModel, domain: Optional[domain_lib.Domain] = None
) -> float:
    """The smallest (top - runner-up) output magnitude over the domain's active positions.

    Raises:
      ValueError: the output is numerical, or has fewer than two values.
    """
    model_spec = _categorical_spec(model)
    weights = forward.weights_of(model, numpy=True)
    if domain is None:
        domain = domain_lib.make_domain(model_spec)
    ids = domain_lib.encode(model_spec, domain.inputs)
    out = forward.run(weights, ids).out[forward.UNEMBED]  # [B, T, O]
    top2 = np.sort(out, axis=-1)[..., -2:]
    active = active_positions(model_spec, ids, out)
    return float(np.min((top2[..., 1] - top2[..., 0])[active]))


def certified_temperature(
    model: assembled.AssembledTransformerModel,
    *,
    eps: float = EPS,
    margin: Optional[float] = None,
    domain: Optional[domain_lib.Domain] = None,
) -> float:
    """The temperature that gives the correct value probability >= 1 - eps.

    Args:
      model: a compiled model with a categorical output.
      eps: the probability mass left to the other values.
      margin: the margin to rely on; default `SAFETY` times `output_margin`.
      domain: where `output_margin` measures (default: `domain.make_domain`).
    """
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}.")
    if margin is None:
        margin = SAFETY * output_margin(model, domain)
    if margin <= 0:
        raise ValueError(f"The margin must be > 0, got {margin}: the output is not decided.")
    width = model.spec.output.width
    return margin / math.log((width - 1) * (1 - eps) / eps)


def _categorical_spec(model) -> spec_lib.ModelSpec:
    model_spec = model.spec
    if model_spec is None:
        raise ValueError("metrics need model.spec (a model compiled or loaded by this tracr).")
    if not model_spec.output.categorical or model_spec.output.width < 2:
        raise ValueError(
            f"The output {model_spec.output.label!r} is numerical or has one value: it has no "
            "margin or temperature; use mse."
        )
    return model_spec


def active_positions(model_spec: spec_lib.ModelSpec, ids: np.ndarray, out: Any) -> np.ndarray:
    """[B, T] bool: real positions after BOS where the output has a value
    (categorical: some magnitude >= `spec.ACTIVE_THRESHOLD`)."""
    active = domain_lib.real_positions(model_spec, ids).copy()
    active[:, 0] = False
    if model_spec.output.categorical:
        active &= np.asarray(out).max(axis=-1) >= spec_lib.ACTIVE_THRESHOLD
    return active


def logits(
    model: assembled.AssembledTransformerModel,
    inputs: Sequence[Sequence[Any]],
    temperature: Optional[float] = None,
) -> np.ndarray:
    """[B, T, O] output magnitudes / temperature for inputs that start with BOS.

    Inputs of different lengths are padded with PAD (masked: padding changes
    no real position). `temperature` defaults to `certified_temperature(model)`;
    numerical outputs are returned as they are.
    """
    model_spec = model.spec
    ids = encode_with_bos(model_spec, inputs)
    out = forward.run(forward.weights_of(model, numpy=True), ids).out[forward.UNEMBED]
    if not model_spec.output.categorical:
        return out
    t = certified_temperature(model) if temperature is None else temperature
    return out / np.float32(t)


def encode_with_bos(model_spec: spec_lib.ModelSpec, inputs: Sequence[Sequence[Any]]) -> np.ndarray:
    """[B, T] ids of inputs that start with the BOS token.

    Raises:
      ValueError: an input does not start with BOS.
    """
    bos = model_spec.input.bos_token
    for x in inputs:
        if not len(x) or x[0] != bos:
            raise ValueError(f"Each input must start with the BOS token {bos!r}; got {list(x)}.")
    return domain_lib.encode(model_spec, [tuple(x[1:]) for x in inputs])


def log_softmax(z):
    xp = forward.array_module(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))


def kl_divergence(clean, other, mask):
    """Mean over `mask` [B, T] positions of KL(softmax(clean) || softmax(other)), in nats."""
    xp = forward.array_module(clean, other)
    lp, lq = log_softmax(clean), log_softmax(other)
    kl = (xp.exp(lp) * (lp - lq)).sum(axis=-1)
    return xp.where(mask, kl, 0.0).sum() / xp.maximum(mask.sum(), 1)


def mse(clean, other, mask):
    """Mean over `mask` [B, T] positions of the squared difference (summed over outputs)."""
    xp = forward.array_module(clean, other)
    err = ((clean - other) ** 2).sum(axis=-1)
    return xp.where(mask, err, 0.0).sum() / xp.maximum(mask.sum(), 1)


def default_metric(model_spec: spec_lib.ModelSpec) -> Callable:
    """KL divergence for a categorical output, MSE for a numerical one."""
    return kl_divergence if model_spec.output.categorical else mse
