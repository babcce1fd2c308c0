"""Differential fuzzing: a few hundred random programs, each compiled exactly or refused.

Every generated program is compiled and compared with the RASP evaluator on
every input of its domain (tracr.fuzz.checker); a mismatch or a crash fails
the test with the program's listing and seed. benchmarks/fuzz.py runs the
same check on thousands of programs.
"""

import collections
import dataclasses
import hashlib
import importlib.util
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import safetensors
import safetensors.numpy

from tracr.compiler import compiling, equivalence, lib
from tracr.fuzz import checker, generator
from tracr.rasp import causal_eval, rasp
from tracr.transformer import spec as spec_lib

NUM_CHUNKS = 8
PER_CHUNK = 40  # 320 programs in all
FIRST_SEED = 10_000
# The generator should mostly make programs the compiler accepts.
MAX_REJECTED_SHARE = 0.15


def _seeds(chunk):
    start = FIRST_SEED + chunk * PER_CHUNK
    return range(start, start + PER_CHUNK)


@pytest.mark.parametrize("chunk", range(NUM_CHUNKS))
def test_random_programs_compile_exactly_or_are_rejected(chunk):
    failures, rejected = [], 0
    for seed in _seeds(chunk):
        case = generator.generate(seed, generator.CI_CONFIG)
        result = checker.check_case(case)
        if result.outcome in (checker.MISMATCH, checker.CRASH):
            failures.append(f"{result.outcome} ({result.category}): {case}\n{result.detail}")
        rejected += result.outcome == checker.REJECTED
        if result.outcome == checker.REJECTED:
            assert result.category != "other", result.detail  # a known reason
    assert not failures, "\n\n".join(failures)
    assert rejected <= MAX_REJECTED_SHARE * PER_CHUNK, f"{rejected} of {PER_CHUNK} rejected"


def _normalised(source):
    """The listing with expression ids replaced by their order of appearance."""
    ids = {}
    return re.sub(r"(?<=_)\d+\b", lambda m: str(ids.setdefault(m.group(), len(ids))), source)


@pytest.mark.parametrize("seed", [0, 1, 17, 12345])
def test_generator_is_reproducible(seed):
    first = generator.generate(seed)
    second = generator.generate(seed)
    assert _normalised(first.source) == _normalised(second.source)
    assert (first.vocab, first.max_seq_len, first.causal, first.depth) == (
        second.vocab,
        second.max_seq_len,
        second.causal,
        second.depth,
    )
    evaluate = causal_eval.evaluate if first.causal else rasp.evaluate
    for x in equivalence.sample_inputs(first.vocab, first.max_seq_len, 10, seed=seed):
        try:
            expected = evaluate(first.program, list(x))
        except Exception as e:  # noqa: BLE001 - then both must fail alike
            with pytest.raises(type(e)):
                evaluate(second.program, list(x))
            continue
        assert evaluate(second.program, list(x)) == expected


def _kinds(program):
    """The kinds of construct in a program (type names, comparisons, encodings)."""
    kinds, stack, seen = set(), [program], set()
    while stack:
        expr = stack.pop()
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        kind = type(expr).__name__
        if isinstance(expr, rasp.Aggregate):
            kind += "/numerical" if rasp.is_numerical(expr) else "/categorical"
        if isinstance(expr, rasp.Select) and isinstance(expr.predicate, rasp.Comparison):
            kinds.add(f"Comparison.{expr.predicate.name}")
        kinds.add(kind)
        stack.extend(expr.children)
    return kinds


