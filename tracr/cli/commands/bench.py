"""`tracr bench`: run a benchmark script from benchmarks/."""

from __future__ import annotations

import argparse
import pathlib
import runpy
import sys

from tracr.cli.errors import UsageError

BENCHMARKS = ("compression", "throughput", "compile_time")


def _benchmarks_dir() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parents[3] / "benchmarks"


def cmd_bench(args: argparse.Namespace) -> int:
    path = _benchmarks_dir() / f"{args.name}.py"
    if not path.is_file():
        raise UsageError(
            f"benchmark {args.name!r} is not available: {path} does not exist "
            "(benchmarks run from a source checkout)."
        )
    saved_argv = sys.argv
    sys.argv = [str(path), *args.bench_args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved_argv
    return 0
