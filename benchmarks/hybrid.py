"""Evidence for hybrids: a compiled sub-computation inside a trained model.

Two tasks whose hard part is easy to compile. Each has one label per
sequence, read at the BOS position:

- `kth_smallest`: the k-th smallest token (k=2). Compiled part: `lib.make_sort`
  (the sorted sequence); the learned part must fetch position k of it.
- `majority`: the most frequent token (ties: the smallest). Compiled part:
  `lib.make_hist` (each token's count); the learned part must find the largest.

For each task and seed, two models train with the same budget (steps, batch,
Adam learning rate) on lengths 1..n/2 (`n = max_seq_len`):

- `hybrid`: the compiled model, frozen, plus a learned stream of width
  `--d-learned` (heads and MLPs at every compiled layer and one extra layer)
  that reads the compiled expression and `indices` (kth) or `tokens`
  (majority), with no learned position embedding;
- `plain`: the same layers and heads with a learned residual as wide as the
  hybrid's two streams together, no compiled part.

Reported per task, model and seed: accuracy on held-out lengths 1..n/2 every
`--eval-every` steps, the examples seen when it first reached 99%, and the
final accuracy at every length 1..n (length generalisation). Results go to
`--out` (JSON) and, with `--plots DIR`, to PNGs.

Usage:
    .venv/bin/python benchmarks/hybrid.py                      # the docs/hybrid.md run
    .venv/bin/python benchmarks/hybrid.py --quick              # seconds, CI-sized
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Run as a script, Python puts benchmarks/ first on sys.path, where the other
# benchmark scripts' names (compression.py) shadow modules that jax imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tracr.compiler import compiling, lib  # noqa: E402
from tracr.hybrid import config, model, picture, training  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

K = 2


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    program: Callable[[int], rasp.SOp]  # max_seq_len -> compiled sub-computation
    reads: Callable[[rasp.SOp], Tuple[str, ...]]  # the program -> labels the learned part reads
    label: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (tokens [B, n], lengths) -> [B]
    min_len: int


def _kth_smallest(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    big = np.where(np.arange(x.shape[1])[None] < lengths[:, None], x, np.iinfo(np.int64).max)
    return np.sort(big, axis=1)[:, K - 1]


def _majority(x: np.ndarray, lengths: np.ndarray, vocab: Sequence[int]) -> np.ndarray:
    real = np.arange(x.shape[1])[None] < lengths[:, None]
    counts = np.stack([np.sum((x == v) & real, axis=1) for v in vocab], axis=1)
    return np.asarray(vocab)[np.argmax(counts, axis=1)]  # argmax: the first (smallest) of ties


def tasks(vocab: Sequence[int]) -> Dict[str, Task]:
    return {
        "kth_smallest": Task(
            "kth_smallest",
            lambda n: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1),
            lambda p: (p.label, "indices"),
            _kth_smallest,
            K,
        ),
        "majority": Task(
            "majority",
            lambda n: lib.make_hist(),
            lambda p: (p.label, "tokens"),
            lambda x, lengths: _majority(x, lengths, vocab),
            1,
        ),
    }


class Data:
    """Token ids of random sequences, and their labels at BOS (-1 elsewhere)."""

    def __init__(self, task: Task, compiled, vocab: Sequence[int]):
        self.task, self.vocab = task, np.asarray(vocab)
        inp = compiled.spec.input
        self.n = inp.max_seq_len
        self.bos, self.pad = inp.bos_id, inp.pad_id
        self.token_ids = np.asarray([inp.token_id(v) for v in vocab])
        self.class_of = {int(v): i for i, v in enumerate(vocab)}

    def draw(self, rng: np.random.Generator, size: int, lengths: Tuple[int, int]):
        length = rng.integers(lengths[0], lengths[1] + 1, size=size)
        x = self.vocab[rng.integers(0, len(self.vocab), size=(size, self.n))]
        ids = self.token_ids[np.searchsorted(self.vocab, x)]
        ids = np.where(np.arange(self.n)[None] < length[:, None], ids, self.pad)
        ids = np.concatenate([np.full((size, 1), self.bos), ids], axis=1).astype(np.int32)
        targets = np.full(ids.shape, -1, dtype=np.int32)
        labels = self.task.label(x, length)
        targets[:, 0] = [self.class_of[int(v)] for v in labels]
        return ids, targets


def accuracy(forward, params, ids, targets) -> float:
    return float(np.mean(training.predict(forward, params, ids)[:, 0] == targets[:, 0]))


def run_one(task: Task, kind: str, seed: int, args, compiled, program) -> Dict:
    data = Data(task, compiled, args.vocab)
    train_lengths = (task.min_len, args.max_seq_len // 2)
    if kind == "hybrid":
        hspec = config.HybridSpec(
            compiled=compiled.spec,
            num_classes=len(args.vocab),
            reads=task.reads(program),
            d_learned=args.d_learned,
            num_heads=args.heads,
            key_size=args.key_size,
            mlp_hidden_size=args.mlp,
            extra_layers=1,
            learned_positions=False,  # positions come from the compiled `indices`
        )
    else:
        hspec = config.HybridSpec(
            compiled=compiled.spec,
            num_classes=len(args.vocab),
            d_learned=compiled.spec.d_model + args.d_learned,
            num_heads=args.heads,
            key_size=args.key_size,
            mlp_hidden_size=args.mlp,
            extra_layers=compiled.spec.num_layers + 1,
            use_compiled=False,
        )
    params = model.init_params(hspec, compiled.params, seed=seed)
    forward = jax.jit(model.forward_fn(hspec))
    learned, frozen = model.split(params)
    test_rng = np.random.default_rng(10_000 + seed)
    test = data.draw(test_rng, args.test_size, train_lengths)

    started = time.time()
    trained, history = training.train(
        hspec,
        params,
        lambda rng, b: data.draw(rng, b, train_lengths),
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=args.lr,
        seed=seed,
        eval_fn=lambda p: accuracy(forward, p, *test),
        eval_every=args.eval_every,
        progress=args.progress,
    )
    seconds = time.time() - started
    reached = [s for s, a in zip(history.eval_steps, history.eval_values) if a >= 0.99]
    by_length = {}
    for length in range(task.min_len, args.max_seq_len + 1):
        ids, targets = data.draw(test_rng, args.test_size, (length, length))
        by_length[length] = accuracy(forward, trained, ids, targets)
    row = {
        "task": task.name,
        "model": kind,
        "seed": seed,
        "learned_params": model.count(learned),
        "frozen_params": model.count(frozen),
        "eval_steps": list(history.eval_steps),
        "accuracy": list(history.eval_values),
        "examples_to_99": reached[0] * args.batch if reached else None,
        "accuracy_by_length": by_length,
        "final_loss": float(np.mean(history.losses[-20:])),
        "train_seconds": round(seconds, 1),
        "load_average": os.getloadavg()[0],
    }
    if args.plots and seed == args.seeds[0] and kind == "hybrid":
        picture.draw(hspec, os.path.join(args.plots, f"hybrid_layout_{task.name}.png"))
    return row


def plot(rows: List[Dict], directory: str) -> None:
    from matplotlib import pyplot as plt

    names = sorted({r["task"] for r in rows})
    colors = {"hybrid": "tab:blue", "plain": "tab:orange"}
    for what in ("steps", "length"):
        fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names):
            for kind in ("hybrid", "plain"):
                mine = [r for r in rows if r["task"] == name and r["model"] == kind]
                if what == "steps":
                    xs = mine[0]["eval_steps"]
                    ys = np.asarray([r["accuracy"] for r in mine])
                else:
                    xs = sorted(int(k) for k in mine[0]["accuracy_by_length"])
                    ys = np.asarray([[r["accuracy_by_length"][k] for k in xs] for r in mine])
                ax.plot(xs, ys.mean(0), color=colors[kind], label=f"{kind} (mean of {len(mine)})")
                ax.fill_between(xs, ys.min(0), ys.max(0), color=colors[kind], alpha=0.2)
            ax.set_title(name)
            ax.set_ylim(0, 1.02)
            ax.set_ylabel("accuracy")
            if what == "steps":
                ax.set_xlabel("training steps (held-out, train lengths)")
            else:
                ax.set_xlabel("input length (trained on <= n/2)")
                ax.axvline(max(xs) // 2 + 0.5, color="grey", ls=":")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(directory, f"hybrid_{what}.png"), dpi=110)
        plt.close(fig)


def summary(rows: List[Dict], args) -> str:
    lines = [
        "| task | model | learned params | frozen params | final acc (lengths <= n/2) | "
        "examples to 99% (per seed) | acc at lengths > n/2 | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in sorted({r["task"] for r in rows}):
        for kind in ("hybrid", "plain"):
            mine = [r for r in rows if r["task"] == name and r["model"] == kind]
            final = np.mean([r["accuracy"][-1] for r in mine])
            examples = ", ".join(
                "never" if r["examples_to_99"] is None else f"{r['examples_to_99']:,}" for r in mine
            )
            long = np.mean(
                [
                    v
                    for r in mine
                    for k, v in r["accuracy_by_length"].items()
                    if int(k) > args.max_seq_len // 2
                ]
            )
            seconds = np.mean([r["train_seconds"] for r in mine])
            lines.append(
                f"| {name} | {kind} | {mine[0]['learned_params']:,} | {mine[0]['frozen_params']:,} "
                f"| {final:.3f} | {examples} | {long:.3f} | {seconds:.0f} |"
            )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["kth_smallest", "majority"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--test-size", type=int, default=512)
    parser.add_argument("--max-seq-len", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=5)
    parser.add_argument("--d-learned", type=int, default=16)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--key-size", type=int, default=8)
    parser.add_argument("--mlp", type=int, default=32)
    parser.add_argument("--out", default=None, help="write the results as JSON")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write PNGs here")
    parser.add_argument("--progress", action="store_true", help="tqdm bars")
    parser.add_argument("--quick", action="store_true", help="tiny run (CI)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.eval_every, args.test_size = [0], 40, 20, 64
        args.max_seq_len = 4
    args.vocab = list(range(1, args.vocab_size + 1))
    if args.plots:
        os.makedirs(args.plots, exist_ok=True)
    table = tasks(args.vocab)
    unknown = sorted(set(args.tasks) - set(table))
    if unknown:
        parser.error(f"unknown --tasks {unknown}; choose from {sorted(table)}.")
    started = time.time()
    rows = []
    for name in args.tasks:
        task = table[name]
        program = task.program(args.max_seq_len)
        compiled = compiling.compile_rasp_to_model(program, set(args.vocab), args.max_seq_len)
        for seed in args.seeds:
            for kind in ("hybrid", "plain"):
                row = run_one(task, kind, seed, args, compiled, program)
                rows.append(row)
                print(
                    f"{name:13s} {kind:6s} seed {seed}: acc {row['accuracy'][-1]:.3f}, "
                    f"examples to 99% {row['examples_to_99']}, by length "
                    + " ".join(f"{v:.2f}" for v in row["accuracy_by_length"].values())
                    + f"  ({row['train_seconds']} s, load {row['load_average']:.1f})",
                    flush=True,
                )
    print(summary(rows, args))
    settings = {
        k: v for k, v in vars(args).items() if k not in ("out", "plots", "progress", "quick")
    }
    machine = (
        f"{platform.machine()} {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"{machine}; {time.time() - started:.0f} s in all")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"settings": settings, "machine": machine, "rows": rows}, f, indent=1)
    if args.plots:
        plot(rows, args.plots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
