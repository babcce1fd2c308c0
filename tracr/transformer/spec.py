"""One frozen description of a compiled model: what the compiler knows about it.

The compiler writes a `ModelSpec` next to the Haiku parameters. It says which
layer holds which head and MLP, which RASP expression each of them computes,
which residual directions each one reads and writes, how inputs and outputs
are encoded, and how parameters are named. Everything downstream (the lean
path, batching, compression, saving, viz, export, circuits, torch export)
reads it instead of re-deriving the structure from zero patterns.

Residual directions are referred to by their index in `residual_labels`
(the Tracr-style `"name:value"` strings of `model.residual_labels`);
`residual_names[i]` is the RASP label of the expression direction i belongs to
(`"tokens"`, `"one"`, `"map_3"`, ...), `residual_values[i]` its value (None for
a numerical direction).

The module depends on nothing but the standard library and numpy, so every
floor can read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

Value = Any

ACTIVATIONS = ("relu",)  # what compiled MLPs use; the only one tracr writes

# A categorical output position decodes to a value only where some output
# direction's magnitude reaches this; compiled one-hot outputs are 1 where RASP
# has a value and 0 where it has None (`certificate` measures the margins).
ACTIVE_THRESHOLD = 0.5


def param_name(layer: int, sublayer: str, linear: str) -> str:
    """The one place where parameter paths are spelled (`transformer/layer_0/attn/query`).

    sublayer is `attn` (linear: query, key, value, linear) or `mlp` (linear:
    linear_1, linear_2). Embeddings are `token_embed` and `pos_embed`.
    """
    if sublayer == "attn" and linear not in ("query", "key", "value", "linear"):
        raise ValueError(f"attention linears are query/key/value/linear, got {linear!r}.")
    if sublayer == "mlp" and linear not in ("linear_1", "linear_2"):
        raise ValueError(f"MLP linears are linear_1/linear_2, got {linear!r}.")
    if sublayer not in ("attn", "mlp"):
        raise ValueError(f"sublayer must be 'attn' or 'mlp', got {sublayer!r}.")
    return f"transformer/layer_{layer}/{sublayer}/{linear}"


TOKEN_EMBED = "token_embed"
POS_EMBED = "pos_embed"


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One attention head: where it sits, what it computes, what it reads and writes.

    `query`, `key`, `value` and `writes` are residual indices (into
    `ModelSpec.residual_labels`), in the order the head's craft spaces list
    them. `label` is the RASP expression whose value the head writes (a
    selector width or an expression spread over several blocks has several
    nodes with the same label).
    """

    layer: int
    head: int
    label: Optional[str]
    query: Tuple[int, ...]
    key: Tuple[int, ...]
    value: Tuple[int, ...]
    writes: Tuple[int, ...]

    @property
    def name(self) -> str:
        """`"L.H"`, as interpretability papers name heads."""
        return f"{self.layer}.{self.head}"

    @property
    def reads(self) -> Tuple[int, ...]:
        """Every residual index the head reads (query, key or value), sorted."""
        return tuple(sorted(set(self.query) | set(self.key) | set(self.value)))


