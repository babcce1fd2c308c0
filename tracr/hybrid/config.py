"""What a hybrid model is made of: a compiled model, frozen, plus a learned stream.

A hybrid's residual stream is the compiled model's residual (width D, frozen,
computed exactly as the compiled program does) next to a learned residual of
width `d_learned`. Learned heads and MLPs sit at the same layers as the
compiled ones (and in `extra_layers` after them); they read the compiled
directions of the RASP expressions named in `reads` plus the learned stream,
and write only to the learned stream. A trainable readout maps the same
inputs to `num_classes` logits at every position::

    hspec = HybridSpec(compiled=model.spec, num_classes=5, reads=(sort.label,))

`use_compiled=False` gives the baseline of the same shape without the compiled
part: a plain transformer over the same token ids, with only the learned stream.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from tracr.transformer import spec as spec_lib

FORMAT = 1  # version of the JSON written by `to_json`


@dataclasses.dataclass(frozen=True)
class HybridSpec:
    """The structure of a hybrid model (no weights); see the module docstring.

    Attributes:
      compiled: the compiled model's spec (its input encoding is the hybrid's).
      num_classes: width of the readout (logits per position).
      reads: RASP labels of compiled expressions the learned parts may read.
      d_learned: width of the learned residual stream.
      num_heads, key_size: learned attention heads per layer and their width.
      mlp_hidden_size: hidden width of each learned MLP (0: no learned MLPs).
      extra_layers: learned-only layers after the compiled ones.
      use_compiled: False for the plain baseline (no compiled sublayers).
      learned_positions: give the learned stream its own position embedding.
        False leaves positions to the compiled `indices` directions (when
        read), which are defined at every length the compiled model takes;
        a learned embedding is untrained at lengths never seen in training.
    """

    compiled: spec_lib.ModelSpec
    num_classes: int
    reads: Tuple[str, ...] = ()
    d_learned: int = 32
    num_heads: int = 2
    key_size: int = 16
    mlp_hidden_size: int = 64
    extra_layers: int = 1
    use_compiled: bool = True
    learned_positions: bool = True

    def __post_init__(self):
        for name in (
            "num_classes",
            "d_learned",
            "num_heads",
            "key_size",
            "mlp_hidden_size",
            "extra_layers",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}.")
        if isinstance(self.reads, str) or not all(isinstance(r, str) for r in self.reads):
            raise TypeError(
                f"reads must be a tuple of RASP labels, got {self.reads!r}; e.g. "
                f"reads=({self.reads!r},) for one label."
            )
        for name in ("num_classes", "d_learned"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("num_heads", "key_size", "mlp_hidden_size", "extra_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.num_heads and not self.key_size:
            raise ValueError("key_size must be >= 1 when num_heads > 0.")
        if self.reads and not self.use_compiled:
            raise ValueError(
                f"reads={self.reads} names compiled expressions, but use_compiled=False has "
                "none; pass reads=() for the plain baseline."
            )
        object.__setattr__(self, "reads", tuple(self.reads))
        known = sorted(set(self.compiled.residual_names))
        for label in self.reads:
            if not self.compiled.directions_of(label):
                raise ValueError(
                    f"reads names {label!r}, which has no residual directions in the compiled "
                    f"model; it has {known}."
                )
        if self.num_layers < 1:
            raise ValueError("the hybrid has no layers: pass extra_layers >= 1.")

    @property
    def d_compiled(self) -> int:
        """Width of the frozen compiled stream (0 for the plain baseline)."""
        return self.compiled.d_model if self.use_compiled else 0

    @property
    def compiled_layers(self) -> int:
        return self.compiled.num_layers if self.use_compiled else 0

    @property
    def num_layers(self) -> int:
        return self.compiled_layers + self.extra_layers

    @property
    def read_indices(self) -> Tuple[int, ...]:
        """Compiled residual indices the learned parts read, in `reads` order."""
        return tuple(i for label in self.reads for i in self.compiled.directions_of(label))

    @property
    def max_len(self) -> int:
        """Longest input, BOS included."""
        return self.compiled.max_seq_len + 1

    def to_json(self, encode_value) -> Dict[str, Any]:
        """A JSON-able dict; `encode_value` encodes token values (as `tracr.io`)."""
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        doc["compiled"] = self.compiled.to_json(encode_value)
        doc["reads"] = list(self.reads)
        return {"format": FORMAT, **doc}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], decode_value) -> "HybridSpec":
        """The inverse of `to_json`.

        Raises:
          ValueError: a field is missing, unknown or of the wrong format.
        """
        check_document(doc, "hybrid spec")
        fields = {k: doc[k] for k in (f.name for f in dataclasses.fields(cls))}
        fields["compiled"] = spec_lib.ModelSpec.from_json(doc["compiled"], decode_value)
        fields["reads"] = tuple(str(r) for r in doc["reads"])
        return cls(**fields)


def check_document(doc: Mapping[str, Any], where: str) -> None:
    """Raises ValueError unless `doc` is a hybrid spec of this FORMAT with exactly its fields."""
    version = doc.get("format")
    if type(version) is not int or version != FORMAT:
        raise ValueError(
            f"{where}: 'format' is {version!r}, expected {FORMAT}; save it again with this "
            "version of tracr."
        )
    names = {f.name for f in dataclasses.fields(HybridSpec)}
    given = set(doc) - {"format"}
    if given != names:
        raise ValueError(
            f"{where}: missing fields {sorted(names - given)}, unknown fields "
            f"{sorted(given - names)}; save it again with save_hybrid."
        )
