"""Benchmark: compressed vs uncompressed residual streams, for every library program.

For each program of `tracr.compiler.library_cases` compiled at --max-seq-len:
D (residual width), d_exact (rank of the residual states over every input,
checked exact on all of them), the smallest learned d whose held-out token
accuracy is >= 99% (binary search below d_exact, W trained from the exact
basis of the training inputs), parameter counts and forward throughput at
batch 1024 of the uncompressed model, the compressed one (W applied at every
sublayer) and the folded one (W multiplied into the weights). For frac_prevs
and sort_unique (the paper's case studies) it also sweeps every d for the
accuracy curve and draws heat maps of W^T W, as PNGs.

    .venv/bin/python benchmarks/compression.py            # full run, ~10 min on 2 cores
    .venv/bin/python benchmarks/compression.py --quick    # a smoke run in ~2 min
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

# Run as a script, this file's folder comes first on sys.path and its name
# would shadow the `compression` package that jax imports (zstd); drop it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tracr.compiler import compiling  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES  # noqa: E402
from tracr.compression import exact, learned, running  # noqa: E402

CASE_STUDIES = ("frac_prevs", "sort_unique")
TARGET_ACCURACY = 0.99
THROUGHPUT_BATCH = 1024


@dataclasses.dataclass
class Row:
    name: str
    residual_size: int
    d_exact: int
    exact_accuracy: float
    d_learned: Optional[int]
    learned_accuracy: float
    baseline_accuracy: float
    runs: int
    params_full: int
    params_compressed: int
    params_folded: int
    seq_per_s_full: float
    seq_per_s_compressed: float
    seq_per_s_folded: float
    seconds: float


def count_params(params) -> int:
    return int(sum(np.size(x) for values in params.values() for x in values.values()))


def throughput(forward, params, ids, repeats: int) -> float:
    """Sequences per second of a jitted forward on one batch (best of repeats:
    the least disturbed by other processes on a shared machine)."""
    jax.block_until_ready(forward(params, ids))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(forward(params, ids))
        times.append(time.perf_counter() - start)
    return ids.shape[0] / min(times)


def search_smallest_d(
    trainer: learned.CompressionTrainer,
    train: List[tuple],
    held_out: List[tuple],
    d_exact: int,
    steps: int,
    cache: Dict[int, learned.LearnedCompression],
) -> Tuple[int, learned.LearnedCompression]:
    """A coarse search for the smallest d with >= 99% held-out accuracy.

    d_exact is the exact basis, evaluated untrained (steps=0). Below it, d
    steps down by ~10% of d_exact while the trained W still passes; the last
    step is then bisected. It assumes accuracy grows with d, which holds on
    these programs up to training noise.
    """

    def passes(d: int) -> bool:
        if d not in cache:
            cache[d] = trainer.train(
                train,
                held_out,
                embedding_size=d,
                steps=0 if d == d_exact else steps,
                progress=False,
            )
        return cache[d].report.token_accuracy >= TARGET_ACCURACY

    passes(d_exact)
    good, stride = d_exact, max(1, round(0.1 * d_exact))
    while good - stride >= 1 and passes(good - stride):
        good -= stride
    bad = max(good - stride, 0)  # fails, or below 1
    while good - bad > 1:
        mid = (good + bad) // 2
        if passes(mid):
            good = mid
        else:
            bad = mid
    return good, cache[good]


def constant_output_accuracy(model, interface: running.ModelInterface, inputs) -> float:
    """Held-out accuracy of always answering the most common output: the floor
    a compressed model beats without computing anything."""
    values = []
    for out, valid in exact.run_padded(model, inputs):
        scored = valid.copy()
        scored[:, 0] = False
        if interface.categorical:
            logits = np.asarray(out.transformer_output.output) @ interface.unembed
            scored &= logits.max(axis=-1) > 0.5
            values.extend(np.asarray(out.unembedded_output)[scored].tolist())
        else:
            values.extend(np.round(np.asarray(out.unembedded_output)[scored], 3).tolist())
    counts = collections.Counter(values)
    return counts.most_common(1)[0][1] / len(values) if values else 1.0


def benchmark_case(name: str, args, curves: Dict[str, dict]) -> Row:
    start = time.perf_counter()
    case = CASES_BY_NAME[name]
    model = compiling.compile_rasp_to_model(
        case.program(args.max_seq_len), set(case.vocab), args.max_seq_len
    )
    residual_size = len(model.residual_labels)
    inputs, exhaustive = exact.domain_inputs(model)
    assert exhaustive, f"{name}: domain too large to enumerate"
    compression = exact.exact_compression(model, inputs)
    train, held_out = learned.split_inputs(inputs, held_out_fraction=0.25, seed=args.seed)

    trainer = learned.CompressionTrainer(model, batch_size=args.batch_size)
    exact_report = trainer.evaluate(compression.w, inputs)

    cache: Dict[int, learned.LearnedCompression] = {}
    d_exact_train = trainer.exact_basis(train).d_exact
    baseline = constant_output_accuracy(model, trainer.interface, held_out)
    if name in CASE_STUDIES and not args.quick:
        # Sweep every d for the curve; the smallest passing d comes from it.
        for d in range(1, d_exact_train + 1):
            steps = 0 if d == d_exact_train else args.steps
            cache[d] = trainer.train(train, held_out, embedding_size=d, steps=steps, progress=False)
    if baseline >= TARGET_ACCURACY:
        # A constant answer already scores >= 99%: the search would measure nothing.
        d_learned = None
        best = trainer.train(train, held_out, embedding_size=d_exact_train, steps=0, progress=False)
    elif name in CASE_STUDIES and not args.quick:
        passing = [d for d in sorted(cache) if cache[d].report.token_accuracy >= TARGET_ACCURACY]
        d_learned = passing[0]
        best = cache[d_learned]
    else:
        d_learned, best = search_smallest_d(
            trainer, train, held_out, d_exact_train, args.steps, cache
        )
    if name in CASE_STUDIES:
        basis = trainer.exact_basis(train)
        ds = sorted(cache)
        curves[name] = {
            "labels": model.residual_labels,
            "D": residual_size,
            "d_exact": compression.d_exact,
            "ds": ds,
            "learned": [cache[d].report.token_accuracy for d in ds],
            "truncated": [
                trainer.evaluate(basis.truncated(d), held_out).token_accuracy for d in ds
            ],
            "w": best.w,
            "d_learned": d_learned,
        }

    rng = np.random.default_rng(args.seed)
    vocab = sorted(case.vocab, key=repr)
    batch = [
        tuple(vocab[i] for i in rng.integers(0, len(vocab), args.max_seq_len))
        for _ in range(THROUGHPUT_BATCH)
    ]
    ids = jnp.asarray(running.encode_padded(model, batch))
    # The uncompressed model runs through the same forward builder as the
    # compressed ones, so the columns differ only in the residual width.
    full_forward = running.make_logits_forward(
        model.model_config,
        trainer.interface,
        width=residual_size,
        unembed=trainer.interface.unembed,
    )
    compressed = running.CompressedModel(model, best.w)
    folded = running.CompressedModel(model, best.w, folded=True)
    repeats = 3 if args.quick else 10
    return Row(
        name=name,
        residual_size=residual_size,
        d_exact=compression.d_exact,
        exact_accuracy=exact_report.token_accuracy,
        d_learned=d_learned,
        learned_accuracy=best.report.token_accuracy,
        baseline_accuracy=baseline,
        runs=len(cache),
        params_full=count_params(model.params),
        params_compressed=count_params(compressed.params),
        params_folded=count_params(folded.params),
        seq_per_s_full=throughput(full_forward, model.params, ids, repeats),
        seq_per_s_compressed=throughput(compressed.forward, compressed.params, ids, repeats),
        seq_per_s_folded=throughput(folded.forward, folded.params, ids, repeats),
        seconds=time.perf_counter() - start,
    )


def markdown_table(rows: List[Row]) -> str:
    lines = [
        "| program | D | d_exact | d_exact/D | exact acc | constant acc | learned d (>=99%) "
        "| learned/D | held-out acc | params D / +W / folded | seq/s D | seq/s +W | seq/s folded |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r.d_learned is None:
            learned_d, learned_ratio = "n/a", "n/a"
        else:
            learned_d, learned_ratio = str(r.d_learned), f"{r.d_learned / r.residual_size:.2f}"
        lines.append(
            f"| {r.name} | {r.residual_size} | {r.d_exact} | {r.d_exact / r.residual_size:.2f} "
            f"| {r.exact_accuracy:.3f} | {r.baseline_accuracy:.3f} | {learned_d} "
            f"| {learned_ratio} | {r.learned_accuracy:.3f} "
            f"| {r.params_full} / {r.params_compressed} / {r.params_folded} "
            f"| {r.seq_per_s_full:,.0f} | {r.seq_per_s_compressed:,.0f} "
            f"| {r.seq_per_s_folded:,.0f} |"
        )
    return "\n".join(lines)


def plot(curves: Dict[str, dict], out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    names = [n for n in CASE_STUDIES if n in curves]
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        c = curves[name]
        ax.plot(c["ds"], c["learned"], "o-", label="learned W (trained from the exact basis)")
        ax.plot(c["ds"], c["truncated"], "s--", label="leading d exact directions, untrained")
        ax.axhline(TARGET_ACCURACY, color="grey", lw=0.8, ls=":", label="99% accuracy")
        ax.axvline(c["d_exact"], color="tab:green", lw=0.8, ls="-.", label="d_exact")
        ax.set_xlabel(f"compressed width d (D = {c['D']})")
        ax.set_ylabel("held-out token accuracy")
        ax.set_title(f"{name}: accuracy vs width (d_exact = {c['d_exact']})")
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = os.path.join(out_dir, "compression_accuracy.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    for name in names:
        c = curves[name]
        w = c["w"]
        wtw = w.T @ w
        size = max(5.0, 0.32 * len(c["labels"]) + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        limit = float(np.max(np.abs(wtw)))
        image = ax.imshow(wtw, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_xticks(range(len(c["labels"])))
        ax.set_yticks(range(len(c["labels"])))
        ax.set_xticklabels(c["labels"], rotation=90, fontsize=7)
        ax.set_yticklabels(c["labels"], fontsize=7)
        ax.set_xlabel("residual direction")
        ax.set_ylabel("residual direction")
        ax.set_title(f"{name}: W^T W of the learned W, d = {c['d_learned']} of D = {c['D']}")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        path = os.path.join(out_dir, f"compression_wtw_{name}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, no d sweep")
    parser.add_argument("--max-seq-len", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="training steps per d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch")
    parser.add_argument("--programs", default=None, help="comma-separated subset")
    parser.add_argument("--plots", default="docs/img", help="PNG folder ('' for none)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 300 if args.quick else 1500
    names = args.programs.split(",") if args.programs else [c.name for c in LIBRARY_CASES]
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown programs {unknown}; choose from {sorted(CASES_BY_NAME)}")

    print(
        f"# compression benchmark: max_seq_len={args.max_seq_len}, steps={args.steps}, "
        f"batch={args.batch_size}, seed={args.seed}, devices={jax.devices()}, cpus={os.cpu_count()}"
    )
    start = time.perf_counter()
    rows, curves = [], {}
    for name in names:
        row = benchmark_case(name, args, curves)
        rows.append(row)
        print(
            f"  {name}: D={row.residual_size} d_exact={row.d_exact} d_learned={row.d_learned} "
            f"({row.runs} runs, {row.seconds:.0f}s)",
            file=sys.stderr,
        )
    print(markdown_table(rows))
    for name, c in curves.items():
        points = ", ".join(
            f"{d}: {a:.2f}/{t:.2f}" for d, a, t in zip(c["ds"], c["learned"], c["truncated"])
        )
        print(f"\n{name} accuracy by d (learned/untrained): {points}")
    if args.plots and curves:
        for path in plot(curves, args.plots):
            print(f"wrote {path}")
    print(f"\ntotal {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
