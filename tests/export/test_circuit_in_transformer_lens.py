"""The circuit's hook-level edges, ablated inside the exported TransformerLens model.

`tracr.circuits` verifies its edges by ablation in our own forward pass
(`circuits/forward.py`); circuit-discovery methods (ACDC, InterpBench) run on
the model `tracr export` writes and read the circuit by TransformerLens hook
names (`formats.to_acdc`). Here every addition edge of ACDC's graph of that
model, a writer (`hook_embed`, `hook_pos_embed`, `blocks.l.attn.hook_result[h]`,
`blocks.l.hook_mlp_out`) to a later reader (`blocks.l.hook_{q,k,v}_input[h]`,
`blocks.l.hook_mlp_in`, the last `hook_resid_post`), is ablated alone with
TransformerLens hooks, on every input of the circuit's domain:

- the writer's output is recorded on the clean run (and on the resample
  partner, `ablation.resample_partner` with the circuit's seed);
- a second run adds (zero or the partner's output) minus the clean output to
  the reader's hook alone (for a head, only its slice `[:, :, h]`; the head's
  other inputs stay clean);
- the reader's node output (`attn.hook_result[h]`, `hook_mlp_out`, the logits
  for `hook_resid_post`) is compared with the clean one after BOS and at BOS,
  and the logits after BOS end to end, as `ablation.effects` does.

An edge *matters* in TransformerLens by the circuit's rule (`graph.py`): it
changes its reader's output after BOS by more than ATOL on some input, or
changes it only at BOS and the logits after BOS then change. The tests assert
that an edge matters iff `to_acdc` marks it True, and that the counts and
magnitudes TransformerLens measures are those `ablation.effects` computes in
our forward for the same pairs (the embedding hooks are our `embed.token` and
`embed.position` parts; writers and readers of zero-padded heads, and of
MLPs the compiled layer lacks, are not our nodes and must change nothing).

Each (reader, ablation) runs as one forward: the domain repeated once per
writer, each copy with its own writer's edit.
"""

import functools
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")

from tracr.circuits import ablation, circuit, domain, formats, forward  # noqa: E402
from tracr.compiler import compiling  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME  # noqa: E402
from tracr.export import lens_model, to_transformer_lens_model  # noqa: E402

MAX_SEQ_LEN = 3  # as tests/circuits: exhaustive domains
ATOL = 1e-4  # the circuit's default tolerance
SEED = 0  # the circuit's default resample seed
FLOAT_TOL = 1e-5  # float32 torch against float32 numpy

# Heads and MLPs (sort_unique, hist), a numerical output (frac_prevs), causal
# compilation (hist, frac_prevs), BOS guards and inert parts (reverse), and a
# model of 7 layers with zero-padded heads and missing MLPs (shuffle_dyck).
CASES = [
    ("sort_unique", False),
    ("reverse", False),
    ("hist", True),
    ("frac_prevs", True),
    ("shuffle_dyck", False),
]
CASE_IDS = [f"{name}-{'causal' if causal else 'full'}" for name, causal in CASES]

Hook = tuple  # (hook name, head index or None)

_RESULT = re.compile(r"blocks\.(\d+)\.attn\.hook_result$")
_MLP_OUT = re.compile(r"blocks\.(\d+)\.hook_mlp_out$")
_INPUT = re.compile(r"blocks\.(\d+)\.hook_([qkv])_input$")
_MLP_IN = re.compile(r"blocks\.(\d+)\.hook_mlp_in$")
_EMBED_PARTS = {"hook_embed": "token", "hook_pos_embed": "position"}


def _writer_node(hook: Hook) -> str:
    """Our ablation parent for a writer hook: an embedding part, `L.H` or `mlp L`."""
    name, index = hook
    if name in _EMBED_PARTS:
        return forward.embed_part(_EMBED_PARTS[name])
    if m := _RESULT.match(name):
        return f"{m.group(1)}.{index}"
    m = _MLP_OUT.match(name)
    assert m, name
    return forward.mlp_name(int(m.group(1)))


def _reader_node(hook: Hook):
    """(our child node, slot) for a reader hook."""
    name, index = hook
    if m := _INPUT.match(name):
        return f"{m.group(1)}.{index}", m.group(2)
    if m := _MLP_IN.match(name):
        return forward.mlp_name(int(m.group(1))), forward.IN
    assert name.endswith(".hook_resid_post"), name
    return forward.UNEMBED, forward.IN


