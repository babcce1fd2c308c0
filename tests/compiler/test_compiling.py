"""Compiler behaviour beyond the library: each expression kind, errors, residuals."""

import numpy as np
import pytest

from tracr.compiler import compiling, equivalence, lib, validating
from tracr.rasp import rasp

VOCAB = {1, 2, 3}
MAX_SEQ_LEN = 4


def _check_exhaustive(program, vocab=VOCAB, max_seq_len=MAX_SEQ_LEN, causal=False):
    model = compiling.compile_rasp_to_model(program, vocab, max_seq_len, causal=causal)
    inputs = list(equivalence.all_inputs(vocab, max_seq_len))
    mismatches = equivalence.find_mismatches(model, program, inputs, causal=causal)
    assert not mismatches, equivalence.first_mismatches(mismatches)
    return model


def _programs():
    tok, idx = rasp.tokens, rasp.indices
    yield "map_categorical", rasp.Map(lambda x: x + 1, tok)
    yield "map_to_numerical", rasp.numerical(rasp.Map(lambda x: x / 2, tok))
    num = rasp.numerical(rasp.Map(lambda x: x * 2, tok)).named("num")
    yield "map_numerical_to_numerical", rasp.numerical(rasp.Map(lambda x: x * x + 1, num))
    yield "map_numerical_to_categorical", rasp.categorical(rasp.Map(lambda x: x > 3, num))
    yield "sequence_map", rasp.SequenceMap(lambda x, y: x * y, tok, idx)
    yield (
        "sequence_map_to_numerical",
        rasp.numerical(rasp.SequenceMap(lambda x, y: x - y, tok, idx)),
    )
    num2 = rasp.numerical(rasp.Map(lambda x: x - 1, tok)).named("num2")
    yield "linear_sequence_map", rasp.numerical(rasp.LinearSequenceMap(num, num2, 2.0, -1.0))
    yield "full_categorical", rasp.SequenceMap(lambda x, y: x + y, tok, rasp.Full(5))
    yield "full_numerical", rasp.numerical(rasp.Full(2.5))
    for comparison in rasp.Comparison:
        select = rasp.Select(tok, tok, comparison)
        yield f"selector_width_{comparison.name}", rasp.SelectorWidth(select)
        yield (
            f"numerical_aggregate_{comparison.name}",
            rasp.numerical(
                rasp.Aggregate(
                    rasp.Select(idx, idx, comparison),
                    rasp.numerical(rasp.Map(lambda x: 1 if x == 2 else 0, tok)),
                    default=0,
                )
            ),
        )
    yield (
        "categorical_aggregate_shift",
        rasp.Aggregate(rasp.Select(idx, rasp.Map(lambda i: i - 1, idx), rasp.Comparison.EQ), tok),
    )
    yield (
        "selector_and",
        rasp.SelectorWidth(
            rasp.Select(tok, tok, rasp.Comparison.EQ) & rasp.Select(idx, idx, rasp.Comparison.LT)
        ),
    )
    yield (
        "selector_or",
        rasp.SelectorWidth(
            rasp.Select(tok, tok, rasp.Comparison.LT) | rasp.Select(idx, idx, rasp.Comparison.GT)
        ),
    )
    yield "selector_not", rasp.SelectorWidth(~rasp.Select(tok, tok, rasp.Comparison.EQ))
    yield (
        "numerical_selector_width",
        rasp.numerical(rasp.SelectorWidth(rasp.Select(tok, tok, rasp.Comparison.LEQ))),
    )


PROGRAMS = list(_programs())


@pytest.mark.parametrize("name,program", PROGRAMS, ids=[n for n, _ in PROGRAMS])
def test_program_matches_evaluator(name, program):
    _check_exhaustive(program)


@pytest.mark.parametrize(
    "name,program",
    [p for p in PROGRAMS if "aggregate" in p[0] or "width" in p[0]],
    ids=[n for n, _ in PROGRAMS if "aggregate" in n or "width" in n],
)
def test_program_matches_causal_evaluator(name, program):
    _check_exhaustive(program, causal=True)


