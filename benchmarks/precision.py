"""Certified margins of the library programs at max_seq_len 5, 30 and 100.

For each case of `tracr.compiler.library_cases`, each max_seq_len and each
of causal / non-causal (where the case supports causal), the program is
compiled with default arguments and `certificate.certify` measures, in
float32 and with the parameters cast to bfloat16:

* the output's margin (categorical: winning logit minus runner-up, 1 for a
  clean one-hot) or error (numerical: |model - evaluator|), and the number
  of wrongly decoded positions;
* the smallest margin of any categorical intermediate SOp in the residual.

Every input is checked when there are at most --max-exhaustive of them,
otherwise a seeded sample of --samples inputs (half of full length). A
bfloat16 ladder then finds, for the programs built on SelectorWidth, the
sizes at which bfloat16 stays exact. The results go to docs/precision.md
(--out) and a summary to stdout.

    .venv/bin/python benchmarks/precision.py                    # full run
    .venv/bin/python benchmarks/precision.py --sizes 5 --out -  # quick, stdout only
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

# Run as a script, this file's folder comes first on sys.path, where
# benchmarks/compression.py would shadow the `compression` module jax imports.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import jax.numpy as jnp  # noqa: E402

from tracr.compiler import basis_inference, certificate, compiling, precision  # noqa: E402
from tracr.compiler.library_cases import LIBRARY_CASES, LibraryCase  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

# Too large to include by default on a 2-core, 24 GiB machine (measured here:
# sort_freq at 100 has D = 10513 and 3.2 billion parameters), and certifying
# it costs more still.
LARGE = {("sort_freq", 100)}

# Programs whose exactness in bfloat16 depends on max_seq_len (SelectorWidth).
BF16_LADDER_CASES = ("length", "hist", "count", "count_less_freq", "sort_unique", "sort")
BF16_LADDER_SIZES = (5, 10, 20, 30, 50, 70, 100)


def _fmt_margin(m: certificate.SOpMargin) -> str:
    if m.positions == 0:
        return "-"
    if m.numerical:
        text = f"err {m.max_error:.1e}"
    elif m.min_margin == 1.0:
        text = "1"
    elif m.min_margin > 0.5:
        text = f"1 - {1 - m.min_margin:.1e}"
    else:
        text = f"{m.min_margin:.3g}"
    if m.wrong:
        text += f" ({m.wrong} wrong)"
    return text


def _fmt_weakest(cert: certificate.Certificate) -> str:
    weakest = cert.weakest_intermediate
    return "-" if weakest is None else f"{_fmt_margin(weakest)} ({weakest.label})"


def _run(
    case: LibraryCase, max_seq_len: int, causal: bool, args: argparse.Namespace
) -> Dict[str, object]:
    program = case.program(max_seq_len)
    start = time.perf_counter()
    model = compiling.compile_rasp_to_model(program, set(case.vocab), max_seq_len, causal=causal)
    compile_s = time.perf_counter() - start
    inputs, exhaustive = certificate.default_inputs(
        case.vocab,
        max_seq_len,
        max_exhaustive=args.max_exhaustive,
        num_samples=args.samples,
        seed=args.seed,
    )
    start = time.perf_counter()
    f32 = certificate.certify(model, program, inputs, causal=causal)
    bf16 = certificate.certify(model, program, inputs, causal=causal, dtype=jnp.bfloat16)
    certify_s = time.perf_counter() - start
    return dict(
        case=case.name,
        max_seq_len=max_seq_len,
        causal=causal,
        inputs=f"all {f32.num_inputs}" if exhaustive else f"{f32.num_inputs} sampled",
        f32=f32,
        bf16=bf16,
        compile_s=compile_s,
        certify_s=certify_s,
    )


def _bf16_exact(case: LibraryCase, max_seq_len: int, causal: bool, args) -> Optional[bool]:
    program = case.program(max_seq_len)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), max_seq_len, causal=causal)
    inputs, _ = certificate.default_inputs(
        case.vocab,
        max_seq_len,
        max_exhaustive=args.max_exhaustive,
        num_samples=args.samples,
        seed=args.seed,
    )
    cert = certificate.certify(
        model, program, inputs, causal=causal, dtype=jnp.bfloat16, intermediates=False
    )
    return cert.exact


def _constants_table(sizes: Sequence[int]) -> List[str]:
    lines = [
        "| max_seq_len | categorical Aggregate c | numerical Aggregate of 0/1 c "
        "| SelectorWidth c | MLP sharpness L |",
        "|---|---|---|---|---|",
    ]
    for n in sizes:
        means = basis_inference.mean_value_set({0, 1}, n)
        numerical_c = precision.aggregate_coldness(
            n, numerical=True, value_set=means, sop_value_set={0, 1}
        )
        lines.append(
            f"| {n} | {precision.aggregate_coldness(n):.1f} | {numerical_c:.1f} | "
            f"{precision.selector_width_coldness(n):.1f} | {precision.DISCRETISING_SHARPNESS:g} |"
        )
    return lines


def _sharpness_rows(sizes: Sequence[int]) -> List[str]:
    """Numerical SelectorWidth: float32 error at the default L = 2 and at L = 100."""
    lines = [
        "| max_seq_len | error, default (L = 2) | error, mlp_exactness=100 |",
        "|---|---|---|",
    ]
    for n in sizes:
        program = rasp.numerical(
            rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ))
        ).named("leq_count")
        vocab = set(range(n))
        # tokens 0..n-1 in order: position i selects i + 1 keys, so every width
        # 1..n occurs; reversed and constant inputs add the rest.
        inputs = [tuple(range(n)), tuple(reversed(range(n))), (0,) * n]
        cells = []
        for exactness in (None, 100):
            model = compiling.compile_rasp_to_model(program, vocab, n, mlp_exactness=exactness)
            cert = certificate.certify(model, program, inputs, intermediates=False)
            cells.append(_fmt_margin(cert.output))
        lines.append(f"| {n} | {cells[0]} | {cells[1]} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5,30,100", help="max_seq_len values")
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--samples", type=int, default=64, help="inputs sampled per model")
    parser.add_argument("--max-exhaustive", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--include-large", action="store_true", help="also run LARGE")
    parser.add_argument("--no-ladder", action="store_true", help="skip the bfloat16 ladder")
    parser.add_argument("--out", default="docs/precision.md", help="markdown file, or -")
    args = parser.parse_args(argv)

    sizes = [int(s) for s in args.sizes.split(",") if s]
    wanted = set(filter(None, args.cases.split(",")))
    cases = [c for c in LIBRARY_CASES if not wanted or c.name in wanted]
    started = time.perf_counter()

    rows = []
    skipped: List[Tuple[str, int]] = []
    for case in cases:
        for n in sizes:
            if (case.name, n) in LARGE and not args.include_large:
                skipped.append((case.name, n))
                continue
            for causal in (False, True) if case.supports_causal else (False,):
                row = _run(case, n, causal, args)
                rows.append(row)
                f32, bf16 = row["f32"], row["bf16"]
                print(
                    f"{case.name:>16} N={n:<3} {'causal' if causal else '      '} "
                    f"{row['inputs']:>12}  f32 {_fmt_margin(f32.output):<22} "
                    f"weakest {_fmt_weakest(f32):<28} bf16 {_fmt_margin(bf16.output):<24} "
                    f"compile {row['compile_s']:.1f}s certify {row['certify_s']:.1f}s",
                    flush=True,
                )

    ladder: Dict[Tuple[str, bool], List[Tuple[int, Optional[bool]]]] = {}
    if not args.no_ladder:
        for case in cases:
            if case.name not in BF16_LADDER_CASES:
                continue
            for causal in (False, True) if case.supports_causal else (False,):
                results = []
                for n in BF16_LADDER_SIZES:
                    results.append((n, _bf16_exact(case, n, causal, args)))
                ladder[(case.name, causal)] = results
                print(f"bf16 ladder {case.name} causal={causal}: {results}", flush=True)

    sharpness = _sharpness_rows([10, 30, 100]) if 100 in sizes else []
    elapsed = time.perf_counter() - started
    text = _markdown(rows, skipped, ladder, sizes, sharpness, args, elapsed)
    if args.out == "-":
        print(text)
    else:
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out} ({elapsed:.0f} s)")
    return 0


def _markdown(rows, skipped, ladder, sizes, sharpness, args, elapsed) -> str:
    today = datetime.date.today().isoformat()
    out = [
        "# Precision: exact at every size, and the margins that certify it",
        "",
        "Generated by `benchmarks/precision.py` on a 2-core CPU (jax CPU), "
        f"{today}, in {elapsed / 60:.0f} minutes. Do not edit by hand.",
        "",
        "## The constants, chosen from the program",
        "",
        "A compiled model is exact when every attention head averages over its selected "
        "keys closely enough and every discretising MLP reads its input within its "
        "tolerance. `compile_rasp_to_model` derives both constants from max_seq_len N, "
        "the value sets and the float type (unit roundoff u = 2^-24 in float32); "
        "`tracr/compiler/precision.py` explains the choice and the bounds sit next to the "
        "constructions (`craft/chamber/categorical_attn.py`, `numerical_mlp.py`):",
        "",
        "- **softmax coldness c, per head**: leakage to unselected keys and BOS is at most "
        "(N+1) e^{-c/2} of the values' magnitude for an Aggregate and N e^{-c} (relative) "
        "for the 1/(w+1) of a SelectorWidth. c is the smallest value that pushes this "
        "below float32 rounding u, and below 1/8 of the smallest gap between the values "
        "the head can produce (1/(8(N+1)) relative for SelectorWidth; g/(8M) for a "
        "numerical Aggregate whose means have gap g and values magnitude M). Colder "
        "heads would only amplify upstream errors (logits are c times residual "
        "coordinates).",
        "- **MLP sharpness L = 2** (in units of the local gap): a step tolerates input "
        "errors up to (g/2)(1 - 1/L) while its float error grows like L; the ratio peaks "
        "at L = 2 (a quarter-gap tolerance). `mlp_exactness=` overrides it (Tracr's "
        "100 still works but has ~10-50x more float error).",
        "",
    ]
    out += _constants_table(sorted(set(sizes) | {10}))
    out += [
        "",
        "## Margins of the library programs",
        "",
        "Output: for a categorical output the smallest margin (the winning logit of the "
        "unembedded residual minus the runner-up; a clean one-hot gives exactly 1, so "
        "`1 - 2.4e-07` means float rounding took 2.4e-07 of it); for a numerical output "
        "the largest |model - evaluator|. Weakest intermediate: the smallest margin of any "
        "categorical SOp read from the residual stream. All inputs up to N when there "
        f"are at most {args.max_exhaustive}, else {args.samples} seeded inputs (half of "
        "length N). `wrong` counts positions the model decodes differently from the "
        "evaluator (numerical: error > 1e-3).",
        "",
        "| program | N | causal | inputs | float32 output | float32 weakest intermediate "
        "| bfloat16 output |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row['case']} | {row['max_seq_len']} | {'yes' if row['causal'] else 'no'} | "
            f"{row['inputs']} | {_fmt_margin(row['f32'].output)} | {_fmt_weakest(row['f32'])} | "
            f"{_fmt_margin(row['bf16'].output)} |"
        )
    f32_exact = sum(r["f32"].exact for r in rows)
    out += [
        "",
        f"float32: {f32_exact} of {len(rows)} models exact on every input checked.",
    ]
    if skipped:
        names = ", ".join(f"{name} at {n}" for name, n in skipped)
        out += [
            "",
            f"Not run here (too large for this machine in reasonable time): {names}; "
            "`--include-large` runs them.",
        ]
    if sharpness:
        out += [
            "",
            "## Why L = 2: a numerical SelectorWidth",
            "",
            "`numerical(SelectorWidth(Select(tokens, tokens, LEQ)))`, max error over inputs "
            "that reach every width, float32 (the decoding tolerance is 1e-3):",
            "",
        ]
        out += sharpness
    out += ["", "## bfloat16", ""]
    bf16_rows = [r for r in rows if r["bf16"].exact]
    by_program: Dict[str, List[bool]] = {}
    numerical = set()
    for row in rows:
        by_program.setdefault(row["case"], []).append(row["bf16"].exact)
        if row["bf16"].output.numerical:
            numerical.add(row["case"])
    always = sorted(name for name, ok in by_program.items() if all(ok))
    never = sorted(name for name, ok in by_program.items() if not any(ok))
    mixed = sorted(name for name, ok in by_program.items() if any(ok) and not all(ok))
    out += [
        "The same models with every parameter cast to bfloat16 (8 significant bits, "
        "u = 2^-8), run by the Haiku forward on token ids; the residual stream is then "
        f"bfloat16 too. {len(bf16_rows)} of {len(rows)} models above stay exact.",
        "",
        f"- exact at every size and mode run: {', '.join(always) or 'none'};",
        f"- exact at some sizes only: {', '.join(mixed) or 'none'};",
        f"- exact at none: {', '.join(never) or 'none'}."
        + (
            f" Numerical outputs ({', '.join(sorted(numerical & set(never)))}) cannot be: "
            "bfloat16 rounds a value like k/w by up to ~2^-9 of it, more than the 1e-3 "
            "tolerance."
            if numerical & set(never)
            else ""
        ),
        "",
        "Where a categorical bfloat16 model goes wrong, the first wrong SOp shows why "
        "(one-hot errors of ~2^-7 from a SelectorWidth MLP, multiplied by the next head's "
        "coldness; or a numerical value compared with a threshold it cannot resolve):",
        "",
    ]
    for row in rows:
        cert = row["bf16"]
        if cert.exact or cert.output.numerical:
            continue
        wrong = [m for m in cert.intermediates if m.wrong]
        first = wrong[0].describe() if wrong else "the output itself, " + cert.output.describe()
        mode = ", causal" if row["causal"] else ""
        out.append(f"- {row['case']} (N={row['max_seq_len']}{mode}): {first}")
    out.append("")
    if ladder:
        out += [
            "SelectorWidth programs: the BOS weight 1/(w+1) must be told from 1/(w+2), a "
            "relative gap of 1/(w+2), in a number with 8 significant bits, and the "
            "discretising MLP adds ~u L w of error. Exact on every input checked at:",
            "",
            "| program | causal | " + " | ".join(f"N={n}" for n in BF16_LADDER_SIZES) + " |",
            "|---|---|" + "---|" * len(BF16_LADDER_SIZES),
        ]
        for (name, causal), results in ladder.items():
            cells = ["yes" if ok else "**no**" for _, ok in results]
            out.append(f"| {name} | {'yes' if causal else 'no'} | " + " | ".join(cells) + " |")
    out += [
        "",
        "## Certifying your own model",
        "",
        "```python",
        "from tracr.compiler import certificate, compiling, lib",
        "",
        "program = lib.make_hist()",
        'model = compiling.compile_rasp_to_model(program, {"a", "b", "c"}, max_seq_len=30)',
        "cert = certificate.certify(model, program)   # 200 seeded inputs; all if few",
        "print(cert.summary())                          # output and every intermediate",
        "assert cert.exact and cert.output.min_margin > 0.99",
        "```",
        "",
        "`certify(..., dtype=jnp.bfloat16)` measures a cast model; `inputs=` checks your "
        "own inputs.",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
