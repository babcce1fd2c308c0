"""`AssembledTransformerModel.apply_batch` gives `apply`'s decoded outputs.

Inputs of mixed lengths are padded, bucketed, chunked and (with several
devices) sharded; none of that may change a decoded value. The reference is
`apply`, one sequence at a time, on the full Haiku model. Compared: every
position where the program has a value (categorical outputs exactly,
numerical ones to float32 rounding). Where the RASP evaluator gives None the
model outputs float noise (1e-8 and below), no output direction reaches
`spec.ACTIVE_THRESHOLD`, and both decode None.
"""

import copy
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tracr.compiler import compiling, equivalence
from tracr.compiler.library_cases import CASES_BY_NAME, LIBRARY_CASES
from tracr.rasp import causal_eval, rasp
from tracr.transformer import batching, fast

MAX_SEQ_LEN = 5
BOS = compiling.COMPILER_BOS
# Two lengths keep the one-by-one reference cheap (the Haiku model behind
# `apply` compiles once per length); the short ones are padded to the long.
LENGTHS = (1, 5)
CAUSAL_CASES = ("hist", "frac_prevs", "shuffle_dyck")


def _mixed_inputs(vocab, num=18, seed=0):
    """Token lists of LENGTHS, shuffled so that lengths alternate in the batch."""
    rng = np.random.default_rng(seed)
    tokens = sorted(vocab, key=repr)
    lengths = rng.permutation(np.resize(LENGTHS, num))
    return [[BOS] + [tokens[i] for i in rng.integers(0, len(tokens), n)] for n in lengths]


def _assert_same(program, inputs, got, want, causal=False):
    evaluate = causal_eval.evaluate if causal else rasp.evaluate
    assert len(got) == len(want) == len(inputs)
    compared = 0
    for x, g, w in zip(inputs, got, want):
        assert len(g) == len(w) == len(x) and g[0] == w[0] == BOS
        for e, gv, wv in zip(evaluate(program, x[1:]), g[1:], w[1:]):
            if e is None:  # both decode None where no output direction is active
                assert rasp.is_numerical(program) or gv is None and wv is None, (x, g, w)
                continue
            compared += 1
            if rasp.is_numerical(program):
                assert abs(gv - wv) <= 1e-6 * max(1.0, abs(wv)), (x, g, w)
            else:
                assert gv == wv, (x, g, w)
    assert compared > 0


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_apply_batch_equals_apply_one_by_one(case):
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN)
    inputs = _mixed_inputs(case.vocab)
    want = [model.apply(x).decoded for x in inputs]
    _assert_same(program, inputs, model.apply_batch(inputs), want)


@pytest.mark.parametrize("name", CAUSAL_CASES)
def test_causal_apply_batch_equals_apply_one_by_one(name):
    case = CASES_BY_NAME[name]
    assert case.supports_causal
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN, causal=True)
    inputs = _mixed_inputs(case.vocab, seed=1)
    want = [model.apply(x).decoded for x in inputs]
    _assert_same(program, inputs, model.apply_batch(inputs), want, causal=True)


@pytest.fixture(scope="module")
def sort_model():
    case = CASES_BY_NAME["sort_unique"]
    return compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), 5)


def test_chunks_and_buckets_do_not_change_outputs(sort_model):
    # Distinct tokens only: sort_unique has a value at every position.
    inputs = [[BOS, 3, 1, 2], [BOS], [BOS, 2, 1], [BOS, 1, 3]] * 3
    want = [sort_model.apply(x).decoded for x in inputs[:4]] * 3
    assert sort_model.apply_batch(inputs) == want
    assert sort_model.apply_batch(inputs, max_batch=3) == want  # chunks of 4 (a power of 2)
    assert sort_model.apply_batch(inputs[:1]) == want[:1]
    assert sort_model.apply_batch([]) == []


def test_padding_to_a_longer_bucket_keeps_real_positions(sort_model):
    weights = sort_model.lean_weights()
    runner = batching.BatchRunner(
        fast.outputs,
        weights,
        sort_model.input_encoder,
        sort_model.output_encoder,
        weights.max_len,
    )
    assert runner.buckets == (1, 2, 4, 6)
    short = [[BOS, 2, 3]]
    encoded = runner.encode(short)
    assert encoded.ids.shape == (1, 3)
    ids = np.full((1, 6), sort_model.input_encoder.pad_encoding, np.int32)
    ids[0, :3] = encoded.ids[0]
    padded = np.asarray(runner.run_padded(ids))[:, :3]
    assert runner.decode(padded, encoded.lengths) == [sort_model.apply(short[0]).decoded]