def test_generator_covers_the_language():
    cases = [generator.generate(seed, generator.CI_CONFIG) for seed in range(300)]
    kinds = collections.Counter(k for case in cases for k in _kinds(case.program))
    expected = {
        "Map",
        "SequenceMap",
        "LinearSequenceMap",
        "Select",
        "SelectorAnd",
        "SelectorOr",
        "SelectorNot",
        "Aggregate/categorical",
        "Aggregate/numerical",
        "SelectorWidth",
        "Full",
        "ConstantSOp",
    } | {f"Comparison.{c.name}" for c in rasp.Comparison}
    assert expected <= set(kinds), expected - set(kinds)
    assert {case.depth for case in cases} == set(range(1, 7))
    # Twin means: two Aggregates over equal, separate Selects (joint value sets).
    assert any("a separate Select" in case.source for case in cases)
    assert {case.causal for case in cases} == {False, True}
    assert {case.max_seq_len for case in cases} == set(generator.CI_CONFIG.max_seq_lens)


def test_numpy_forward_matches_the_haiku_model():
    checked = 0
    for seed in range(20_000, 20_040):
        case = generator.generate(seed, generator.CI_CONFIG)
        try:
            model = compiling.compile_rasp_to_model(
                case.program, set(case.vocab), case.max_seq_len, causal=case.causal
            )
        except NotImplementedError:
            continue
        inputs = list(equivalence.all_inputs(case.vocab, case.max_seq_len))
        fast = checker.decode_inputs(model, inputs, backend="numpy")
        haiku = checker.decode_inputs(model, inputs, backend="haiku")
        evaluate = causal_eval.evaluate if case.causal else rasp.evaluate
        numerical = rasp.is_numerical(case.program)
        for x, a, b in zip(inputs, fast, haiku):
            try:
                expected = evaluate(case.program, list(x))
            except Exception:  # noqa: BLE001 - outside the program's meaning
                continue
            for e, u, v in zip(expected, a, b):
                # The zero vector of a None position has no meaningful argmax.
                if e is not None:
                    assert checker._equal(u, v, numerical), (case, x, a, b)
        checked += 1
        if checked == 6:
            break
    assert checked == 6


def test_checker_classifies_each_outcome():
    exact = checker.check(rasp.Map(lambda x: x + 1, rasp.tokens), [1, 2], 3)
    assert exact.outcome == checker.EXACT and exact.flagged == 0

    rejected = checker.check(rasp.length + 1, [1, 2], 3)
    assert (rejected.outcome, rejected.category) == (checker.REJECTED, "length_primitive")

    # Selects two different tokens on most inputs: those are outside the
    # program's meaning, and dynamic_validate must say so.
    prefix = rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    first = rasp.Aggregate(prefix, rasp.tokens)
    partial = checker.check(first, ["a", "b"], 3)
    assert partial.outcome == checker.EXACT
    assert 0 < partial.flagged < partial.num_inputs


@pytest.mark.parametrize("seed, min_layers", [(10, 9), (100019, 1)])
def test_every_path_is_checked(seed, min_layers):
    """Seed 10 of the default settings has 14 layers; seed 100019 an MLP as wide as the
    residual (the compressed path's layout check once confused the two axes)."""
    case = generator.generate(seed)
    # torch is optional: without it, every other path is still checked.
    paths = tuple(p for p in checker.PATHS if p != "torch" or importlib.util.find_spec("torch"))
    result = checker.check_case(case, paths=paths)
    assert result.outcome == checker.EXACT, result.detail
    assert result.paths == paths
    assert result.num_layers >= min_layers


def test_the_checker_compares_each_path_and_none_positions_in_one_place():
    program = rasp.SequenceMap(lambda x, y: x if x > y else y / 2, rasp.tokens, rasp.indices)
    result = checker.check(program, [True, 2, 3], 3, paths=("apply_batch", "compressed"))
    assert (result.outcome, result.paths) == (checker.EXACT, ("apply_batch", "compressed"))
    with pytest.raises(ValueError, match="paths"):
        checker.check(program, [1, 2], 3, paths=("fast",))
    # A categorical None must decode as None; a numerical output cannot say None.
    assert checker._agrees(None, None, numerical=False)
    assert not checker._agrees(None, "anything", numerical=False)
    assert not checker._agrees(1, None, numerical=False)
    assert checker._agrees(None, 0.0, numerical=True)
    assert not checker._agrees(1, 2, numerical=False)


