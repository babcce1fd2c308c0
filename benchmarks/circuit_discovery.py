"""Benchmark: attribution patching against the verified compiled circuit.

For every library program (`tracr.compiler.library_cases`) and a few
user-style programs (combined selectors, numerical means, shuffle-Dyck with
three bracket types), compiled at --max-seq-len:

1. the compiled circuit (`tracr.circuits.circuit`), checked by `verify`
   (zero and resample ablation of every pair on every input);
2. edge-level attribution patching (`tracr.circuits.attribution`, JAX) on
   --pairs seeded (clean, corrupted) pairs of same-length inputs whose
   outputs differ; an edge's score is the mean |score| over the pairs;
3. for comparison, exact edge patching on the same pairs (the child's input
   reads the parent's corrupted contribution, the rest of the model runs on):
   what attribution patching approximates to first order;
4. TPR and FPR at a threshold (score > --threshold x the largest score), and
   ROC AUC (ties count one half) against the circuit's edges, over every
   candidate pair (A earlier than B, per input of B).

Writes a markdown table to stdout and the ROC curves to
docs/img/circuit_discovery_roc.png.

    .venv/bin/python benchmarks/circuit_discovery.py            # ~3 min on 2 loaded cores
    .venv/bin/python benchmarks/circuit_discovery.py --quick    # 4 programs
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import pathlib
import random
import sys
import time
from typing import Callable, List, Tuple

# Run as a script, this file's folder comes first on sys.path, and
# benchmarks/compression.py would shadow the `compression` package jax imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import numpy as np  # noqa: E402

from tracr.circuits import attribution, circuit, domain, forward, metrics, verify  # noqa: E402
from tracr.compiler import compiling, lib  # noqa: E402
from tracr.compiler.library_cases import LIBRARY_CASES  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _selector_and() -> rasp.SOp:
    earlier = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    smaller = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ)
    return rasp.SelectorWidth(earlier & smaller)


def _selector_or_mean() -> rasp.SOp:
    same = rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)
    first = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ)
    value = rasp.numerical(rasp.Map(lambda x: x / 4, rasp.tokens))
    return rasp.numerical(rasp.Aggregate(same | ~first, value, default=0))


def _prefix_mean() -> rasp.SOp:
    prefix = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    value = rasp.numerical(rasp.Map(lambda x: x / 4, rasp.tokens))
    return rasp.numerical(rasp.Aggregate(prefix, value, default=0))


USER_PROGRAMS: Tuple[Tuple[str, Callable[[], rasp.SOp], frozenset], ...] = (
    ("user: selector and (width)", _selector_and, frozenset({1, 2, 3})),
    ("user: selector or-not (mean)", _selector_or_mean, frozenset({1, 2, 3})),
    ("user: prefix mean", _prefix_mean, frozenset({1, 2, 3})),
    (
        "user: shuffle-Dyck 3",
        lambda: lib.make_shuffle_dyck(["()", "[]", "{}"]),
        frozenset("()[]{}"),
    ),
)


@dataclasses.dataclass
class Row:
    name: str
    d_model: int
    nodes: int
    candidates: int
    edges: int
    verified: bool
    pairs: int
    tpr: float
    fpr: float
    auc: float
    patching_tpr: float  # exact edge patching on the same pairs, same threshold
    patching_auc: float
    seconds: float
    roc: Tuple[np.ndarray, np.ndarray]


def roc(scores: np.ndarray, truth: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
    """FPR and TPR at every threshold (highest first) and the AUC, ties counted as 1/2."""
    pos, neg = truth.sum(), (~truth).sum()
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    # One point per distinct score, so tied scores form one diagonal step.
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tpr = np.r_[0, np.cumsum(t)[last] / max(pos, 1)]
    fpr = np.r_[0, np.cumsum(~t)[last] / max(neg, 1)]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def sample_pairs(model, n: int, seed: int):
    """n (clean, corrupted) same-length input pairs whose outputs differ."""
    inputs = [x for x in domain.make_domain(model.spec, seed=seed).inputs if len(x) > 1]
    weights = forward.weights_of(model, numpy=True)
    out = forward.run(weights, domain.encode(model.spec, inputs)).out[forward.UNEMBED]
    rng = random.Random(seed)
    by_length = {}
    for i, x in enumerate(inputs):
        by_length.setdefault(len(x), []).append(i)
    pairs = []
    for _ in range(50 * n):
        group = rng.choice(list(by_length.values()))
        i, j = rng.sample(group, 2)
        t = len(inputs[i]) + 1
        if np.abs(out[i, :t] - out[j, :t]).max() > 1e-3:
            pairs.append((inputs[i], inputs[j]))
        if len(pairs) == n:
            break
    return [a for a, _ in pairs], [b for _, b in pairs]


def run_one(name: str, program: rasp.SOp, vocab, args) -> Row:
    start = time.perf_counter()
    model = compiling.compile_rasp_to_model(
        program, vocab, args.max_seq_len, compiler_bos="BOS", compiler_pad="PAD"
    )
    c = circuit(model, seed=args.seed)
    checked = verify(model, c, seed=args.seed + 1)
    clean, corrupted = sample_pairs(model, args.pairs, args.seed)
    if not clean:  # e.g. length: inputs of one length all have the same output
        return Row(
            name,
            model.spec.d_model,
            len(c.nodes),
            len(list(c.candidate_pairs())),
            len(c.edges),
            checked.ok,
            0,
            *[math.nan] * 5,
            time.perf_counter() - start,
            (np.zeros(0), np.zeros(0)),
        )
    t = metrics.certified_temperature(model) if model.spec.output.categorical else 1.0
    candidates = list(c.candidate_pairs())
    found = attribution.edge_scores(model, clean, corrupted, candidates, temperature=t)
    scores = np.array([np.abs(found[p]).mean() for p in candidates])
    truth = np.array([p in c.edge_keys() for p in candidates])
    fpr, tpr, auc = roc(scores, truth)
    hit = scores > args.threshold * scores.max() if scores.max() > 0 else scores > 0
    exact = attribution.edge_patching(model, clean, corrupted, candidates, temperature=t)
    patched = np.array([np.abs(exact[p]).mean() for p in candidates])
    patch_hit = patched > args.threshold * patched.max() if patched.max() > 0 else patched > 0
    return Row(
        name=name,
        d_model=model.spec.d_model,
        nodes=len(c.nodes),
        candidates=len(candidates),
        edges=int(truth.sum()),
        verified=checked.ok,
        pairs=len(clean),
        tpr=float((hit & truth).sum() / max(truth.sum(), 1)),
        fpr=float((hit & ~truth).sum() / max((~truth).sum(), 1)),
        auc=auc,
        patching_tpr=float((patch_hit & truth).sum() / max(truth.sum(), 1)),
        patching_auc=roc(patched, truth)[2],
        seconds=time.perf_counter() - start,
        roc=(fpr, tpr),
    )


def plot(rows: List[Row], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    cmap = plt.get_cmap("tab20")
    for k, row in enumerate(r for r in rows if r.pairs):
        fpr, tpr = row.roc
        ax.plot(fpr, tpr, color=cmap(k % 20), lw=1.2, label=f"{row.name} ({row.auc:.2f})")
    ax.plot([0, 1], [0, 1], color="0.7", ls="--", lw=0.8)
    ax.set_xlabel("false positive rate (pairs outside the circuit)")
    ax.set_ylabel("true positive rate (edges of the verified circuit)")
    ax.set_title("Edge attribution patching vs the compiled circuit (AUC)", fontsize=10)
    ax.legend(fontsize=6, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seq-len", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=1e-3)
    parser.add_argument("--quick", action="store_true", help="four programs only")
    parser.add_argument(
        "--plot", type=pathlib.Path, default=ROOT / "docs" / "img" / "circuit_discovery_roc.png"
    )
    args = parser.parse_args()
    programs = [(f"lib: {c.name}", c.program(args.max_seq_len), c.vocab) for c in LIBRARY_CASES]
    programs += [(name, make(), vocab) for name, make, vocab in USER_PROGRAMS]
    if args.quick:
        programs = programs[:2] + programs[-2:]
    start = time.perf_counter()
    rows = []
    for name, program, vocab in programs:
        rows.append(run_one(name, program, vocab, args))
        print(f"  {name}: {rows[-1].seconds:.1f} s", flush=True)
    load = os.getloadavg()
    print()
    print(
        "| program | D | nodes | candidate pairs | circuit edges | verified | pairs | "
        "TPR | FPR | ROC AUC | edge patching TPR | edge patching AUC |"
    )
    print("|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.name} | {r.d_model} | {r.nodes} | {r.candidates} | {r.edges} | "
            f"{'yes' if r.verified else 'NO'} | {r.pairs} | "
            + (
                f"{r.tpr:.2f} | {r.fpr:.2f} | {r.auc:.3f} | {r.patching_tpr:.2f} | "
                f"{r.patching_auc:.3f} |"
                if r.pairs
                else "n/a | n/a | n/a | n/a | n/a |"
            )
        )
    aucs = np.array([r.auc for r in rows if r.pairs])
    print()
    print(
        f"mean ROC AUC {aucs.mean():.3f} (min {aucs.min():.3f}) over {len(aucs)} programs "
        f"with pairs; TPR {np.mean([r.tpr for r in rows if r.pairs]):.2f}, FPR "
        f"{np.mean([r.fpr for r in rows if r.pairs]):.2f} on average; "
        f"max_seq_len {args.max_seq_len}, {args.pairs} pairs, seed {args.seed}, threshold "
        f"{args.threshold} x max; {time.perf_counter() - start:.0f} s, load average "
        f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} on {os.cpu_count()} cores"
    )
    plot(rows, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