def test_constant_sop_matches_evaluator_on_its_length():
    program = rasp.SequenceMap(lambda x, y: x * y, rasp.tokens, rasp.ConstantSOp([1, 2, 3, 4]))
    model = compiling.compile_rasp_to_model(program, VOCAB, MAX_SEQ_LEN)
    inputs = [x for x in equivalence.all_inputs(VOCAB, MAX_SEQ_LEN) if len(x) == 4]
    mismatches = equivalence.find_mismatches(model, program, inputs)
    assert not mismatches, equivalence.first_mismatches(mismatches)
    assert model.apply(["compiler_bos", 3, 3, 3, 3]).decoded[1:] == [3, 6, 9, 12]


def test_bos_or_pad_in_vocab_is_rejected():
    with pytest.raises(ValueError, match="compiler_bos"):
        compiling.compile_rasp_to_model(rasp.tokens + 1, {1, "compiler_bos"}, 3)
    with pytest.raises(ValueError, match="compiler_pad"):
        compiling.compile_rasp_to_model(rasp.tokens + 1, {1, "compiler_pad"}, 3)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(mlp_exactness=float("inf")), ValueError, "mlp_exactness must be between 1 and"),
        (dict(mlp_exactness=float("nan")), ValueError, "mlp_exactness must be between 1 and"),
        (dict(mlp_exactness=1e6), ValueError, "mlp_exactness must be between 1 and"),  # x3 > 1e6
        (dict(mlp_exactness=0.5), ValueError, "mlp_exactness must be between 1 and"),
        (dict(mlp_exactness=True), TypeError, "mlp_exactness must be a number"),
        (dict(mlp_exactness="100"), TypeError, "mlp_exactness must be a number"),
        (dict(compiler_bos=None), ValueError, "compiler_bos is None"),
        (dict(compiler_bos=["b"]), TypeError, "compiler_bos must be hashable"),
        (dict(causal="yes"), TypeError, "causal must be True or False"),
        (dict(vocab=[["a"], 1]), TypeError, "vocab tokens must be hashable"),
        (dict(vocab=iter([])), ValueError, "vocab is empty"),
    ],
)
def test_arguments_that_cannot_give_an_exact_model_are_refused(kwargs, error, match):
    """inf or huge mlp_exactness once compiled to a model that output None
    everywhere; compiler_bos=None to one that ignored its first token."""
    arguments = dict(program=rasp.Map(lambda x: x, rasp.tokens), vocab={1, 2}, max_seq_len=3)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        compiling.compile_rasp_to_model(**arguments)


def test_vocab_given_as_an_iterator_or_array_compiles_as_a_set():
    program = lib.make_reverse(rasp.tokens)
    for vocab in (iter([1, 2, 3]), np.array([1, 2, 3])):
        model = compiling.compile_rasp_to_model(program, vocab, 3)
        assert model.apply(["compiler_bos", 1, 2, 3]).decoded[1:] == [3, 2, 1]


def test_largest_allowed_mlp_exactness_is_exact():
    program = lib.make_frac_prevs(rasp.tokens == 1)
    model = compiling.compile_rasp_to_model(program, {1, 2}, 4, mlp_exactness=1e6 / 4)
    inputs = list(equivalence.all_inputs({1, 2}, 4))
    mismatches = equivalence.find_mismatches(model, program, inputs)
    assert not mismatches, equivalence.first_mismatches(mismatches)


@pytest.mark.parametrize(
    "program",
    [
        rasp.numerical(rasp.Map(lambda x: x + "!", rasp.tokens)).named("shout"),
        rasp.numerical(
            rasp.Aggregate(
                rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ),
                rasp.numerical(rasp.Map(lambda x: x, rasp.tokens)).named("shout"),
                default=0,
            )
        ),
    ],
    ids=["map", "aggregate"],
)
def test_numerical_sop_of_strings_is_refused_by_name(program):
    with pytest.raises(NotImplementedError, match=r"shout_\d+ is numerical but can take the value"):
        compiling.compile_rasp_to_model(program, {"a", "b"}, 3)


