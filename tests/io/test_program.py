"""program.json: every library program round-trips without lambdas, and bad files are refused."""

import itertools
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling, equivalence, lib
from tracr.compiler.library_cases import LIBRARY_CASES
from tracr.io import program as program_io
from tracr.io import saving, values
from tracr.rasp import rasp

MAX_SEQ_LEN = 3


def _evaluate(program, xs):
    try:
        return [values.typed_key(v) for v in rasp.evaluate(program, xs)]
    except ArithmeticError:
        return "ArithmeticError"


def _decoded(model, inputs):
    """Decoded outputs of `inputs`, as one padded batch run eagerly (cheaper than jit here)."""
    enc = model.input_encoder
    longest = max(map(len, inputs))
    ids = [
        enc.encode([enc.bos_token, *x]) + [enc.pad_encoding] * (longest - len(x)) for x in inputs
    ]
    with jax.disable_jit():
        out = model.forward(model.params, jnp.asarray(ids, dtype=jnp.int32))
    rows = np.asarray(out.unembedded_output).tolist()
    return [model.output_encoder.decode(row)[1 : len(x) + 1] for x, row in zip(inputs, rows)]


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_library_program_round_trips_and_compiles_alike(case, tmp_path):
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN)
    saving.save_model(model, tmp_path)  # the compiler attached the program: program.json
    text = (tmp_path / program_io.PROGRAM_FILE).read_text()
    assert "lambda" not in text and "<function" not in text
    rebuilt = saving.load_model(tmp_path).program
    assert rebuilt is not None and rebuilt is not program
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    for xs in inputs:
        assert _evaluate(rebuilt, xs) == _evaluate(program, xs), xs
    again = compiling.compile_rasp_to_model(rebuilt, set(case.vocab), MAX_SEQ_LEN)
    assert again.spec.num_layers == model.spec.num_layers
    assert _decoded(again, inputs) == _decoded(model, inputs)
    # The document is stable: writing the rebuilt program gives the same file.
    doc = program_io.program_to_json(rebuilt, case.vocab, MAX_SEQ_LEN)
    assert doc == json.loads(text)


def test_tables_keep_types_no_values_and_predicates():
    inverse = rasp.Map(lambda x: 1 // (x - 2), rasp.tokens).named("inverse")  # none at 2
    pairs = rasp.SequenceMap(lambda x, y: (x, y == 1), rasp.tokens, rasp.indices).named("pairs")
    odd = rasp.Select(rasp.tokens, rasp.tokens, lambda k, q: (k + q) % 2 == 1)
    both = odd & rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ)
    width = rasp.numerical(rasp.SelectorWidth(both)).named("width")
    program = rasp.SequenceMap(lambda a, b: (a, b), pairs, width).named("out")
    doc = program_io.program_to_json(program, {1, 2, 3}, 3)
    rebuilt = program_io.program_from_json(json.loads(json.dumps(doc)))
    kinds = [e["kind"] for e in doc["exprs"]]
    assert {"sequence_map", "select", "selector_and", "selector_width"} <= set(kinds)
    preds = [e["predicate"] for e in doc["exprs"] if e["kind"] == "select"]
    assert {"comparison": "<="} in preds and any("true" in p for p in preds)
    assert rasp.is_numerical(rebuilt.snd) and rebuilt.snd.name == "width"
    for xs in equivalence.all_inputs({1, 2, 3}, 3):
        assert _evaluate(rebuilt, xs) == _evaluate(program, xs)
    inverse_doc = program_io.program_to_json(inverse, {1, 2, 3}, 2)
    assert inverse_doc["exprs"][-1]["no_value"] == [{"type": "int", "value": 2}]
    again = program_io.program_from_json(inverse_doc)
    assert again([1, 3]) == [-1, 1]
    with pytest.raises(ArithmeticError):
        again([2])
    with pytest.raises(ValueError, match="no entry for 7"):
        again([7])  # outside the vocabulary it was saved for: refused, not guessed


def test_programs_without_a_lambda_free_form_are_refused():
    class Custom(rasp.Map):
        pass

    with pytest.raises(program_io.ProgramNotWritable, match="not rasp's own"):
        program_io.program_to_json(Custom(lambda x: x, rasp.tokens), {1}, 2)
    with pytest.raises(program_io.ProgramNotWritable, match="Cannot save the value"):
        program_io.program_to_json(rasp.Map(lambda x: frozenset([x]), rasp.tokens), {1}, 2)
    calls = itertools.count()
    impure = rasp.numerical(rasp.Map(lambda x: next(calls) % 2, rasp.tokens))
    with pytest.raises(program_io.ProgramNotWritable, match="differs from the original"):
        program_io.program_to_json(impure, {1, 2}, 2)


def test_unwritable_program_is_skipped_with_the_reason_in_the_card(tmp_path, caplog):
    calls = itertools.count()
    impure = rasp.Map(lambda x: next(calls) % 2 == 0, rasp.tokens)
    model = compiling.compile_rasp_to_model(impure, {1, 2}, 2)
    saving.save_model(model, tmp_path / "hub", hub=True)
    assert not (tmp_path / "hub" / "program.json").exists()
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "`program.json`: not written: the program rebuilt from its tables differs" in card
    with caplog.at_level(logging.WARNING):
        saving.save_model(model, tmp_path / "plain")
    assert "program.json not written" in caplog.text
    good = compiling.compile_rasp_to_model(lib.make_hist(), {1, 2}, 2)
    saving.save_model(good, tmp_path / "stale")
    saving.save_model(model, tmp_path / "stale", overwrite=True)
    assert not (tmp_path / "stale" / "program.json").exists()  # not left from the first save


