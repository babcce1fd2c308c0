"""Opt-in: the HookedTransformer path against a TransformerLens 3.x wheel, without a second venv.

TransformerLens 4 (installed here) has no HookedTransformer, so this runs only when
TRACR_TL3_PATH names a folder holding an unpacked 3.x wheel (and its two small extra
dependencies, better-abc and fancy-einsum; the others are shared with 4.3)::

    pip download transformer-lens==3.9.0 --no-deps -d /tmp/tl3
    unzip -q /tmp/tl3/transformer_lens-3.9.0-py3-none-any.whl -d /tmp/tl3/site
    pip install --no-deps --target /tmp/tl3/site better-abc fancy-einsum
    TRACR_TL3_PATH=/tmp/tl3/site pytest tests/export/test_transformer_lens_3.py
"""

import os
import pathlib
import subprocess
import sys

import pytest

TL3 = os.environ.get("TRACR_TL3_PATH")


@pytest.mark.skipif(not TL3, reason="set TRACR_TL3_PATH to an unpacked TransformerLens 3.x wheel")
def test_hooked_transformer_path_matches_apply_on_every_library_case():
    script = pathlib.Path(__file__).with_name("_tl3_parity.py")
    paths = [TL3, *os.environ.get("TRACR_TL3_DEPS", "").split(os.pathsep)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    run = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "failed []" in run.stdout