def test_numpy_forward_reads_the_layout_from_the_spec():
    program = rasp.Map(lambda x: x + 1, rasp.tokens)
    model = compiling.compile_rasp_to_model(program, {1, 2, 3}, 3)
    ids = np.array([model.input_encoder.encode(["compiler_bos", 3, 1, 2])])
    plain = checker.numpy_forward(model, ids)
    assert model.output_encoder.decode(plain[0, 1:].tolist()) == [4, 2, 3]
    # An orthonormal rotation of the residual folded in computes the same function
    # (at BOS the output is empty: its argmax is float noise).
    d = model.spec.d_model
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))[0]
    np.testing.assert_array_equal(checker.numpy_forward(model, ids, rotation)[:, 1:], plain[:, 1:])
    first = spec_lib.param_name(0, "mlp", "linear_1")
    params = {k: dict(v) for k, v in model.params.items()}
    params[first]["w"] = params[first]["w"][:, :-1]
    with pytest.raises(ValueError, match=first):
        checker.numpy_forward(dataclasses.replace(model, params=params), ids)


def test_generator_menus_cover_mixed_types_strings_and_deep_programs():
    cases = [generator.generate(seed) for seed in range(300)]
    vocabs = {case.vocab for case in cases}
    assert frozenset({True, 2, 0.5}) in vocabs and frozenset({"ab", "c", "xyz"}) in vocabs
    sources = "\n".join(case.source for case in cases)
    assert "x if x > y else y / 2" in sources
    assert re.search(r"numerical\(SequenceMap\((?!float)", sources)  # numbers as they come
    assert max(case.depth for case in cases) >= 12


def test_none_positions_are_compared_on_every_path():
    """A categorical Aggregate that selects nothing is None in RASP; every path
    must decode None there, not an argmax of an empty output."""
    program = lib.shift_by(1, rasp.tokens)  # position 0 selects nothing
    model = compiling.compile_rasp_to_model(program, {1, 2, 3}, 3)
    inputs = [(1, 2, 3), (3, 3), (1,)]
    expected = [rasp.evaluate(program, list(x)) for x in inputs]
    assert any(v is None for row in expected for v in row)
    for backend in ("numpy", "haiku", "apply_batch"):
        assert checker.decode_inputs(model, inputs, backend) == expected, backend


# ---------------------------------------------------------------------------
# The saved and torch paths: the model written to disk and read back, and the
# torch export, must give the evaluator's values too.

SAVED_AND_TORCH_SEEDS = range(30_000, 30_010)


def test_saved_and_torch_paths_agree_on_random_programs():
    pytest.importorskip("torch")
    compiled = 0
    for seed in SAVED_AND_TORCH_SEEDS:
        case = generator.generate(seed, generator.CI_CONFIG)
        result = checker.check_case(case, paths=("saved", "torch"))
        if result.outcome == checker.REJECTED:
            continue
        assert result.outcome == checker.EXACT, f"{result.category}: {case}\n{result.detail}"
        assert result.paths == ("saved", "torch")
        compiled += 1
    assert compiled >= 6, compiled


# Map(x + 1) over {1, 2, 3}: every position has a value, so a wrong model shows.
_PLUS_ONE = (rasp.Map(lambda x: x + 1, rasp.tokens), [1, 2, 3], 3)


def _swap_token_rows(embeddings, encoding_map):
    """The embedding with the rows of tokens 1 and 2 swapped (a wrong but well-formed model)."""
    rows = np.array(embeddings)
    a, b = encoding_map[1], encoding_map[2]
    rows[[a, b]] = rows[[b, a]]
    return rows