def _output_hook(reader: Hook):
    """The hook holding the reader's node output (None: the logits)."""
    name, index = reader
    if m := _INPUT.match(name):
        return f"blocks.{m.group(1)}.attn.hook_result", index
    if m := _MLP_IN.match(name):
        return f"blocks.{m.group(1)}.hook_mlp_out", None
    return None


def _slice(x, index):
    return x if index is None else x[:, :, index]


@functools.lru_cache(maxsize=None)
def _setup(name: str, causal: bool):
    case = CASES_BY_NAME[name]
    model = compiling.compile_rasp_to_model(
        case.program(MAX_SEQ_LEN), case.vocab, MAX_SEQ_LEN, compiler_bos="BOS", causal=causal
    )
    dom = domain.make_domain(model.spec)
    return model, dom, circuit(model, domain=dom, atol=ATOL, seed=SEED)


class _Lens:
    """The exported TransformerLens model, run on the domain (PAD masked)."""

    def __init__(self, model, dom):
        self.lens = to_transformer_lens_model(model)
        self.ids = torch.as_tensor(domain.encode(model.spec, dom.inputs), dtype=torch.long)
        self.mask = (self.ids != model.spec.input.pad_id).long()
        self.partner = torch.as_tensor(ablation.resample_partner(dom.inputs, SEED))
        with torch.no_grad():
            self.logits, self.cache = self.lens.model.run_with_cache(
                self.ids, attention_mask=self.mask
            )

    def clean(self, hook: Hook) -> torch.Tensor:
        """[B, T, D] (or [B, T, O] for the logits): a hook's value on the clean run."""
        if hook is None:
            return self.logits
        return _slice(self.cache[hook[0]], hook[1])

    def run(self, copies: int, hooks):
        """Logits of the domain repeated `copies` times, with `hooks`."""
        ids, mask = self.ids.repeat(copies, 1), self.mask.repeat(copies, 1)
        if lens_model._ignores_padding(self.lens.model):  # HookedTransformer 3.x
            hooks = [*hooks, (lens_model._is_attn_scores, lens_model._hide_keys(mask))]
        with torch.no_grad():
            return self.lens.model.run_with_hooks(ids, attention_mask=mask, fwd_hooks=hooks)


def _ablate(tl: _Lens, reader: Hook, writers, after_bos, at_bos):
    """TransformerLens' `ablation.Effect` of each writer -> reader edge alone."""
    n, b = len(writers), tl.ids.shape[0]
    clean = torch.stack([tl.clean(w) for w in writers])  # [P, B, T, D]
    deltas = torch.cat([-clean, clean[:, tl.partner] - clean])  # zero, resample: [A*P, B, T, D]
    deltas = deltas.reshape(-1, *clean.shape[2:])
    out_hook = _output_hook(reader)
    got = {}

    def edit(x, hook):
        x = x.clone()
        if reader[1] is None:
            x += deltas
        else:
            x[:, :, reader[1]] += deltas
        return x

    def record(x, hook):
        got["out"] = _slice(x, out_hook[1]).clone()
        return x

    hooks = [(reader[0], edit)] + ([(out_hook[0], record)] if out_hook else [])
    logits = tl.run(len(ablation.ABLATIONS) * n, hooks)
    shape = (len(ablation.ABLATIONS), n, b, *logits.shape[1:])
    logits = logits.reshape(shape).numpy()
    out = logits if out_hook is None else got["out"].reshape(*shape[:3], -1, got["out"].shape[-1])
    diff = np.abs(np.asarray(out) - tl.clean(out_hook).numpy())  # [A, P, B, T, F]
    end_to_end = np.abs(logits - tl.logits.numpy())

    def per_input(d, where):  # [A, P, B, T, F] -> [A, P, B]: largest change at `where`
        return np.max(np.where(where[None, None, :, :, None], d, 0.0), axis=(3, 4))

    local, bos = per_input(diff, after_bos), per_input(diff, at_bos)
    through = per_input(end_to_end, after_bos)
    effects = []
    for i in range(n):
        changed = tuple(int(np.sum(local[a, i] > ATOL)) for a in range(shape[0]))
        bos_changed = tuple(int(np.sum(bos[a, i] > ATOL)) for a in range(shape[0]))
        output_changed = [0] * shape[0]
        if not any(changed) and out_hook is not None:  # the BOS rule, as `ablation.effects`
            for a in range(shape[0]):
                if bos_changed[a]:
                    output_changed[a] = int(np.sum(through[a, i] > ATOL))
        effects.append(
            ablation.Effect(
                changed=changed,
                max_effect=float(local[:, i].max()),
                bos_changed=bos_changed,
                output_changed=tuple(output_changed),
            )
        )
    return effects