def _doc():
    return program_io.program_to_json(lib.make_reverse(rasp.tokens), {"a", "b"}, 2)


def _edit(path, value):
    doc = _doc()
    *parents, last = path
    target = doc
    for key in parents:
        target = target[key]
    target[last] = value
    return doc


HOSTILE = [
    (_edit(["format"], "pickle"), "'format' is 'pickle'"),
    (_edit(["format_version"], 99), "format_version 99 is not supported"),
    (_edit(["exprs", 1, "kind"], "lambda"), "kind 'lambda' is not one of"),
    (_edit(["exprs", 1, "code"], "__import__('os')"), "unknown keys \\['code'\\]"),
    (_edit(["exprs", 0, "id"], 5), "exprs\\[0\\].id must be 0"),
    (_edit(["output"], 10_000), "output must be the id"),
    (_edit(["vocab", 0], {"type": "pickle", "value": "x"}), "unknown value type 'pickle'"),
    ({"format": "tracr-program"}, "format_version None"),
    ([1, 2], "must hold a JSON object"),
]


@pytest.mark.parametrize("doc, message", HOSTILE)
def test_corrupt_or_hostile_documents_are_refused(doc, message):
    with pytest.raises(ValueError, match=message):
        program_io.program_from_json(doc)


def test_corrupt_fields_deep_inside_are_refused():
    doc = _doc()
    maps = [i for i, e in enumerate(doc["exprs"]) if e["kind"] == "map"]
    selects = [i for i, e in enumerate(doc["exprs"]) if e["kind"] == "select"]
    cases = []
    bad = json.loads(json.dumps(doc))
    bad["exprs"][maps[0]]["table"] = "lambda x: x"
    cases.append((bad, "table must be a list"))
    bad = json.loads(json.dumps(doc))
    bad["exprs"][maps[0]]["inner"] = maps[0]  # itself: not an earlier expression
    cases.append((bad, "must be the id of an earlier expression"))
    bad = json.loads(json.dumps(doc))
    bad["exprs"][selects[0]]["predicate"] = {"comparison": "lambda k, q: True"}
    cases.append((bad, "predicate.comparison must be one of"))
    bad = json.loads(json.dumps(doc))
    bad["exprs"][selects[0]]["keys"] = selects[0] - 1 if selects[0] else 0
    bad["exprs"][selects[0]]["encoding"] = "categorical"
    cases.append((bad, "selector, which has no encoding|not a SOp"))
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            program_io.program_from_json(bad, "p.json")


def test_a_table_that_lists_an_input_twice_is_refused():
    """Read as a lookup, the last row would silently win; the reader refuses it."""
    doc = _doc()
    kinds = {e["kind"]: i for i, e in enumerate(doc["exprs"])}
    bad = json.loads(json.dumps(doc))
    table = bad["exprs"][kinds["map"]]["table"]
    table.append([table[0][0], {"type": "int", "value": 99}])
    with pytest.raises(ValueError, match=r"p.json: exprs\[\d+\] \(map\) lists the input"):
        program_io.program_from_json(bad, "p.json")
    bad = json.loads(json.dumps(doc))
    pair_map = bad["exprs"][kinds["sequence_map"]]
    pair_map["no_value"].append(pair_map["table"][0][:2])  # in the table and in no_value
    with pytest.raises(ValueError, match=r"\(sequence_map\) lists the input \(.*\) more than"):
        program_io.program_from_json(bad, "p.json")
    program_io.program_from_json(doc, "p.json")  # the unedited document reads


def test_corrupt_files_and_foreign_programs_are_refused(tmp_path):
    model = compiling.compile_rasp_to_model(lib.make_hist(), {"a", "b"}, 2)
    saving.save_model(model, tmp_path)
    path = tmp_path / program_io.PROGRAM_FILE
    path.write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        saving.load_model(tmp_path)
    path.write_text(json.dumps(_edit(["max_seq_len"], float("nan"))).replace("NaN", "NaN"))
    with pytest.raises(ValueError, match="NaN, which is not valid JSON"):
        saving.load_model(tmp_path)
    program_io.write_program(lib.make_hist(), path, vocab={"a", "c"}, max_seq_len=2)
    with pytest.raises(ValueError, match="belongs to another model"):
        saving.load_model(tmp_path)


def test_save_model_takes_the_program_as_an_argument(tmp_path):
    model = compiling.compile_rasp_to_model(lib.make_hist(), {"a", "b"}, 2)
    model.program = None  # as for a model built without the compiler
    saving.save_model(model, tmp_path / "none")
    assert not (tmp_path / "none" / program_io.PROGRAM_FILE).exists()
    saving.save_model(model, tmp_path / "given", program=lib.make_hist())
    assert saving.load_model(tmp_path / "given").program(["a", "b", "a"]) == [2, 1, 2]
    with pytest.raises(TypeError, match="program must be the rasp.SOp"):
        saving.save_model(model, tmp_path / "bad", program=lambda x: x)