def test_bad_inputs_to_apply_are_rejected():
    model = compiling.compile_rasp_to_model(rasp.Map(lambda x: x + 1, rasp.tokens), VOCAB, 3)
    with pytest.raises(ValueError, match="BOS"):
        model.apply([1, 2])
    with pytest.raises(ValueError, match="Unknown tokens"):
        model.apply(["compiler_bos", 1, 7])
    with pytest.raises(ValueError, match="at most 4"):
        model.apply(["compiler_bos", 1, 2, 3, 1])


def test_unsupported_program_names_each_expression():
    numerical_keys = rasp.numerical(rasp.Map(lambda x: x, rasp.tokens)).named("num_keys")
    bad_select = rasp.Select(numerical_keys, rasp.tokens, rasp.Comparison.EQ)
    bad_width = rasp.SelectorWidth(bad_select).named("bad_width")
    program = rasp.SequenceMap(lambda x, y: x + y, rasp.length, bad_width).named("uses_length")
    with pytest.raises(NotImplementedError) as error:
        compiling.compile_rasp_to_model(program, VOCAB, 3)
    message = str(error.value)
    assert "length" in message and "make_length" in message
    assert "num_keys" in message and "numerical" in message


def test_residual_stream_holds_intermediate_values():
    doubled = rasp.Map(lambda x: 2 * x, rasp.tokens).named("doubled")
    program = rasp.SequenceMap(lambda x, y: x + y, doubled, rasp.indices).named("out")
    model = compiling.compile_rasp_to_model(program, VOCAB, MAX_SEQ_LEN)
    out = model.apply(["compiler_bos", 3, 1, 2])
    assert out.decoded == ["compiler_bos", 6, 3, 6]
    final = np.asarray(out.residuals[-1][0])
    assert final.shape[-1] == len(model.residual_labels)
    doubled_dims = [
        i for i, label in enumerate(model.residual_labels) if label.startswith(f"{doubled.label}:")
    ]
    values = [
        int(model.residual_labels[doubled_dims[np.argmax(final[pos, doubled_dims])]].split(":")[1])
        for pos in range(1, 4)
    ]
    assert values == doubled([3, 1, 2]) == [6, 2, 4]


def test_params_follow_tracr_layout():
    model = compiling.compile_rasp_to_model(
        rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ)), VOCAB, 3
    )
    names = set(model.params)
    assert {
        "token_embed",
        "pos_embed",
        "transformer/layer_0/attn/query",
        "transformer/layer_0/attn/key",
        "transformer/layer_0/attn/value",
        "transformer/layer_0/attn/linear",
        "transformer/layer_0/mlp/linear_1",
        "transformer/layer_0/mlp/linear_2",
    } <= names
    assert model.model_config.num_layers == 1
    assert model.model_config.layer_norm is False
    assert model.params["pos_embed"]["embeddings"].shape == (4, len(model.residual_labels))


def test_compile_with_report_times_every_pass_and_builds_the_same_model():
    program = rasp.numerical(
        rasp.Aggregate(
            rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
            rasp.numerical(rasp.Map(lambda x: x == 1, rasp.tokens)),
            default=0,
        )
    )
    model, report = compiling.compile_rasp_to_model_with_report(program, VOCAB, MAX_SEQ_LEN)
    assert list(report.pass_seconds) == [
        "validate",
        "lower_combined_selectors",
        "rasp_to_graph",
        "basis_inference",
        "expr_to_craft_graph",
        "craft_graph_to_model",
        "craft_model_to_transformer",
    ]
    assert all(t >= 0 for t in report.pass_seconds.values())
    assert report.total_seconds == pytest.approx(sum(report.pass_seconds.values()))
    plain = compiling.compile_rasp_to_model(program, VOCAB, MAX_SEQ_LEN)
    assert plain.residual_labels == model.residual_labels
    for name, layer in plain.params.items():
        for key, value in layer.items():
            np.testing.assert_array_equal(value, model.params[name][key])


