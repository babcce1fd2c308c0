"""Throughput of compiled library programs: `apply` vs the batched jit path.

For each program of `tracr.compiler.library_cases` at each max_seq_len, prints

- `apply/s`: sequences per second through `model.apply`, one at a time;
- `B=...`: sequences per second through the lean, jit-compiled forward pass
  (`tracr.transformer.fast.decode`, run by `BatchRunner.run_padded`, sharded
  when there are several devices) on full-length inputs already encoded on
  the device, at each batch size;
- `first`: latency of the first call at the largest batch size run (trace,
  compile and run);
- `haiku@1k`: the Haiku model itself, jit-compiled, at batch 1024;
- `e2e@1k`: `model.apply_batch` on Python token lists at batch 1024
  (encoding, padding and decoding included);
- `x Tracr`: the B=1024 figure over Tracr's eager `apply` as the issue
  measured it on this machine (reverse 31, hist 92, sort_unique 49
  sequences/s, n=10).

Each figure is the best of repeated timed calls (at least 3, for about
`--seconds`), as `timeit` advises: on a shared machine the best call is the
one least slowed by other processes. `med@1k` is the median at B=1024, and
the header prints the load average before and after the run. Run:
`python benchmarks/throughput.py [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence

# Run as a script, this folder leads sys.path, and a sibling module could
# shadow one that jax imports (e.g. a `compression.py`); drop the folder.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tracr.compiler import compiling  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES  # noqa: E402
from tracr.transformer import batching, fast  # noqa: E402

# Tracr's eager `apply`, sequences/s at max_seq_len 10 (from the issue).
TRACR_APPLY = {"reverse": 31.0, "hist": 92.0, "sort_unique": 49.0}


def _timings(fn: Callable[[], object], budget: float, min_reps: int = 3) -> List[float]:
    """Seconds per call of `fn` (already warmed up), repeated for about `budget`."""
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < budget:
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
        if len(times) >= 1000:
            break
    return times


def _best(times: List[float]) -> float:
    return min(times)


def _fmt_rate(x: Optional[float]) -> str:
    if x is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _inputs(model, case, n: int, batch: int, rng) -> np.ndarray:
    vocab = sorted(case.vocab, key=repr)
    ids = rng.integers(0, len(vocab), size=(batch, n))
    encoded = np.array([model.input_encoder.encoding_map[v] for v in vocab], dtype=np.int32)
    bos = np.full((batch, 1), model.input_encoder.bos_encoding, dtype=np.int32)
    return np.concatenate([bos, encoded[ids]], axis=1)


def measure(name: str, n: int, batches: Sequence[int], seconds: float, max_call: float) -> dict:
    case = CASES_BY_NAME[name]
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    model = compiling.compile_rasp_to_model(case.program(n), set(case.vocab), n)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    weights = model.lean_weights()
    lean_s = time.perf_counter() - t
    row = {
        "program": name,
        "n": n,
        "D": len(model.residual_labels),
        "R": weights.residual_width,
        "compile_s": compile_s,
        "lean_s": lean_s,
    }

    # (a) apply, one sequence at a time.
    tokens = [model.input_encoder.bos_token] + [
        sorted(case.vocab, key=repr)[i % len(case.vocab)] for i in range(n)
    ]
    model.apply(tokens)
    apply_times = _timings(lambda: model.apply(tokens).unembedded, seconds)
    row["apply"] = 1.0 / _best(apply_times)

    # (b) the lean jit path on encoded inputs, sharded over all local devices.
    runner = batching.BatchRunner(
        fast.decode,
        weights,
        model.input_encoder,
        model.output_encoder,
        weights.max_len,
        max_batch=max(batches),
    )
    estimate = None  # seconds per sequence, from the previous batch size
    for b in sorted(batches):
        if estimate is not None and estimate * b > max_call:
            row[f"B{b}"] = None  # one call would take longer than --max-call
            continue
        ids = runner.place(_inputs(model, case, n, b, rng))
        t = time.perf_counter()
        jax.block_until_ready(runner.run_padded(ids))
        row["first_s"] = time.perf_counter() - t  # kept for the largest batch run
        times = _timings(lambda ids=ids: runner.run_padded(ids), seconds)
        row[f"B{b}"] = b / _best(times)
        row[f"B{b}_median"] = b / statistics.median(times)
        estimate = _best(times) / b

    # The Haiku model, jit-compiled and batched, and apply_batch end to end.
    b = 1024
    if row.get("B1024") is not None:
        ids = jnp.asarray(_inputs(model, case, n, b, rng))
        haiku = jax.jit(lambda p, i: model.forward(p, i).unembedded_output)
        # Batching the Haiku model gains far less than 100x over apply; skip it
        # where one call would take too long.
        if _best(apply_times) * b / 100 < max_call:
            jax.block_until_ready(haiku(model.params, ids))
            row["haiku"] = b / _best(_timings(lambda: haiku(model.params, ids), seconds))
        lists = [model.input_encoder.decode(r) for r in np.asarray(ids).tolist()]
        model.apply_batch(lists, max_batch=b)
        row["e2e"] = b / _best(_timings(lambda: model.apply_batch(lists, max_batch=b), seconds))
    if name in TRACR_APPLY and n == 10 and row.get("B1024"):
        row["x_tracr"] = row["B1024"] / TRACR_APPLY[name]
    return row


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 programs, n=10, short timings")
    parser.add_argument("--programs", default=None, help="comma-separated case names")
    parser.add_argument("--lengths", default="10,30", help="max_seq_len values")
    parser.add_argument("--batches", default="1,64,1024,8192", help="batch sizes")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per cell")
    parser.add_argument(
        "--max-call", type=float, default=20.0, help="skip batch sizes whose one call is slower"
    )
    args = parser.parse_args(argv)
    names = [c.name for c in LIBRARY_CASES]
    lengths = [int(x) for x in args.lengths.split(",")]
    batches = [int(x) for x in args.batches.split(",")]
    seconds = args.seconds
    if args.quick:
        names, lengths, seconds = ["reverse", "hist", "sort_unique"], [10], 0.3
    if args.programs:
        names = args.programs.split(",")

    devices = jax.devices()
    print(
        f"backend={jax.default_backend()} devices={len(devices)} ({devices[0].device_kind}) "
        f"jax={jax.__version__} cpu_cores={os.cpu_count()} python={platform.python_version()}"
    )
    cols = ["apply"] + [f"B{b}" for b in batches] + ["haiku", "e2e"]
    header = (
        f"{'program':17s} {'n':>3s} {'D->R':>10s} "
        + " ".join(f"{c:>8s}" for c in ["apply/s"] + [f"B={b}" for b in batches])
        + f" {'med@1k':>8s} {'first':>7s} {'haiku@1k':>8s} {'e2e@1k':>8s} {'x Tracr':>8s}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    print(header)
    print("-" * len(header))
    for n in lengths:
        for name in names:
            row = measure(name, n, batches, seconds, args.max_call)
            x = row.get("x_tracr")
            print(
                f"{name:17s} {n:3d} {row['D']:>5d}->{row['R']:<4d} "
                + " ".join(f"{_fmt_rate(row.get(c)):>8s}" for c in cols[: 1 + len(batches)])
                + f" {_fmt_rate(row.get('B1024_median')):>8s}"
                + f" {row.get('first_s', float('nan')):6.2f}s"
                + f" {_fmt_rate(row.get('haiku')):>8s} {_fmt_rate(row.get('e2e')):>8s}"
                + f" {(f'{x:,.0f}x' if x else '-'):>8s}",
                flush=True,
            )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
