"""Compressed residual streams for compiled models (Tracr paper, section 5).

A compiled model's residual stream has one dimension per value of every
variable. This package runs a compiled model through a narrower residual of
width d, `x_D = x_d @ w` on every read and `x_d = x_D @ w.T` on every write
(`tracr.transformer.compressed_model.CompressedTransformer`):

- `running`: `CompressedModel(model, w)` with `apply`/`forward`/`params`
  like the assembled model, `compressed_params`, `compressed_forward`, and
  `fold_params` (w multiplied into the weights: a plain width-d model);
- `exact`: `exact_compression(model)`, the orthonormal basis of the states
  the residual actually takes, which is exact on every input it was built on;
- `learned`: `learn_compression(...)`, w trained with optax on the paper's
  objective (output loss plus per-sublayer residual MSE), and
  `evaluate_compression` (token accuracy and per-layer error).

It sits above `compiler` and `transformer` and nothing in them imports it;
`learned` needs the `train` extra (optax, tqdm), imported when training.
"""

from tracr.compression.exact import ExactCompression, domain_inputs, exact_compression
from tracr.compression.learned import (
    CompressionReport,
    CompressionTrainer,
    LearnedCompression,
    TrainingConfig,
    evaluate_compression,
    learn_compression,
    split_inputs,
)
from tracr.compression.running import (
    CompressedModel,
    compressed_forward,
    compressed_params,
    fold_params,
)

__all__ = [
    "CompressedModel",
    "CompressionReport",
    "CompressionTrainer",
    "ExactCompression",
    "LearnedCompression",
    "TrainingConfig",
    "compressed_forward",
    "compressed_params",
    "domain_inputs",
    "evaluate_compression",
    "exact_compression",
    "fold_params",
    "learn_compression",
    "split_inputs",
]