def test_new_params_rebuild_the_lean_weights(sort_model):
    model = copy.copy(sort_model)
    model._batch_runners = {}
    x = [[BOS, 3, 1, 2]]
    before = model.apply_batch(x)
    model.params = {k: dict(v) for k, v in model.params.items()}  # same values, new object
    assert model.apply_batch(x) == before
    assert len(model._batch_runners) == 1
    ((_, runner),) = model._batch_runners.values()
    model.apply_batch(x)  # unchanged content: the same runner, no rebuild
    assert list(model._batch_runners.values())[0][1] is runner


def _fresh_copy(model):
    model = copy.copy(model)
    model.params = {k: dict(v) for k, v in model.params.items()}
    model._batch_runners = {}
    return model


def test_params_edited_in_place_give_fresh_outputs(sort_model):
    model = _fresh_copy(sort_model)
    x = [[BOS, 3, 1, 2], [BOS, 2, 1]]
    before = model.apply_batch(x)
    assert before == [model.apply(s).decoded for s in x]
    # Swap two token rows of the embedding in place: tokens 1 and 3 trade meanings.
    table = np.array(model.params["token_embed"]["embeddings"])
    one, three = model.input_encoder.encoding_map[1], model.input_encoder.encoding_map[3]
    table[[one, three]] = table[[three, one]]
    model.params["token_embed"]["embeddings"] = table  # a numpy leaf, mutable
    after = model.apply_batch(x)
    assert after != before and after == [model.apply(s).decoded for s in x]
    table[[one, three]] = table[[three, one]]  # edited again, same object
    assert model.apply_batch(x) == before == [model.apply(s).decoded for s in x]


def test_replaced_output_encoder_gives_fresh_outputs(sort_model):
    from tracr.craft import bases
    from tracr.transformer import encoder

    model = _fresh_copy(sort_model)
    x = [[BOS, 3, 1, 2]]
    before = model.apply_batch(x)
    values = [model.output_encoder.decoding_map[i] for i in range(model.output_encoder.vocab_size)]
    model.output_encoder = encoder.CategoricalEncoder(
        [bases.BasisDirection("renamed", ("v", v)) for v in values]
    )
    after = model.apply_batch(x)
    assert after == [[BOS] + [("v", v) for v in before[0][1:]]]
    assert after == [model.apply(x[0]).decoded]


@pytest.mark.parametrize("special", ["bos", "pad"])
def test_bos_or_pad_inside_an_input_is_refused_with_its_position(sort_model, special):
    token = BOS if special == "bos" else sort_model.input_encoder.pad_token
    name = special.upper()
    bad = [BOS, 1, token, 2]
    with pytest.raises(ValueError, match=rf"{name} token .* at position 2"):
        sort_model.apply(bad)
    with pytest.raises(ValueError, match=rf"{name} token .* at sequence 1, position 2"):
        sort_model.apply_batch([[BOS, 1], bad])


def test_a_bad_sequence_in_a_later_pipeline_chunk_is_named_by_its_batch_index(sort_model):
    """Chunks are encoded one by one; the error still names the whole batch's index."""
    good = [[BOS, 1, 2]] * 9
    bad = good[:6] + [[BOS, 2, 7]] + good
    with pytest.raises(ValueError, match=r"Unknown tokens \[7\] \(sequence 6, position 2\)"):
        sort_model.apply_batch(bad, max_batch=2)  # chunks of 2: the bad one is in the 4th
    assert sort_model.apply_batch(good, max_batch=2) == [sort_model.apply(good[0]).decoded] * 9


def test_no_output_direction_decodes_none_as_the_evaluator():
    """shift_by(1) selects nothing at position 0: RASP gives None there."""
    from tracr.compiler import lib

    program = lib.shift_by(1, rasp.tokens)
    vocab = {"a", "b", "c"}
    model = compiling.compile_rasp_to_model(program, vocab, 4)
    inputs = [[BOS, *x] for x in equivalence.all_inputs(vocab, 4)]
    want = [[BOS] + rasp.evaluate(program, x[1:]) for x in inputs]
    assert any(None in w for w in want)
    assert model.apply_batch(inputs) == want
    assert [model.apply(x).decoded for x in inputs[:: len(inputs) // 20]] == want[
        :: len(inputs) // 20
    ]


def test_numerical_apply_and_apply_batch_agree_to_float32_rounding():
    case = CASES_BY_NAME["frac_prevs"]
    model = compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), 5)
    inputs = [[BOS, *x] for x in equivalence.sample_inputs(case.vocab, 5, 24, seed=2)]
    got = model.apply_batch(inputs)
    for x, g in zip(inputs, got):
        want = model.apply(x).decoded
        assert g[0] == want[0] == BOS
        np.testing.assert_allclose(g[1:], want[1:], rtol=2**-22, atol=2**-24)


