"""Compile time of every library program, broken down by compiler pass.

For each case of `tracr.compiler.library_cases` and each max_seq_len, compiles
the program once with `compiling.compile_rasp_to_model_with_report` and prints
one table row: the seconds spent in each pass, the model's residual size D,
layers, heads, MLP width and parameter count, and the seconds per million
parameters built. A scaling summary follows: the time ratio between the
longest length and half of it (100 vs 50 by default) and the time per million
parameters at 30 against the longest length.

Each compilation runs in a fresh child process under a memory limit
(`--mem-gb`) and a time limit (`--timeout`), so a model too large for the
machine shows up as `mem` (or `time`) in the table instead of taking the
machine down; `--in-process` skips the isolation (what `--quick` does).
The `peakGB` column is the process's peak resident memory; `--run` also
builds the lean weights and runs `apply_batch` on 16 sampled inputs
(`run s`, and how many positions disagreed with the RASP evaluator).

The Haiku model's first call (jit compilation) is not compile time; pass
`--first-call` to measure it too (one input of full length, its own column).
On a shared machine, `--repeat 3` keeps the fastest of three compilations.

Usage:
    .venv/bin/python benchmarks/compile_time.py                # full table
    .venv/bin/python benchmarks/compile_time.py --quick        # CI-sized
    .venv/bin/python benchmarks/compile_time.py --lengths 60 --cases sort_freq
    .venv/bin/python benchmarks/compile_time.py --vocab-size 100 --lengths 30
    .venv/bin/python benchmarks/compile_time.py --lengths 100 --run --mem-gb 20  # big models
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, FrozenSet, List, Optional, Sequence

# Run as a script, Python puts benchmarks/ first on sys.path, where the other
# benchmark scripts' names (compression.py) shadow modules that jax imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

PASSES = (
    ("validate", "valid"),
    ("lower_combined_selectors", "lower"),
    ("rasp_to_graph", "graph"),
    ("basis_inference", "basis"),
    ("expr_to_craft_graph", "craft"),
    ("craft_graph_to_model", "layers"),
    ("craft_model_to_transformer", "assemb"),
)
DEFAULT_LENGTHS = (5, 10, 30, 50, 60, 100)
QUICK_LENGTHS = (5, 10)


def scaled_vocab(vocab: FrozenSet, size: Optional[int]) -> FrozenSet:
    """The case's vocabulary grown to `size` tokens (never shrunk).

    Integer vocabularies become 1..size (the library's sorts use min_key=1);
    string vocabularies keep their tokens (which the programs look for, such as
    brackets) and add generated ones, `w0`, `w1`, ...
    """
    if size is None or size <= len(vocab):
        return vocab
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vocab):
        return frozenset(range(1, size + 1))
    out = set(vocab)
    i = 0
    while len(out) < size:
        out.add(f"w{i}")
        i += 1
    return frozenset(out)


def measure(
    case_name: str,
    max_seq_len: int,
    vocab_size: Optional[int],
    first_call: bool,
    run: bool = False,
) -> Dict[str, object]:
    """Compiles one case and returns its row of figures (run in the worker)."""
    import numpy as np

    from tracr.compiler import compiling, library_cases

    case = library_cases.CASES_BY_NAME[case_name]
    vocab = scaled_vocab(case.vocab, vocab_size)
    program = case.program(max_seq_len)
    start, start_cpu = time.perf_counter(), time.process_time()
    if hasattr(compiling, "compile_rasp_to_model_with_report"):
        model, report = compiling.compile_rasp_to_model_with_report(
            program, set(vocab), max_seq_len
        )
        pass_seconds = report.pass_seconds
    else:  # an older checkout (--tracr-root): the total only
        model = compiling.compile_rasp_to_model(program, set(vocab), max_seq_len)
        pass_seconds = {}
    total, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    params = sum(int(np.size(w)) for layer in model.params.values() for w in layer.values())
    config = model.model_config
    row: Dict[str, object] = {
        "case": case_name,
        "n": max_seq_len,
        "vocab": len(vocab),
        "D": len(model.residual_labels),
        "layers": config.num_layers,
        "heads": config.num_heads,
        "mlp": config.mlp_hidden_size,
        "params": params,
        "passes": pass_seconds,
        "total": total,
        "cpu": cpu,
    }
    if first_call:
        tokens = ["compiler_bos"] + [sorted(vocab, key=repr)[0]] * max_seq_len
        start = time.perf_counter()
        model.apply(tokens)
        row["first_call"] = time.perf_counter() - start
    if run:
        row.update(run_sample(model, program))
    row["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    return row


def run_sample(model, program, num: int = 16) -> Dict[str, object]:
    """Lean weights + `apply_batch` on `num` sampled inputs, checked against RASP."""
    from tracr.rasp import rasp
    from tracr.transformer import inputs

    start = time.perf_counter()
    batch = inputs.enumerate_inputs(model.spec, sample=num, seed=0)
    got = model.apply_batch(batch)
    seconds = time.perf_counter() - start
    wrong = 0
    for x, out in zip(batch, got):
        for e, g in zip(rasp.evaluate(program, x[1:]), out[1:]):
            numerical = rasp.is_numerical(program) and e is not None
            wrong += (abs(e - g) > 1e-3) if numerical else (e != g)
    return {"run_s": seconds, "run_wrong": int(wrong), "run_num": num}


def run_isolated(
    case_name: str,
    max_seq_len: int,
    vocab_size: Optional[int],
    first_call: bool,
    mem_gb: float,
    timeout: float,
    tracr_root: str = "",
    run: bool = False,
) -> Dict[str, object]:
    """`measure` in a child process limited to `mem_gb` of resident memory and `timeout` s.

    The limit is on resident memory (polled), not address space: the
    compiler writes big models into zero-filled memory that costs nothing
    until touched, which an address-space limit would count in full.
    """
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        case_name,
        str(max_seq_len),
        str(vocab_size or 0),
        "1" if first_call else "0",
        "1" if run else "0",
        tracr_root,
    ]
    failed: Dict[str, object] = {"case": case_name, "n": max_seq_len}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        start, killed = time.perf_counter(), None
        while proc.poll() is None:
            if time.perf_counter() - start > timeout:
                killed = "time"
            elif _rss_gib(proc.pid) > mem_gb:
                killed = "mem"
            if killed:
                proc.kill()
                proc.wait()
                return {**failed, "error": killed}
            time.sleep(0.2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for line in stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    memory = "MemoryError" in stderr or "RESOURCE_EXHAUSTED" in stderr
    if not memory and proc.returncode != 0:
        sys.stderr.write(stderr[-2000:])
    return {**failed, "error": "mem" if memory else f"rc={proc.returncode}"}


def _rss_gib(pid: int) -> float:
    """Resident memory of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / (1 << 20)
    except OSError:
        pass
    return 0.0


def _worker(argv: Sequence[str]) -> None:
    case_name, n, vocab_size, first_call, run, tracr_root = argv
    if tracr_root:
        sys.path.insert(0, tracr_root)
    row = measure(case_name, int(n), int(vocab_size) or None, first_call == "1", run == "1")
    print(json.dumps(row), flush=True)


def format_row(row: Dict[str, object], first_call: bool) -> str:
    head = f"{row['case']:<17} {row['n']:>4}"
    if "error" in row:
        return f"{head}  {'(' + str(row['error']) + ')':>6}"
    passes = row["passes"]
    times = " ".join(f"{passes.get(name, 0.0):>6.2f}" for name, _ in PASSES)
    mparams = row["params"] / 1e6
    per_m = row["total"] / mparams if mparams else float("nan")
    out = (
        f"{head} {row['vocab']:>5} {row['D']:>6} {row['layers']:>3} {row['heads']:>3} "
        f"{row['mlp']:>7} {mparams:>9.2f} {times} {row['total']:>7.2f} {row['cpu']:>6.2f} "
        f"{per_m:>7.3f}"
    )
    if first_call:
        out += f" {row.get('first_call', float('nan')):>7.2f}"
    out += f" {row.get('peak_gib', float('nan')):>6.2f}"
    if "run_s" in row:
        out += f" {row['run_s']:>6.2f} {row['run_wrong']:>2}/{row['run_num']}"
    return out


def header(first_call: bool) -> str:
    names = " ".join(f"{short:>6}" for _, short in PASSES)
    out = (
        f"{'program':<17} {'N':>4} {'vocab':>5} {'D':>6} {'lay':>3} {'hds':>3} "
        f"{'mlp':>7} {'params(M)':>9} {names} {'total s':>7} {'cpu s':>6} {'s/Mpar':>7}"
    )
    if first_call:
        out += f" {'1st call':>7}"
    return out + f" {'peakGB':>6} {'run s':>6} {'wrong':>5}"


def scaling_summary(rows: List[Dict[str, object]], lengths: Sequence[int]) -> str:
    """Per program: growth from half the longest length (or the next longest) to the
    longest, and the seconds per million parameters at 30 against the longest.

    Times are wall-clock ("t") and CPU ("cpu") seconds of the compilation; on a
    busy machine the CPU figures are the steadier ones.
    """
    ok = {(r["case"], r["n"]): r for r in rows if "error" not in r}
    cases = list(dict.fromkeys(r["case"] for r in rows))
    lengths = sorted(lengths)
    lines = []
    if len(lengths) >= 2:
        hi = lengths[-1]
        lo = hi // 2 if hi // 2 in lengths else lengths[-2]  # 100 vs 50 by default
        ref = 30 if 30 in lengths and 30 != hi else lengths[0]
        lines.append(
            f"{'program':<17} {f't({hi})/t({lo})':>12} {f'cpu {hi}/{lo}':>12} "
            f"{f'D({hi})/D({lo})':>12} {f'P({hi})/P({lo})':>12} {f's/Mpar@{ref}':>12} "
            f"{f's/Mpar@{hi}':>12} {'ratio':>7}"
        )

        def per_m(x, key="total"):
            return x[key] / (x["params"] / 1e6) if x else float("nan")

        for case in cases:
            a, b, r = ok.get((case, lo)), ok.get((case, hi)), ok.get((case, ref))
            if a is None or b is None:
                missing = ", ".join(str(n) for n, x in ((lo, a), (hi, b)) if x is None)
                lines.append(f"{case:<17} (not compiled at {missing})")
                continue
            lines.append(
                f"{case:<17} {b['total'] / a['total']:>12.2f} {b['cpu'] / a['cpu']:>12.2f} "
                f"{b['D'] / a['D']:>12.2f} {b['params'] / a['params']:>12.2f} "
                f"{per_m(r):>12.3f} {per_m(b):>12.3f} {per_m(b) / per_m(r):>7.2f}"
            )
    for n in lengths:
        at_n = [r for r in rows if r["n"] == n]
        done = [r for r in at_n if "error" not in r]
        if done:
            slowest = max(done, key=lambda r: r["total"])
            lines.append(
                f"max_seq_len {n}: {len(done)} programs in {sum(r['total'] for r in done):.2f} s "
                f"({sum(r['cpu'] for r in done):.2f} s CPU), slowest {slowest['case']} "
                f"{slowest['total']:.2f} s"
            )
        failed = ", ".join(f"{r['case']} ({r['error']})" for r in at_n if "error" in r)
        if failed:
            lines.append(f"max_seq_len {n}: not compiled: {failed}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "--worker":
        _worker(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: lengths 5 and 10")
    parser.add_argument("--lengths", type=int, nargs="+", help="max_seq_len values")
    parser.add_argument("--cases", nargs="+", help="library case names (default: all)")
    parser.add_argument(
        "--vocab-size", type=int, default=None, help="grow every vocabulary to this many tokens"
    )
    parser.add_argument("--first-call", action="store_true", help="also time the jit first call")
    parser.add_argument("--in-process", action="store_true", help="no child processes")
    parser.add_argument(
        "--run",
        action="store_true",
        help="also build the lean weights and run apply_batch on 16 sampled inputs "
        "(checked against the RASP evaluator)",
    )
    parser.add_argument("--mem-gb", type=float, default=12.0, help="memory limit per compile")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per compile")
    parser.add_argument(
        "--repeat", type=int, default=1, help="compile each case this many times, keep the fastest"
    )
    parser.add_argument(
        "--tracr-root",
        default="",
        help="benchmark the tracr package in this folder (e.g. an older checkout) instead",
    )
    parser.add_argument("--json", help="also write every row to this JSON file")
    parser.add_argument(
        "--plot", help="also draw compile time against max_seq_len to this PNG (matplotlib)"
    )
    args = parser.parse_args(argv)

    from tracr.compiler import library_cases

    lengths = args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS)
    names = args.cases or [c.name for c in library_cases.LIBRARY_CASES]
    unknown = [n for n in names if n not in library_cases.CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {sorted(library_cases.CASES_BY_NAME)}")
    in_process = (args.in_process or args.quick) and not args.tracr_root

    print(header(args.first_call), flush=True)
    rows = []
    for n in lengths:
        for name in names:
            tries = []
            for _ in range(max(1, args.repeat)):
                if in_process:
                    tries.append(measure(name, n, args.vocab_size, args.first_call, args.run))
                else:
                    tries.append(
                        run_isolated(
                            name,
                            n,
                            args.vocab_size,
                            args.first_call,
                            args.mem_gb,
                            args.timeout,
                            os.path.abspath(args.tracr_root) if args.tracr_root else "",
                            args.run,
                        )
                    )
                if "error" in tries[-1]:
                    break
            done = [t for t in tries if "error" not in t]
            row = min(done, key=lambda t: t["total"]) if done else tries[-1]
            rows.append(row)
            print(format_row(row, args.first_call), flush=True)
    print()
    print(scaling_summary(rows, lengths))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    if args.plot:
        plot_scaling(rows, args.plot)


def plot_scaling(rows: List[Dict[str, object]], path: str) -> None:
    """Log-log plot of compile time and of parameters against max_seq_len, per program.

    On log-log axes a cost growing like n^k is a line of slope k, so a program
    whose compile time grows faster than its model shows a steeper line in
    the left panel than in the right one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(12, 5))
    for ax in (ax_t, ax_p):  # 20 colours: one per program
        ax.set_prop_cycle(color=plt.get_cmap("tab20").colors)
    for case in cases:
        done = sorted(
            (r for r in rows if r["case"] == case and "error" not in r), key=lambda r: r["n"]
        )
        if not done:
            continue
        ns = [r["n"] for r in done]
        (line,) = ax_t.plot(ns, [r["total"] for r in done], marker="o", ms=3, label=case)
        ax_p.plot(ns, [r["params"] / 1e6 for r in done], marker="o", ms=3, color=line.get_color())
    for ax, ylabel in ((ax_t, "compile time (s)"), (ax_p, "parameters (millions)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("max_seq_len")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7, ncol=2)
    fig.suptitle("compile_rasp_to_model: time and model size against max_seq_len")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