@functools.lru_cache(maxsize=None)
def _measure(name: str, causal: bool):
    """{(reader hook, writer hook): Effect in TransformerLens} over ACDC's addition edges,
    with to_acdc's dictionary."""
    model, dom, c = _setup(name, causal)
    acdc = formats.to_acdc(c)
    readers = {}
    for child, child_index, parent, parent_index in acdc:
        if formats._is_addition(parent, child):
            reader = (child, formats._from_torch_index(child_index))
            readers.setdefault(reader, []).append((parent, formats._from_torch_index(parent_index)))
    tl = _Lens(model, dom)
    real = tl.mask.numpy().astype(bool)
    after_bos = real.copy()
    after_bos[:, 0] = False
    at_bos = real & ~after_bos
    measured = {}
    for reader, writers in readers.items():
        for writer, effect in zip(writers, _ablate(tl, reader, writers, after_bos, at_bos)):
            measured[(reader, writer)] = effect
    return model, dom, c, acdc, measured


def _acdc_key(reader: Hook, writer: Hook):
    return (reader[0], formats._torch_index(reader[1]), writer[0], formats._torch_index(writer[1]))


def _describe(reader, writer, effect) -> str:
    return (
        f"{writer[0]}[{writer[1]}] -> {reader[0]}[{reader[1]}]: changed {effect.changed}, "
        f"bos {effect.bos_changed}, end to end {effect.output_changed}, "
        f"max {effect.max_effect:.3g}"
    )


@pytest.mark.parametrize("name, causal", CASES, ids=CASE_IDS)
def test_an_edge_matters_in_transformer_lens_iff_the_acdc_export_marks_it(name, causal):
    _, _, c, acdc, measured = _measure(name, causal)
    assert len(measured) == sum(formats._is_addition(k[2], k[0]) for k in acdc)
    missing = [
        _describe(r, w, e) for (r, w), e in measured.items() if acdc[_acdc_key(r, w)] and not e.any
    ]
    leaking = [
        _describe(r, w, e) for (r, w), e in measured.items() if not acdc[_acdc_key(r, w)] and e.any
    ]
    assert not missing, f"circuit edges TransformerLens finds no effect of: {missing}"
    assert not leaking, f"non-edges that change their reader in TransformerLens: {leaking}"
    # Both kinds occur: the check is not vacuous.
    kept = [k for k in measured if acdc[_acdc_key(*k)]]
    assert kept and len(kept) < len(measured)
    assert len(kept) == len(formats.to_transformer_lens(c))


@pytest.mark.parametrize("name, causal", CASES, ids=CASE_IDS)
def test_transformer_lens_measures_the_effects_our_forward_computes(name, causal):
    model, dom, c, _, measured = _measure(name, causal)
    nodes = {n.name for n in c.nodes}
    ours_of, padded = {}, []
    for reader, writer in measured:
        pair = (_writer_node(writer), *_reader_node(reader))
        known = pair[0].startswith(forward.EMBED) or pair[0] in nodes
        if known and pair[1] in nodes:
            ours_of[(reader, writer)] = pair
        else:
            padded.append((reader, writer))
    weights = forward.weights_of(model, numpy=True)
    ours = ablation.effects(weights, dom, list(ours_of.values()), atol=ATOL, seed=SEED)
    differ = []
    for key, pair in ours_of.items():
        theirs, want = measured[key], ours[pair]
        same = (theirs.changed, theirs.bos_changed, theirs.output_changed) == (
            want.changed,
            want.bos_changed,
            want.output_changed,
        )
        if not (same and abs(theirs.max_effect - want.max_effect) <= FLOAT_TOL):
            differ.append(f"{_describe(*key, theirs)}; ours {pair}: {want}")
    assert not differ, differ
    # Hooks of zero-padded heads and of absent MLPs carry nothing.
    moved = [
        _describe(*k, e)
        for k in padded
        if (e := measured[k]).any or any(e.bos_changed) or e.max_effect > FLOAT_TOL
    ]
    assert not moved, moved
    assert any(e.any for e in ours.values())
