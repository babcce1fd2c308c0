"""Compiled programs inside trained models (issue 19).

- `config.HybridSpec`: a compiled model (frozen) plus a learned stream.
- `model`: the pure forward pass and parameter init.
- `training`: optax training with the compiled groups frozen.
- `finetune`: gradient steps on a compiled model's own lean weights.
- `saving`: npz + JSON, no pickle.
- `picture`: compiled vs learned components (matplotlib, imported lazily).

Needs the `train` extra (optax, tqdm) for training and fine-tuning.
"""

from tracr.hybrid.config import HybridSpec
from tracr.hybrid.model import HybridOutput, forward_fn, init_params, is_learned

__all__ = ["HybridSpec", "HybridOutput", "forward_fn", "init_params", "is_learned"]