def test_the_saved_path_runs_the_model_it_loaded(monkeypatch):
    from tracr.io import saving

    load_model, saved = saving.load_model, []

    def load_a_wrong_model(directory):
        saved.extend(sorted(p.name for p in pathlib.Path(directory).iterdir()))
        model = load_model(directory)
        params = {k: dict(v) for k, v in model.params.items()}
        embed = params[spec_lib.TOKEN_EMBED]
        embed["embeddings"] = _swap_token_rows(
            embed["embeddings"], model.input_encoder.encoding_map
        )
        return dataclasses.replace(model, params=params)

    assert checker.check(*_PLUS_ONE, paths=("saved",)).outcome == checker.EXACT
    monkeypatch.setattr(saving, "load_model", load_a_wrong_model)
    result = checker.check(*_PLUS_ONE, paths=("apply", "apply_batch", "saved"))
    assert (result.outcome, result.category) == (checker.MISMATCH, "wrong value (saved)")
    # The program was saved with the model (program.json), in a fresh directory.
    assert saved == ["model.json", "model.safetensors", "program.json"]


def _edit_saved_weight(directory, fix_checksum):
    """Adds 1 to one weight of a saved model, keeping the file well-formed."""
    from tracr.io import saving

    path = pathlib.Path(directory) / saving.PARAMS_FILE
    with safetensors.safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
        arrays = {name: f.get_tensor(name) for name in f.keys()}
    arrays["token_embed/embeddings"][1, 0] += 1.0
    safetensors.numpy.save_file(arrays, str(path), metadata=metadata)
    if fix_checksum:  # then only the content hash can tell
        config = pathlib.Path(directory) / saving.CONFIG_FILE
        doc = json.loads(config.read_text())
        doc["params"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        config.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "fix_checksum, refusal",
    [(False, "does not match the SHA-256"), (True, "content hash does not match")],
)
def test_a_model_edited_after_saving_is_a_crash_not_exact(monkeypatch, fix_checksum, refusal):
    from tracr.io import saving

    save_model = saving.save_model

    def save_then_edit(model, directory, **kwargs):
        out = save_model(model, directory, **kwargs)
        _edit_saved_weight(directory, fix_checksum)
        return out

    monkeypatch.setattr(saving, "save_model", save_then_edit)
    result = checker.check(*_PLUS_ONE, paths=("apply", "saved"))
    assert (result.outcome, result.category) == (checker.CRASH, "run saved: ValueError")
    assert refusal in result.detail


def test_the_torch_path_runs_the_exported_module(monkeypatch):
    torch = pytest.importorskip("torch")
    from tracr.export import torch_model

    to_torch_module, exported = torch_model.to_torch_module, []

    def export_a_wrong_module(model, **kwargs):
        module = to_torch_module(model, **kwargs)
        swapped = _swap_token_rows(module.embed.weight.numpy(), model.input_encoder.encoding_map)
        with torch.no_grad():
            module.embed.weight.copy_(torch.as_tensor(swapped))
        exported.append(module)
        return module

    assert checker.check(*_PLUS_ONE, paths=("torch",)).outcome == checker.EXACT
    monkeypatch.setattr(torch_model, "to_torch_module", export_a_wrong_module)
    result = checker.check(*_PLUS_ONE, paths=("apply", "torch"))
    assert (result.outcome, result.category) == (checker.MISMATCH, "wrong value (torch)")
    assert len(exported) == 1


def test_a_path_that_drops_outputs_is_a_mismatch(monkeypatch):
    monkeypatch.setattr(checker, "saved_outputs", lambda model, inputs, program: [])
    result = checker.check(*_PLUS_ONE, paths=("saved",))
    assert (result.outcome, result.category) == (checker.MISMATCH, "wrong output length (saved)")


def test_the_checker_imports_without_torch_and_says_the_torch_path_needs_it():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from tracr.fuzz import checker\n"
        "r = checker.check(checker.rasp.Map(lambda x: x + 1, checker.rasp.tokens), [1, 2], 2,"
        " paths=('saved', 'torch'))\n"
        "print(r.outcome, r.category, 'tracr[torch]' in r.detail)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["crash", "run", "torch:", "ImportError", "True"], out.stderr