@dataclasses.dataclass(frozen=True)
class MLPPart:
    """One expression's MLP inside an MLP sublayer (several may run side by side).

    `hidden` are the indices of its hidden units in the sublayer's
    `linear_1` output.
    """

    label: Optional[str]
    reads: Tuple[int, ...]
    writes: Tuple[int, ...]
    hidden: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class MLPSpec:
    """The MLP sublayer of one layer: its parts, one per expression."""

    layer: int
    parts: Tuple[MLPPart, ...]

    @property
    def name(self) -> str:
        return f"{self.layer}"

    @property
    def labels(self) -> Tuple[Optional[str], ...]:
        return tuple(p.label for p in self.parts)

    @property
    def reads(self) -> Tuple[int, ...]:
        return tuple(sorted({i for p in self.parts for i in p.reads}))

    @property
    def writes(self) -> Tuple[int, ...]:
        return tuple(sorted({i for p in self.parts for i in p.writes}))

    @property
    def hidden_size(self) -> int:
        return sum(len(p.hidden) for p in self.parts)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One transformer layer: an attention sublayer, then an MLP sublayer."""

    index: int
    heads: Tuple[HeadSpec, ...]
    mlp: Optional[MLPSpec]


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How tokens become ids: id i is `tokens[i]` (BOS and PAD included)."""

    tokens: Tuple[Value, ...]
    bos_token: Optional[Value]
    pad_token: Optional[Value]
    max_seq_len: int  # real tokens, BOS not counted
    embeds: Tuple[Optional[int], ...]  # residual index token id i writes (None: unread)
    positions: Tuple[Optional[int], ...]  # residual index position p writes (p = 0 is BOS)
    one: Optional[int]  # residual index of the constant `one` every token writes

    @property
    def bos_id(self) -> Optional[int]:
        return None if self.bos_token is None else self.token_id(self.bos_token)

    @property
    def pad_id(self) -> Optional[int]:
        return None if self.pad_token is None else self.token_id(self.pad_token)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def token_id(self, token: Value) -> int:
        for i, t in enumerate(self.tokens):
            if t == token and isinstance(t, bool) == isinstance(token, bool):
                return i
        raise ValueError(f"Unknown token {token!r}; the vocabulary is {list(self.tokens)}.")


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """How the output is read: column j of the unembedding reads residual `reads[j]`.

    Categorical: the decoded value at a position is `values[argmax_j]`.
    Numerical: one column, read as a float.
    """

    label: str  # the program's RASP label
    categorical: bool
    values: Tuple[Value, ...]  # one per column (categorical); () for numerical
    reads: Tuple[int, ...]  # residual index of each unembedding column

    @property
    def width(self) -> int:
        return len(self.reads)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A compiled model, described once; see the module docstring."""

    layers: Tuple[LayerSpec, ...]
    residual_labels: Tuple[str, ...]
    residual_names: Tuple[str, ...]
    residual_values: Tuple[Value, ...]
    input: InputSpec
    output: OutputSpec
    causal: bool
    num_heads: int  # heads per layer in the padded Haiku layout
    key_size: int  # per head, padded
    mlp_hidden_size: int  # padded
    activation: str = "relu"
    layer_norm: bool = False

    def __post_init__(self):
        d = len(self.residual_labels)
        if not (len(self.residual_names) == len(self.residual_values) == d):
            raise ValueError(
                "residual_labels, residual_names and residual_values differ in length."
            )
        for where, indices in self._all_indices():
            bad = [i for i in indices if i is not None and not 0 <= i < d]
            if bad:
                raise ValueError(f"{where} refers to residual indices {bad} outside 0..{d - 1}.")

    def _all_indices(self) -> Iterator[Tuple[str, Sequence[Optional[int]]]]:
        for head in self.heads():
            yield f"head {head.name}", head.query + head.key + head.value + head.writes
        for mlp in self.mlps():
            for part in mlp.parts:
                yield f"MLP {mlp.name} ({part.label})", part.reads + part.writes
        yield "input.embeds", self.input.embeds
        yield "input.positions", self.input.positions
        yield "input.one", (self.input.one,)
        yield "output.reads", self.output.reads

    # ---- shape and structure

    @property
    def d_model(self) -> int:
        return len(self.residual_labels)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def max_seq_len(self) -> int:
        return self.input.max_seq_len

    def heads(self) -> Iterator[HeadSpec]:
        """Every compiled head, layer by layer."""
        for layer in self.layers:
            yield from layer.heads

    def mlps(self) -> Iterator[MLPSpec]:
        """Every non-empty MLP sublayer, layer by layer."""
        for layer in self.layers:
            if layer.mlp is not None:
                yield layer.mlp

    def index(self, label: str) -> int:
        """The residual index of a residual label (`"tokens:a"`)."""
        try:
            return self.residual_labels.index(label)
        except ValueError:
            raise KeyError(f"No residual direction {label!r}.") from None

    def directions_of(self, expr_label: str) -> Tuple[int, ...]:
        """Residual indices of the directions that hold an expression's value."""
        return tuple(i for i, n in enumerate(self.residual_names) if n == expr_label)

    def nodes_computing(self, expr_label: str) -> List[str]:
        """Names of the heads (`"L.H"`) and MLPs (`"mlp L"`) that compute an expression."""
        found = [h.name for h in self.heads() if h.label == expr_label]
        found += [f"mlp {m.name}" for m in self.mlps() if expr_label in m.labels]
        return found

    def param_shapes(self) -> Dict[str, Dict[str, Tuple[int, ...]]]:
        """The shape of every parameter of the padded Haiku layout, by `param_name`."""
        d, hk_width = self.d_model, self.num_heads * self.key_size
        shapes: Dict[str, Dict[str, Tuple[int, ...]]] = {
            TOKEN_EMBED: {"embeddings": (self.input.vocab_size, d)},
            POS_EMBED: {"embeddings": (self.max_seq_len + 1, d)},
        }
        for layer in range(self.num_layers):
            for linear in ("query", "key", "value"):
                shapes[param_name(layer, "attn", linear)] = {"w": (d, hk_width), "b": (hk_width,)}
            shapes[param_name(layer, "attn", "linear")] = {"w": (hk_width, d), "b": (d,)}
            shapes[param_name(layer, "mlp", "linear_1")] = {
                "w": (d, self.mlp_hidden_size),
                "b": (self.mlp_hidden_size,),
            }
            shapes[param_name(layer, "mlp", "linear_2")] = {
                "w": (self.mlp_hidden_size, d),
                "b": (d,),
            }
        return shapes

    # ---- JSON (values are encoded by the caller's codec: tracr.io)

    def to_json(self, encode_value) -> Dict[str, Any]:
        """A JSON-able dict; `encode_value` turns a token/output value into JSON."""

        def opt(v):
            return None if v is None else encode_value(v)

        return {
            "layers": [
                {
                    "index": layer.index,
                    "heads": [
                        {
                            "head": h.head,
                            "label": h.label,
                            "query": list(h.query),
                            "key": list(h.key),
                            "value": list(h.value),
                            "writes": list(h.writes),
                        }
                        for h in layer.heads
                    ],
                    "mlp": None
                    if layer.mlp is None
                    else [
                        {
                            "label": p.label,
                            "reads": list(p.reads),
                            "writes": list(p.writes),
                            "hidden": list(p.hidden),
                        }
                        for p in layer.mlp.parts
                    ],
                }
                for layer in self.layers
            ],
            "residual_labels": list(self.residual_labels),
            "residual_names": list(self.residual_names),
            "residual_values": [opt(v) for v in self.residual_values],
            "input": {
                "tokens": [encode_value(t) for t in self.input.tokens],
                "bos_token": opt(self.input.bos_token),
                "pad_token": opt(self.input.pad_token),
                "max_seq_len": self.input.max_seq_len,
                "embeds": list(self.input.embeds),
                "positions": list(self.input.positions),
                "one": self.input.one,
            },
            "output": {
                "label": self.output.label,
                "categorical": self.output.categorical,
                "values": [encode_value(v) for v in self.output.values],
                "reads": list(self.output.reads),
            },
            "causal": self.causal,
            "num_heads": self.num_heads,
            "key_size": self.key_size,
            "mlp_hidden_size": self.mlp_hidden_size,
            "activation": self.activation,
            "layer_norm": self.layer_norm,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], decode_value) -> "ModelSpec":
        """The inverse of `to_json`; `decode_value(item, where)` decodes one value.

        Raises:
          ValueError: a field is missing or has the wrong type (named in the message).
        """
        try:
            return cls._from_json(doc, decode_value)
        except (KeyError, TypeError) as e:
            raise ValueError(f"model spec: missing or malformed field {e}.") from None

    @classmethod
    def _from_json(cls, doc, decode_value) -> "ModelSpec":
        # Every field is read strictly: a JSON "false" is not a bool, 1.7 is not a
        # head index, a number is not a label (nothing is coerced with bool/int/str).
        def ints(xs, where) -> Tuple[int, ...]:
            if not isinstance(xs, list) or not all(_is_int(x) for x in xs):
                raise ValueError(f"model spec: {where} must be a list of ints.")
            return tuple(xs)

        def one_int(x, where) -> int:
            if not _is_int(x):
                raise ValueError(f"model spec: {where} must be an int, got {x!r}.")
            return x

        def opt_ints(xs, where) -> Tuple[Optional[int], ...]:
            if not isinstance(xs, list):
                raise ValueError(f"model spec: {where} must be a list.")
            return tuple(None if x is None else one_int(x, where) for x in xs)

        def flag(x, where) -> bool:
            if not isinstance(x, bool):
                raise ValueError(f"model spec: {where} must be true or false, got {x!r}.")
            return x

        def text(x, where) -> str:
            if not isinstance(x, str):
                raise ValueError(f"model spec: {where} must be a string, got {x!r}.")
            return x

        def opt_text(x, where) -> Optional[str]:
            return None if x is None else text(x, where)

        def texts(xs, where) -> Tuple[str, ...]:
            if not isinstance(xs, list) or not all(isinstance(x, str) for x in xs):
                raise ValueError(f"model spec: {where} must be a list of strings.")
            return tuple(xs)

        def items(xs, where) -> list:
            if not isinstance(xs, list):
                raise ValueError(f"model spec: {where} must be a list, got {type(xs).__name__}.")
            return xs

        def opt(item, where):
            return None if item is None else decode_value(item, where)

        layers = []
        for li, layer in enumerate(items(doc["layers"], "layers")):
            at = f"layers[{li}]"
            if not isinstance(layer, dict):
                raise ValueError(f"model spec: {at} must be a JSON object.")
            if one_int(layer["index"], f"{at}.index") != li:
                raise ValueError(
                    f"model spec: {at}.index is {layer['index']}; layers are listed in order."
                )
            heads = tuple(
                HeadSpec(
                    layer=li,
                    head=one_int(h["head"], f"{at}.heads[{hi}].head"),
                    label=opt_text(h["label"], f"{at}.heads[{hi}].label"),
                    query=ints(h["query"], f"{at}.heads[{hi}].query"),
                    key=ints(h["key"], f"{at}.heads[{hi}].key"),
                    value=ints(h["value"], f"{at}.heads[{hi}].value"),
                    writes=ints(h["writes"], f"{at}.heads[{hi}].writes"),
                )
                for hi, h in enumerate(items(layer["heads"], f"{at}.heads"))
            )
            mlp = None
            if layer["mlp"] is not None:
                mlp = MLPSpec(
                    layer=li,
                    parts=tuple(
                        MLPPart(
                            label=opt_text(p["label"], f"{at}.mlp[{pi}].label"),
                            reads=ints(p["reads"], f"{at}.mlp[{pi}].reads"),
                            writes=ints(p["writes"], f"{at}.mlp[{pi}].writes"),
                            hidden=ints(p["hidden"], f"{at}.mlp[{pi}].hidden"),
                        )
                        for pi, p in enumerate(items(layer["mlp"], f"{at}.mlp"))
                    ),
                )
            layers.append(LayerSpec(index=li, heads=heads, mlp=mlp))
        inp, out = doc["input"], doc["output"]
        one = inp["one"]
        return cls(
            layers=tuple(layers),
            residual_labels=texts(doc["residual_labels"], "residual_labels"),
            residual_names=texts(doc["residual_names"], "residual_names"),
            residual_values=tuple(
                opt(v, f"residual_values[{i}]")
                for i, v in enumerate(items(doc["residual_values"], "residual_values"))
            ),
            input=InputSpec(
                tokens=tuple(
                    decode_value(t, f"input.tokens[{i}]")
                    for i, t in enumerate(items(inp["tokens"], "input.tokens"))
                ),
                bos_token=opt(inp["bos_token"], "input.bos_token"),
                pad_token=opt(inp["pad_token"], "input.pad_token"),
                max_seq_len=one_int(inp["max_seq_len"], "input.max_seq_len"),
                embeds=opt_ints(inp["embeds"], "input.embeds"),
                positions=opt_ints(inp["positions"], "input.positions"),
                one=None if one is None else one_int(one, "input.one"),
            ),
            output=OutputSpec(
                label=text(out["label"], "output.label"),
                categorical=flag(out["categorical"], "output.categorical"),
                values=tuple(
                    decode_value(v, f"output.values[{i}]")
                    for i, v in enumerate(items(out["values"], "output.values"))
                ),
                reads=ints(out["reads"], "output.reads"),
            ),
            causal=flag(doc["causal"], "causal"),
            num_heads=one_int(doc["num_heads"], "num_heads"),
            key_size=one_int(doc["key_size"], "key_size"),
            mlp_hidden_size=one_int(doc["mlp_hidden_size"], "mlp_hidden_size"),
            activation=text(doc["activation"], "activation"),
            layer_norm=flag(doc["layer_norm"], "layer_norm"),
        )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
