"""Exact at every size: default precision constants keep models exact up to max_seq_len 100.

Each library program is compiled with default arguments at max_seq_len 10, 30
and 100 (vocabularies of 3 to 40 tokens, causal and not where the program
supports it) and run on a seeded sample of inputs, mostly long ones; it must
give the evaluator's output with a clear margin.
"""

import math
import random

import pytest

from tracr.compiler import certificate, compiling, lib, precision
from tracr.compiler.library_cases import CASES_BY_NAME
from tracr.craft.chamber import categorical_attn, numerical_mlp
from tracr.rasp import rasp

LETTERS = [chr(ord("a") + i) for i in range(26)] + [f"t{i}" for i in range(14)]
VOCAB_SIZE = {10: 3, 30: 10, 100: 40}  # tokens per max_seq_len: 3 to 40
NUM_INPUTS = {10: 40, 30: 30, 100: 20}


def _letters(n):
    return set(LETTERS[:n])


def _programs():
    """(name, program builder, vocab builder, supports causal) for the programs under test."""
    yield "length", lambda n: lib.make_length(), _letters, True
    yield "hist", lambda n: lib.make_hist(), _letters, True
    yield "count", lambda n: lib.make_count(rasp.tokens, "a"), _letters, True
    yield (
        "sort_unique",
        lambda n: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        lambda size: set(range(1, size + 1)),
        False,
    )
    # sort's keys take |vocab| * max_seq_len values: at most 10 tokens keep it small.
    yield (
        "sort",
        lambda n: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=n, min_key=1),
        lambda size: set(range(1, min(size, 10) + 1)),
        False,
    )
    yield "reverse", lambda n: lib.make_reverse(rasp.tokens), _letters, False
    yield (
        "frac_prevs",
        CASES_BY_NAME["frac_prevs"].make_program,
        lambda s: {"x"} | _letters(s - 1),
        True,
    )
    yield (
        "pair_balance",
        lambda n: lib.make_pair_balance(rasp.tokens, "(", ")"),
        lambda size: {"(", ")"} | _letters(size - 2),
        True,
    )


def _cases():
    for name, make_program, make_vocab, supports_causal in _programs():
        for max_seq_len in (10, 30, 100):
            for causal in (False, True) if supports_causal else (False,):
                case_id = f"{name}-N{max_seq_len}" + ("-causal" if causal else "")
                yield pytest.param(name, make_program, make_vocab, max_seq_len, causal, id=case_id)


def _sample(vocab, max_seq_len, num, seed):
    """Seeded inputs: half of them as long as possible, the rest of random length."""
    rng = random.Random(seed)
    tokens = sorted(vocab, key=repr)
    lengths = [max_seq_len if i % 2 == 0 else rng.randint(1, max_seq_len) for i in range(num)]
    return [tuple(rng.choice(tokens) for _ in range(n)) for n in lengths]


@pytest.mark.parametrize("name,make_program,make_vocab,max_seq_len,causal", list(_cases()))
def test_default_compilation_matches_evaluator(name, make_program, make_vocab, max_seq_len, causal):
    program = make_program(max_seq_len)
    vocab = make_vocab(VOCAB_SIZE[max_seq_len])
    model = compiling.compile_rasp_to_model(program, vocab, max_seq_len, causal=causal)
    inputs = _sample(vocab, max_seq_len, NUM_INPUTS[max_seq_len], seed=max_seq_len)
    cert = certificate.certify(model, program, inputs, causal=causal, intermediates=False)
    assert cert.num_inputs == len(inputs)
    output = cert.output
    assert output.wrong == 0, output.describe()
    if output.numerical:
        # Float32 rounding of a mean of <= 100 terms, not the decoding tolerance.
        assert output.max_error < 1e-5, output.describe()
    else:
        assert output.min_margin > 0.99, output.describe()


