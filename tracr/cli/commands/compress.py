"""`tracr compress`: exact (and optionally learned) residual-stream compression."""

from __future__ import annotations

import argparse
import importlib
import pathlib

from tracr.cli.errors import UsageError
from tracr.cli.models import _get_model


def _import_optional(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise UsageError(
            f"{what} needs {module}, which is not available ({e.name} missing)."
        ) from None


def cmd_compress(args: argparse.Namespace) -> int:
    exact = _import_optional("tracr.compression.exact", "tracr compress")
    model, _, description = _get_model(args)
    result = exact.exact_compression(model, seed=args.seed)
    residual_size = len(model.residual_labels)
    kind = "every input" if result.exhaustive else f"{result.num_inputs} sampled inputs"
    print(f"model:  {description}")
    print(
        f"exact compression: d_exact = {result.d_exact} of D = {residual_size} "
        f"({result.d_exact / residual_size:.2f}), from {kind}"
    )
    w = result.w
    if args.dim is not None:
        learned = _import_optional("tracr.compression.learned", "tracr compress --dim")
        inputs, _ = exact.domain_inputs(model, seed=args.seed)
        train, held_out = learned.split_inputs(inputs, seed=args.seed)
        trained = learned.learn_compression(
            model,
            train,
            held_out,
            embedding_size=args.dim,
            steps=args.steps,
            seed=args.seed,
            progress=False,
        )
        report = trained.report
        print(
            f"learned compression: d = {args.dim}, held-out token accuracy "
            f"{report.token_accuracy:.4f} over {report.num_positions} positions"
        )
        for name, error in zip(report.layer_names, report.layer_errors):
            print(f"  {name}: residual MSE {error:.2e}")
        w = trained.w
    if args.output:
        import numpy as np

        path = pathlib.Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(w, dtype=np.float32), allow_pickle=False)
        print(f"saved w [{w.shape[0]}, {w.shape[1]}] to {path}")
    return 0
