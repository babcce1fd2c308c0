"""Throughput of compiled library programs: `apply` vs the batched jit path.

For each program of `tracr.compiler.library_cases` at each max_seq_len, prints

- `apply/s`: sequences per second through `model.apply`, one at a time;
- `B=...`: sequences per second through the lean, jit-compiled forward pass
  (`tracr.transformer.fast.outputs`, run by `BatchRunner.run_padded`, sharded
  when there are several devices) on full-length inputs already encoded on
  the device, at each batch size;
- `first`: latency of the first call at the largest batch size run (trace,
  compile and run);
- `haiku@1k`: the Haiku model itself, jit-compiled, at batch 1024;
- `e2e@1k`: `model.apply_batch` on Python token lists at batch 1024
  (encoding, padding and decoding included);
- `lean/e2e`: the B=1024 lean figure over `e2e@1k` (how much of the lean
  speed reaches users of `apply_batch`; the target is at most 1.3);
- `x Tracr`: the B=1024 lean figure and `e2e@1k` over Tracr's eager `apply`
  as the issue measured it on this machine (reverse 31, hist 92,
  sort_unique 49 sequences/s, n=10).

`--roofline` adds, per program, the lean model's FLOPs and bytes moved per
sequence (`cost`), the machine's measured float32 matmul throughput and
memory bandwidth (micro-benchmarks in the same run), and the fraction of
that limit the B=1024 lean figure reaches.

Each figure is the best of repeated timed calls (at least 3, for about
`--seconds`), as `timeit` advises: on a shared machine the best call is the
one least slowed by other processes. `med@1k` is the median at B=1024, and
the header prints the load average before and after the run. Run:
`python benchmarks/throughput.py [--quick] [--roofline]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable, List, Optional, Sequence, Tuple

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


def cost(weights: fast.LeanWeights, seq_len: int, batch: int) -> Tuple[float, float]:
    """(FLOPs, bytes moved) per sequence of the lean forward pass at length `seq_len`.

    FLOPs count the multiply-adds of dense matmuls and attention (2 each);
    gathers cost none. Bytes: every weight read once per call of `batch`
    sequences, plus every activation written once and read once.
    """
    t, flops = seq_len, 0.0
    acts = float(weights.embedding.shape[2] * t)
    for s in weights.sublayers:
        if isinstance(s, fast.LeanAttention):
            r_in = 0 if s.w_qkv is None else s.w_qkv.shape[0]
            dense = 0 if s.w_qkv is None else s.w_qkv.shape[1]
            flops += 2 * t * r_in * dense
            flops += sum(2 * t * t * (k + v) for k, v in zip(s.key_sizes, s.value_sizes))
            if s.w_out.w is not None:
                flops += 2 * t * s.w_out.w.shape[0] * s.w_out.w.shape[1]
            acts += t * (s.qkv_width + len(s.key_sizes) * t + s.w_out.width)
        else:
            for p in (s.w_1, s.w_2):
                if p.w is not None:
                    flops += 2 * t * p.w.shape[0] * p.w.shape[1]
            acts += t * (s.w_1.width + s.w_2.width)
    leaves = jax.tree_util.tree_leaves(weights)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    return flops, weight_bytes / batch + 2 * 4 * acts


def machine_limits(seconds: float) -> Tuple[float, float]:
    """(float32 matmul FLOP/s, memory bytes/s) measured here by micro-benchmarks."""
    a = jnp.ones((1024, 1024), jnp.float32)
    matmul = jax.jit(lambda x: x @ x)
    jax.block_until_ready(matmul(a))
    flops = 2 * 1024**3 / _best(_timings(lambda: matmul(a), seconds))
    big = jnp.ones((64 << 20) // 4, jnp.float32)  # 64 MiB, beyond the caches
    total = jax.jit(jnp.sum)  # reads every byte, writes one number (no page faults)
    jax.block_until_ready(total(big))
    bandwidth = big.nbytes / _best(_timings(lambda: total(big), seconds))
    return flops, bandwidth


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
        fast.outputs,
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
        # Returns None: block_until_ready on the decoded lists would walk every value.
        row["e2e"] = b / _best(
            _timings(lambda: model.apply_batch(lists, max_batch=b) and None, seconds)
        )
    if name in TRACR_APPLY and n == 10 and row.get("B1024"):
        row["x_tracr"] = row["B1024"] / TRACR_APPLY[name]
        row["e2e_x_tracr"] = row.get("e2e", 0.0) / TRACR_APPLY[name]
    row["flops"], row["bytes"] = cost(weights, n + 1, 1024)
    return row


def _times(x: Optional[float]) -> str:
    return f"{x:,.0f}x" if x else "-"


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _roofline(row: dict, limits: Tuple[float, float]) -> str:
    """Cost per sequence and the fraction of the roofline limit reached at B=1024."""
    flops, moved = row["flops"], row["bytes"]
    bound = max(flops / limits[0], moved / limits[1])  # seconds per sequence at the limit
    rate = row.get("B1024")
    reached = f"{bound * rate:.1%} of limit" if rate else "-"
    side = "compute" if flops / limits[0] >= moved / limits[1] else "memory"
    return (
        f"cost: {flops / 1e3:,.1f} kFLOP, {moved / 1e3:,.1f} kB per sequence; "
        f"limit {1 / bound:,.0f}/s ({side}-bound); lean@1k reaches {reached}"
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 programs, n=10, short timings")
    parser.add_argument(
        "--roofline", action="store_true", help="cost per sequence and fraction of the limit"
    )
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
        + f" {'med@1k':>8s} {'first':>7s} {'haiku@1k':>8s} {'e2e@1k':>8s} {'lean/e2e':>8s}"
        + f" {'x Tracr':>8s} {'e2e xTr':>8s}"
    )
    limits = None
    if args.roofline:
        limits = machine_limits(seconds)
        print(
            f"machine: matmul {limits[0] / 1e9:.1f} GFLOP/s float32, "
            f"memory {limits[1] / 1e9:.1f} GB/s (load {os.getloadavg()[0]:.1f})"
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
                + f" {_ratio(row.get('B1024'), row.get('e2e')):>8s}"
                + f" {_times(x):>8s}"
                + f" {_times(row.get('e2e_x_tracr')):>8s}",
                flush=True,
            )
            if limits is not None:
                print("    " + _roofline(row, limits), flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
