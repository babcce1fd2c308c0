"""Lean weights split over a mesh's model axis give the unsharded outputs.

Runs in a subprocess with four forced host devices
(`--xla_force_host_platform_device_count=4`): meshes of 1x4 (model axis
only) and 2x2 (batch and model), on a mid-size program, checked against
the unsharded `apply_batch` and the RASP evaluator on sampled inputs.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from tracr.compiler import compiling
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.transformer import batching, fast, sharding

_SCRIPT = textwrap.dedent(
    """
    import jax
    from jax.sharding import PartitionSpec
    from tracr.compiler import compiling
    from tracr.compiler.library_cases import CASES_BY_NAME
    from tracr.rasp import causal_eval, rasp
    from tracr.transformer import batching, inputs, sharding

    assert jax.device_count() == 4, jax.devices()
    for name, n, causal in (("sort", 12, False), ("hist", 8, True)):
        case = CASES_BY_NAME[name]
        program = case.program(n)
        model = compiling.compile_rasp_to_model(program, set(case.vocab), n, causal=causal)
        batch = inputs.enumerate_inputs(model.spec, sample=37, seed=1)
        single = model.apply_batch(batch, mesh=batching.make_mesh(1, jax.devices()[:1]))
        evaluate = causal_eval.evaluate if causal else rasp.evaluate
        for x, out in zip(batch, single):
            assert out[1:] == evaluate(program, x[1:]), (name, x, out)
        for model_axis in (4, 2):
            mesh = batching.make_mesh(model_axis)
            weights = model.lean_weights()
            split = jax.tree_util.tree_leaves(sharding.weight_shardings(weights, mesh))
            # hist's few weights have no axis that 4 or 2 divide: all replicated.
            assert any(batching.MODEL_AXIS in s.spec for s in split) == (name == "sort")
            got = model.apply_batch(batch, mesh=mesh)
            assert got == single, (name, model_axis)
    print("SHARDED_OK")
    """
)


def test_model_axis_sharding_equals_unsharded_and_the_evaluator():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHARDED_OK" in result.stdout


def test_mesh_and_sharding_errors_name_the_problem():
    with pytest.raises(ValueError, match="divide the number of devices"):
        batching.make_mesh(model=len(jax.devices()) + 1)
    case = CASES_BY_NAME["reverse"]
    model = compiling.compile_rasp_to_model(case.program(4), set(case.vocab), 4)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    with pytest.raises(ValueError, match="'model' axis"):
        sharding.weight_shardings(model.lean_weights(), mesh)
    mesh = batching.make_mesh(1)
    shards = sharding.weight_shardings(model.lean_weights(), mesh)
    assert isinstance(shards, fast.LeanWeights)
