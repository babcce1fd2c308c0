"""`tracr run`: run a model on one input; optionally print the residual stream."""

from __future__ import annotations

import argparse
from typing import Any, List

from tracr.cli.errors import _as_user_error
from tracr.cli.models import _get_model
from tracr.cli.parsing import parse_input


def _format_value(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _format_cell(value: float) -> str:
    return "." if abs(value) < 5e-4 else f"{value:.3g}"


def _print_residuals(model: Any, tokens: List[Any]) -> None:
    from tracr.viz import plots  # numpy only here; matplotlib stays unimported

    stages = plots.residual_stages(model, tokens)
    columns = plots.token_labels(model, tokens)
    labels = list(model.residual_labels)
    label_width = max(len("dimension"), *(len(x) for x in labels))
    previous = None
    for name, values in stages:
        unchanged = previous is not None and bool(abs(values - previous).max() < 1e-6)
        title = name if name == "embeddings" else f"after {name}"
        print(f"\n== residual stream {title}" + (" (no change) ==" if unchanged else " =="))
        previous = values
        if unchanged:
            continue
        cells = [[_format_cell(v) for v in values[:, d]] for d in range(len(labels))]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        header = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
        print(f"{'dimension'.ljust(label_width)}  {header}")
        for label, row in zip(labels, cells):
            print(
                f"{label.ljust(label_width)}  " + "  ".join(c.rjust(w) for c, w in zip(row, widths))
            )


def cmd_run(args: argparse.Namespace) -> int:
    from tracr.rasp import causal_eval, rasp

    model, program, description = _get_model(args)
    tokens = parse_input(args.input, model)
    with _as_user_error():  # an input the model refuses (too long, ...)
        out = model.apply(tokens)
    print(f"model:  {description}")
    print(f"input:  {[_format_value(t) for t in tokens[1:]]}")
    print(f"output: {[_format_value(v) for v in out.decoded[1:]]}")
    if program is not None:
        evaluate = causal_eval.evaluate if args.causal else rasp.evaluate
        expected = evaluate(program, tokens[1:])
        print(f"RASP:   {[_format_value(v) for v in expected]}")
    if args.residuals:
        _print_residuals(model, tokens)
    return 0