def test_parameters_are_identical_across_processes():
    """Same program, same weights, whatever a process's string hash seed."""
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, numpy as np\n"
        "from tracr.compiler import compiling, lib\n"
        "m = compiling.compile_rasp_to_model(lib.make_hist(), {'a', 'b', 'c', 'd', 'e'}, 4,\n"
        "                                    compiler_bos='BOS')\n"
        "h = hashlib.sha256()\n"
        "for mod in sorted(m.params):\n"
        "    for name in sorted(m.params[mod]):\n"
        "        h.update(f'{mod}/{name}'.encode())\n"
        "        h.update(np.ascontiguousarray(m.params[mod][name]).tobytes())\n"
        "print(h.hexdigest(), m.input_encoder.encoding_map)\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    ]
    assert runs[0] == runs[1] == runs[2]
    assert "'BOS'" in runs[0]


# ------------------------------------------- program shapes Tracr users published
#
# InterpBench, TracrBench, inverse-tracr and decompile-tracr could not be downloaded
# here; these are the shapes their programs use, written out: parts with plain names
# that repeat across the program, frac_prevs, sort, hist, pair balance, selector
# combinations, and numerical means.


def _published_shapes():
    tok, idx = rasp.tokens, rasp.indices
    C = rasp.Comparison
    brackets = {"(", ")", "{", "}"}
    yield "shuffle_dyck_two_pairs", lib.make_shuffle_dyck(["()", "{}"]), brackets, 4
    yield "pair_balance", lib.make_pair_balance(tok, "(", ")"), {"(", ")", "x"}, 4
    frac_a = lib.make_frac_prevs(rasp.numerical(tok == "a").named("bools"))
    frac_b = lib.make_frac_prevs(rasp.numerical(tok == "b").named("bools"))
    two_fracs = rasp.numerical(rasp.LinearSequenceMap(frac_a, frac_b, 1, -1)).named("diff")
    yield "frac_prevs_named_alike", two_fracs, {"a", "b", "c"}, 4
    yield "sort", lib.make_sort(tok, tok, max_seq_len=4, min_key=1), {1, 2, 3}, 4
    yield "sort_of_hist", lib.make_sort(tok, lib.make_hist(), max_seq_len=4, min_key=1), {1, 2}, 4
    full_and = rasp.Select(rasp.Full(1), idx, C.LEQ) & rasp.Select(tok, idx, C.GT)
    yield "selector_and_with_full", rasp.SelectorWidth(full_and), {0, 1, 2, 3}, 4
    full_or = rasp.Select(tok, rasp.Full(2), C.LT) | rasp.Select(tok, idx, C.EQ)
    yield "selector_or_with_full", rasp.SelectorWidth(full_or), {0, 1, 2, 3}, 4
    nested = (rasp.Select(tok, tok, C.EQ) & rasp.Select(idx, idx, C.LEQ)) | ~rasp.Select(
        tok, tok, C.LT
    )
    yield "selector_combination", rasp.SelectorWidth(nested), {1, 2, 3}, 4
    tripled = rasp.numerical(rasp.Map(lambda x: 3 * x, tok))
    mean = rasp.numerical(rasp.Aggregate(rasp.Select(idx, idx, C.LEQ), tripled, default=0))
    yield "numerical_mean_of_non_binary_values", mean, {1, 2, 3}, 3
    yield "categorical_linear_sequence_map", rasp.LinearSequenceMap(tok, idx, 2, -1), {1, 2, 3}, 4


PUBLISHED = list(_published_shapes())


@pytest.mark.parametrize("name,program,vocab,n", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_program_shapes_compile_exactly(name, program, vocab, n):
    _check_exhaustive(program, vocab, n)


def test_shuffle_dyck_names_each_pairs_parts_alike():
    program = lib.make_shuffle_dyck(["()", "{}"])
    parts = [e for e in validating.walk(program) if e.name == "bools_open"]
    assert len(parts) == 2 and parts[0].label != parts[1].label


@pytest.mark.parametrize("sop", [rasp.tokens, rasp.indices], ids=["tokens", "indices"])
def test_numerical_inputs_are_refused_not_compiled_to_zeros(sop):
    with pytest.raises(NotImplementedError, match=f"numerical {sop.label} can't be compiled"):
        compiling.compile_rasp_to_model(rasp.numerical(sop), VOCAB, 3)
    _check_exhaustive(rasp.numerical(rasp.Map(lambda x: x, sop)), VOCAB, 3)