def test_numerical_selector_width_is_exact_at_100():
    """The float error of a numerical SelectorWidth grows with the MLP sharpness.

    With Tracr-style mlp_exactness=100 the decoded widths drift by ~4e-3 at
    max_seq_len 100 (beyond the 1e-3 tolerance); the default sharpness 2 stays
    well inside it.
    """
    program = rasp.numerical(
        rasp.SelectorWidth(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.LEQ))
    ).named("leq_count")
    vocab = set(range(40))
    model = compiling.compile_rasp_to_model(program, vocab, 100)
    rng = random.Random(0)
    # Sorted inputs of length 100 reach every width 1..100 (the largest errors).
    inputs = [tuple(sorted(rng.choice(range(40)) for _ in range(100))) for _ in range(4)]
    inputs.append(tuple(range(40)) * 2 + tuple(range(20)))
    cert = certificate.certify(model, program, inputs, intermediates=False)
    assert cert.exact and cert.output.max_error < 5e-4, cert.output.describe()


def test_tracr_style_mlp_exactness_still_compiles_exactly():
    program = lib.make_hist()
    model = compiling.compile_rasp_to_model(program, {"a", "b"}, 10, mlp_exactness=100)
    cert = certificate.certify(model, program, num_samples=20)
    assert cert.exact and cert.output.min_margin > 0.99


@pytest.mark.parametrize("max_seq_len", [1, 5, 30, 100, 10_000])
def test_derived_coldness_meets_its_tolerance(max_seq_len):
    u = precision.unit_roundoff()
    assert u == 2.0**-24
    c = precision.aggregate_coldness(max_seq_len)
    assert categorical_attn.leakage_bound(c, max_seq_len) == pytest.approx(u, rel=1e-9)
    c_sw = precision.selector_width_coldness(max_seq_len)
    bound = categorical_attn.leakage_bound(c_sw, max_seq_len, always_attend_to_bos=True)
    assert bound == pytest.approx(min(u, 1 / (8 * (max_seq_len + 1))), rel=1e-9)
    # Float32 logits: the rounding of the largest logit stays far below 1/N.
    assert max(c, c_sw) * u < 1e-5


def test_coldness_grows_like_log_n():
    n = [5, 30, 100]
    c = [precision.aggregate_coldness(x) for x in n]
    assert c == pytest.approx([2 * math.log((x + 1) * 2**24) for x in n])
    assert [round(x, 1) for x in c] == [36.9, 40.1, 42.5]
    c_sw = [precision.selector_width_coldness(x) for x in n]
    assert [round(x, 1) for x in c_sw] == [18.2, 20.0, 21.2]


def test_numerical_aggregate_coldness_follows_the_gap():
    means = {k / w for w in range(1, 101) for k in range(w + 1)}
    gap = precision.smallest_gap(means)
    assert gap == pytest.approx(1 / (99 * 100))
    c = precision.aggregate_coldness(100, numerical=True, value_set=means, sop_value_set={0, 1})
    assert c == precision.aggregate_coldness(100)  # the gap is far above float32 rounding
    fine = {0.0, 1e-9, 1.0}
    c_fine = precision.aggregate_coldness(100, numerical=True, value_set=fine, sop_value_set=fine)
    bound = categorical_attn.leakage_bound(c_fine, 100)
    assert bound == pytest.approx(1e-9 / 8, rel=1e-9)


def test_bfloat16_needs_less_coldness():
    assert precision.unit_roundoff("bfloat16") == 2.0**-8
    assert precision.aggregate_coldness(100, dtype="bfloat16") < precision.aggregate_coldness(100)


def test_default_mlp_sharpness_is_the_balanced_one():
    assert precision.DISCRETISING_SHARPNESS == numerical_mlp.OPTIMAL_LARGE_NUMBER == 2.0
    # Input tolerance per unit of float error, (1 - 1/L) / L, peaks at L = 2.
    ratio = [(1 - 1 / L) / L for L in (1.5, 2.0, 3.0, 100.0)]
    assert max(ratio) == ratio[1]


def test_max_seq_len_is_read_from_the_graph():
    from tracr.compiler import basis_inference, rasp_to_graph

    extracted = rasp_to_graph.extract_rasp_graph(lib.make_hist())
    basis_inference.infer_bases(extracted.graph, extracted.sink, {"a"}, 17)
    assert precision.max_seq_len_of(extracted.graph) == 17