@pytest.mark.parametrize(
    "bad,match",
    [
        ([[1, 2]], "BOS"),
        ([[BOS, 7]], "Unknown tokens"),
        ([[BOS, 1, 2, 3, 1, 2, 3]], "at most"),
        ([[BOS, True]], "Unknown tokens"),  # True == 1 in Python, but not a vocab token
        ([[BOS, 1], []], "BOS"),
        ([[BOS, [1]]], r"Inputs \{\[1\]\} not found"),  # unhashable: unknown, not a crash
    ],
)
def test_bad_inputs_raise_the_same_errors_as_apply(sort_model, bad, match):
    with pytest.raises(ValueError, match=match):
        sort_model.apply_batch(bad)
    with pytest.raises(ValueError, match=match):
        for x in bad:
            sort_model.apply(x)


def test_numerical_program_decodes_floats():
    case = CASES_BY_NAME["frac_prevs"]
    model = compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), 5)
    got = model.apply_batch([[BOS, "x", "y", "x"], [BOS, "y"]])
    assert got[0][0] == BOS and isinstance(got[0][1], float)
    np.testing.assert_allclose(got[0][1:], [1.0, 0.5, 2 / 3], atol=1e-3)
    np.testing.assert_allclose(got[1][1:], [0.0], atol=1e-3)


_SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from tracr.compiler import compiling
    from tracr.compiler.library_cases import CASES_BY_NAME
    from tracr.transformer import batching, fast

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    for name, causal in (("sort_unique", False), ("frac_prevs", True), ("hist", True)):
        case = CASES_BY_NAME[name]
        model = compiling.compile_rasp_to_model(case.program(5), set(case.vocab), 5, causal=causal)
        vocab = sorted(case.vocab, key=repr)
        inputs = [
            ["compiler_bos"] + [vocab[i] for i in rng.integers(0, len(vocab), rng.integers(0, 6))]
            for _ in range(11)
        ]
        weights = model.lean_weights()
        def runner(devices):
            return batching.BatchRunner(fast.outputs, weights, model.input_encoder,
                                        model.output_encoder, weights.max_len, devices=devices)
        sharded, single = runner(None), runner(jax.devices()[:1])
        assert sharded.num_devices == 4 and single.num_devices == 1
        got, want = sharded(inputs), single(inputs)
        assert got == want, (name, got, want)
        assert model.apply_batch(inputs) == want
        # 11 sequences pad to 16 rows, 4 per device.
        out = sharded.run_padded(np.zeros((16, 6), np.int32) + model.input_encoder.bos_encoding)
        assert len(out.sharding.device_set) == 4 and out.shape == (16, 6)
    print("SHARDED_OK")
    """
)


def test_sharded_over_four_host_devices_equals_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SHARDED_OK" in result.stdout


def test_equivalence_sampler_inputs_run_batched(sort_model):
    inputs = [[BOS, *x] for x in equivalence.sample_inputs({1, 2, 3}, 5, 40, seed=3)]
    program = CASES_BY_NAME["sort_unique"].program(5)
    for x, out in zip(inputs, sort_model.apply_batch(inputs)):
        expected = rasp.evaluate(program, x[1:])
        assert all(e is None or e == o for e, o in zip(expected, out[1:]))


def test_micro_batches_inside_a_call_give_the_same_outputs(sort_model):
    program = CASES_BY_NAME["sort_unique"].program(MAX_SEQ_LEN)
    inputs = [[BOS, *x] for x in equivalence.sample_inputs({1, 2, 3}, 5, 64, seed=4)]
    weights = sort_model.lean_weights()

    def run(micro_batch):
        runner = batching.BatchRunner(
            fast.outputs,
            weights,
            sort_model.input_encoder,
            sort_model.output_encoder,
            weights.max_len,
            micro_batch=micro_batch,
        )
        return runner(inputs)

    _assert_same(program, inputs, run(8), run(0))


@pytest.mark.parametrize(
    "batch", [{(BOS, 1): 0}, {(BOS, 1)}, "abc", None, np.array([[BOS, 1]], dtype=object)]
)
def test_a_batch_that_is_not_a_list_of_lists_is_a_type_error(sort_model, batch):
    with pytest.raises(TypeError, match="Expected a list of token lists"):
        sort_model.apply_batch(batch)


@pytest.mark.parametrize("max_batch", ["8", 0, 2.0, True])
def test_max_batch_must_be_a_positive_int(sort_model, max_batch):
    with pytest.raises(ValueError, match="max_batch must be an int >= 1"):
        sort_model.apply_batch([[BOS, 1]], max_batch=max_batch)
