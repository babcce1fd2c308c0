"""Differential fuzzing of the compiler: random RASP programs vs the evaluator.

Generates ``--num`` seeded random programs (tracr.fuzz.generator), compiles
each one and compares the model with the RASP evaluator on every input of
its domain (tracr.fuzz.checker) on every path (``--paths``, all by default:
apply, apply_batch, compressed, saved (save_model into a temporary directory,
load_model, then apply_batch) and torch (the to_torch_module export; needs
torch)), then prints the counts: exact, rejected by reason, mismatch and
crash, the programs checked per path, and those with more than 8 layers.
Every mismatch and crash is printed with the program's listing, so it can be
reproduced from its seed::

    .venv/bin/python benchmarks/fuzz.py --num 2000 --workers 2
    .venv/bin/python benchmarks/fuzz.py --minutes 10 --workers 2   # as many as fit
    .venv/bin/python benchmarks/fuzz.py --start 1234 --num 1 --show 1   # one seed

Exit status 1 if there was any mismatch or crash.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import math
import multiprocessing
import os
import sys
import time
from typing import List, Optional, Tuple

# Run as a script, this folder is sys.path[0]; a sibling script named like a
# module that jax imports (benchmarks/compression.py vs `compression`) would
# shadow it.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

from tracr.fuzz import checker, generator  # noqa: E402


def _check_seed(
    args: Tuple[int, bool, str, Tuple[str, ...], float],
) -> Optional[Tuple[int, checker.Result, str, float]]:
    seed, ci, backend, paths, deadline = args
    if time.time() > deadline:
        return None
    config = generator.CI_CONFIG if ci else generator.GeneratorConfig()
    case = generator.generate(seed, config)
    start = time.perf_counter()
    result = checker.check_case(case, backend=backend, paths=paths)
    return seed, result, str(case), time.perf_counter() - start


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=2000, help="number of programs")
    parser.add_argument("--start", type=int, default=0, help="first seed")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--ci", action="store_true", help="use the small CI settings")
    parser.add_argument(
        "--backend", choices=["numpy", "haiku"], default="numpy", help="how to run the model"
    )
    parser.add_argument(
        "--paths",
        default=",".join(checker.PATHS),
        help=f"comma-separated paths to check ({','.join(checker.PATHS)})",
    )
    parser.add_argument(
        "--minutes", type=float, default=0, help="stop starting programs after this long (0: no)"
    )
    parser.add_argument("--show", type=int, default=5, help="failures to print in full")
    parser.add_argument(
        "--show-rejected", type=int, default=0, help="rejected programs to print in full"
    )
    args = parser.parse_args(argv)

    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    unknown = [p for p in paths if p not in checker.PATHS]
    if unknown or not paths:
        parser.error(
            f"--paths: {','.join(unknown) or 'none given'}; choose from {','.join(checker.PATHS)}"
        )
    if "torch" in paths and importlib.util.find_spec("torch") is None:
        parser.error("--paths torch needs torch (pip install 'tracr[torch]'); leave it out")
    deadline = time.time() + 60 * args.minutes if args.minutes else math.inf
    seeds = range(args.start, args.start + args.num)
    jobs = [(seed, args.ci, args.backend, paths, deadline) for seed in seeds]
    start = time.perf_counter()
    if args.workers > 1:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            results = list(pool.imap_unordered(_check_seed, jobs, chunksize=4))
    else:
        results = [_check_seed(job) for job in jobs]
    elapsed = time.perf_counter() - start
    load = os.getloadavg()
    results = sorted((r for r in results if r is not None), key=lambda r: r[0])
    last = results[-1][0] if results else args.start - 1

    outcomes = collections.Counter(r.outcome for _, r, _, _ in results)
    categories = collections.Counter((r.outcome, r.category) for _, r, _, _ in results)
    partial = sum(1 for _, r, _, _ in results if r.outcome == checker.EXACT and r.flagged)
    inputs = sum(r.num_inputs for _, r, _, _ in results)
    flagged = sum(r.flagged for _, r, _, _ in results)

    config = generator.CI_CONFIG if args.ci else generator.GeneratorConfig()
    print(
        f"{len(results)} programs (seeds {args.start}..{last}, "
        f"max_seq_len in {config.max_seq_lens}, depth {config.min_depth}-{config.max_depth}"
        f" ({config.deep_share:.0%} {config.deep_depths[0]}-{config.deep_depths[1]}), "
        f"backend {args.backend}) in {elapsed:.0f} s, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    for outcome in (checker.EXACT, checker.REJECTED, checker.MISMATCH, checker.CRASH):
        count = outcomes.get(outcome, 0)
        print(f"  {outcome:<9} {count:6d}  ({100 * count / max(len(results), 1):.1f}%)")
        if outcome == checker.EXACT:
            print(
                f"    of which {partial} have inputs outside their meaning (reported by "
                f"dynamic_validate): {flagged} of {inputs} inputs"
            )
        for (o, category), n in sorted(categories.items(), key=lambda kv: -kv[1]):
            if o == outcome and category:
                print(f"    {category:<32} {n:6d}")

    exact = [r for _, r, _, _ in results if r.outcome == checker.EXACT]
    for path in paths:
        checked = sum(path in r.paths for r in exact)
        print(f"  path {path:<12} {checked:6d} exact programs compared on every input")
    deep = [r for r in exact if r.num_layers > 8]
    deepest = max((r.num_layers for r in exact), default=0)
    print(f"  more than 8 layers: {len(deep)} exact programs (deepest {deepest} layers)")

    failures = [r for r in results if r[1].outcome in (checker.MISMATCH, checker.CRASH)]
    for _seed, result, case, _ in failures[: args.show]:
        print(f"\n===== {result.outcome} ({result.category}), {case}\n{result.detail}")
    rejected = [r for r in results if r[1].outcome == checker.REJECTED]
    for _seed, result, case, _ in rejected[: args.show_rejected]:
        print(f"\n===== rejected ({result.category}), {case}\n{result.detail}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
