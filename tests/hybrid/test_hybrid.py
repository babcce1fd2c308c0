"""The hybrid: compiled stream exact and frozen, learned parts trainable, saved without pickle."""

import io
import itertools
import json
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tracr.compiler import compiling, lib
from tracr.compression import running
from tracr.hybrid import config, finetune, model, picture, saving, training
from tracr.io import values
from tracr.rasp import rasp
from tracr.transformer import batching, fast
from tracr.transformer import spec as spec_lib

VOCAB = (1, 2, 3)
MAX_SEQ_LEN = 3


def _inputs(vocab=VOCAB, max_seq_len=MAX_SEQ_LEN):
    return [list(x) for n in range(1, max_seq_len + 1) for x in itertools.product(vocab, repeat=n)]


@pytest.fixture(scope="module")
def hist():
    program = lib.make_hist()
    compiled = compiling.compile_rasp_to_model(program, set(VOCAB), MAX_SEQ_LEN)
    return program, compiled


@pytest.fixture(scope="module")
def sort():
    program = lib.make_sort_unique(rasp.tokens, rasp.tokens)
    compiled = compiling.compile_rasp_to_model(program, set(VOCAB), MAX_SEQ_LEN)
    return program, compiled


def _majority_task(compiled):
    """Targets: the most frequent token (ties: the smallest) at BOS; -1 elsewhere."""
    inputs = _inputs()
    ids = running.encode_padded(compiled, inputs)
    targets = np.full(ids.shape, -1, dtype=np.int32)
    for row, x in enumerate(inputs):
        counts = [x.count(v) for v in VOCAB]
        targets[row, 0] = int(np.argmax(counts))
    return ids, targets


def _hspec(program, compiled, **kw):
    kw.setdefault("d_learned", 8)
    kw.setdefault("num_heads", 1)
    kw.setdefault("key_size", 8)
    kw.setdefault("mlp_hidden_size", 16)
    kw.setdefault("reads", (program.label, "tokens"))
    return config.HybridSpec(compiled=compiled.spec, num_classes=len(VOCAB), **kw)


@pytest.mark.parametrize("which", ["hist", "sort"])
def test_compiled_stream_is_the_compiled_models_residual_stream(which, request):
    program, compiled = request.getfixturevalue(which)
    hspec = _hspec(program, compiled)
    params = model.init_params(hspec, compiled.params, seed=1)
    ids = running.encode_padded(compiled, _inputs())
    out = jax.jit(model.forward_fn(hspec))(params, ids)
    want = compiled.forward(compiled.params, jnp.asarray(ids)).transformer_output.residuals
    assert len(out.compiled_residuals) == 2 * hspec.num_layers > len(want)
    for got, expected in zip(out.compiled_residuals, want):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    # The program's own value, decoded from the compiled directions, is the evaluator's.
    rows = list(compiled.spec.output.reads)
    scores = np.asarray(out.compiled_residuals[-1])[..., rows]
    decoded = np.argmax(scores, axis=-1)
    active = scores.max(axis=-1) >= spec_lib.ACTIVE_THRESHOLD
    values = compiled.spec.output.values
    for row, x in enumerate(_inputs()):
        got = [values[i] if a else None for i, a in zip(decoded[row], active[row])]
        assert got[1 : len(x) + 1] == rasp.evaluate(program, x)


def test_learned_parts_never_write_the_compiled_stream(hist):
    program, compiled = hist
    hspec = _hspec(program, compiled)
    forward = jax.jit(model.forward_fn(hspec))
    ids = running.encode_padded(compiled, _inputs())
    a = forward(model.init_params(hspec, compiled.params, seed=0), ids)
    b = forward(model.init_params(hspec, compiled.params, seed=7), ids)
    for x, y in zip(a.compiled_residuals, b.compiled_residuals):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.allclose(np.asarray(a.logits), np.asarray(b.logits))


def _sampler(ids, targets):
    """Draws rows of (ids, targets) at random, as `training.train` asks."""

    def sampler(rng, batch_size):
        rows = rng.integers(0, len(ids), size=batch_size)
        return ids[rows], targets[rows]

    return sampler


def test_training_keeps_compiled_parts_frozen_and_reduces_loss(hist):
    program, compiled = hist
    hspec = _hspec(program, compiled)
    ids, targets = _majority_task(compiled)
    params = model.init_params(hspec, compiled.params, seed=0)
    sampler = _sampler(ids, targets)
    trained, history = training.train(
        hspec, params, sampler, steps=150, batch_size=32, learning_rate=3e-3, progress=False
    )
    learned, frozen = model.split(params)
    learned_after, frozen_after = model.split(trained)
    assert set(frozen) == set(compiled.params)
    for module in frozen:
        for key in frozen[module]:
            np.testing.assert_array_equal(
                np.asarray(frozen_after[module][key]), np.asarray(compiled.params[module][key])
            )
    assert any(
        not np.array_equal(np.asarray(learned[m][k]), np.asarray(learned_after[m][k]))
        for m in learned
        for k in learned[m]
    )
    forward = jax.jit(model.forward_fn(hspec))
    before, after = forward(params, ids), forward(trained, ids)
    for x, y in zip(before.compiled_residuals, after.compiled_residuals):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.mean(history.losses[-10:]) < 0.5 * np.mean(history.losses[:10])
    loss_before = training.loss_fn(model.forward_fn(hspec), params, ids, targets)
    loss_after = training.loss_fn(model.forward_fn(hspec), trained, ids, targets)
    assert float(loss_after) < 0.5 * float(loss_before)


def test_plain_baseline_has_only_learned_parameters(hist):
    program, compiled = hist
    hspec = _hspec(program, compiled, reads=(), use_compiled=False, extra_layers=2)
    params = model.init_params(hspec, {}, seed=0)
    assert all(model.is_learned(m) for m in params)
    assert hspec.d_compiled == 0 and hspec.num_layers == 2
    out = model.forward_fn(hspec)(params, running.encode_padded(compiled, _inputs()[:4]))
    assert out.logits.shape == (4, MAX_SEQ_LEN + 1, len(VOCAB))


def test_bad_arguments_are_named(hist):
    program, compiled = hist
    with pytest.raises(ValueError, match="reads names 'nope'"):
        config.HybridSpec(compiled=compiled.spec, num_classes=3, reads=("nope",))
    with pytest.raises(ValueError, match="d_learned"):
        config.HybridSpec(compiled=compiled.spec, num_classes=3, d_learned=0)
    hspec = _hspec(program, compiled)
    with pytest.raises(ValueError, match="compiled_params has no"):
        model.init_params(hspec, {}, seed=0)
    with pytest.raises(ValueError, match="multiple of"):
        training.train(
            hspec, model.init_params(hspec, compiled.params, seed=0), None, steps=1, batch_size=0
        )
    label = program.label
    with pytest.raises(TypeError, match=r"reads must be a tuple of RASP labels"):
        config.HybridSpec(compiled=compiled.spec, num_classes=3, reads=label)
    for field, value in (("d_learned", 2.5), ("num_classes", True), ("num_heads", "2")):
        fields = {"num_classes": 3, field: value}
        with pytest.raises(TypeError, match=f"{field} must be an int"):
            config.HybridSpec(compiled=compiled.spec, **fields)


def test_a_label_beyond_num_classes_is_refused_not_trained_to_nan(hist):
    """Every step's loss was NaN, silently, when the sampler gave label 3 of 3 classes."""
    program, compiled = hist
    hspec = _hspec(program, compiled)
    ids, targets = _majority_task(compiled)
    params = model.init_params(hspec, compiled.params, seed=0)
    targets = np.array(targets)
    targets[:, -1] = hspec.num_classes  # one class too many
    sampler = _sampler(ids, targets)
    with pytest.raises(ValueError, match=f"label {hspec.num_classes} at step 0"):
        training.train(hspec, params, sampler, steps=2, batch_size=8, progress=False)


def test_save_and_load_round_trip(hist, tmp_path):
    program, compiled = hist
    hspec = _hspec(program, compiled)
    params = model.init_params(hspec, compiled.params, seed=3)
    saving.save_hybrid(tmp_path / "h", hspec, params)
    assert saving.is_hybrid_dir(tmp_path / "h")
    loaded_spec, loaded = saving.load_hybrid(tmp_path / "h")
    assert loaded_spec == hspec
    ids = running.encode_padded(compiled, _inputs())
    np.testing.assert_array_equal(
        np.asarray(model.forward_fn(hspec)(params, ids).logits),
        np.asarray(model.forward_fn(loaded_spec)(loaded, ids).logits),
    )
    # A file that disagrees with the spec is refused, naming what is wrong.
    arrays = dict(np.load(tmp_path / "h" / saving.PARAMS_FILE))
    arrays.pop(next(iter(arrays)))
    np.savez(tmp_path / "h" / saving.PARAMS_FILE, **arrays)
    with pytest.raises(ValueError, match="missing arrays"):
        saving.load_hybrid(tmp_path / "h")


@pytest.fixture(scope="module")
def saved_hybrid(hist, tmp_path_factory):
    program, compiled = hist
    hspec = _hspec(program, compiled)
    directory = tmp_path_factory.mktemp("hybrid") / "h"
    saving.save_hybrid(directory, hspec, model.init_params(hspec, compiled.params, seed=0))
    return directory


def _copy_hybrid(source, target):
    target.mkdir()
    for name in (saving.SPEC_FILE, saving.PARAMS_FILE):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def _edit_spec(**changes):
    def edit(doc):
        doc.update(changes)
        return doc

    return edit


@pytest.mark.parametrize(
    "text, match",
    [
        ("[1]", "must hold a JSON object (a hybrid spec), got list"),
        (b"\xff\xfe", "is not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON"),
        ('{"format": NaN}', "contains NaN"),
        (_edit_spec(num_classes=1.5), "'num_classes' must be an integer, got 1.5"),
        (_edit_spec(d_learned="8"), "'d_learned' must be an integer, got '8'"),
        (_edit_spec(d_learned=True), "'d_learned' must be an integer, got True"),
        (_edit_spec(d_learned=-3), "'d_learned' = -3 is out of range 1.."),
        (_edit_spec(num_heads=-1), "'num_heads' = -1 is out of range 0.."),
        (_edit_spec(use_compiled=1), "'use_compiled' must be true or false"),
        (_edit_spec(reads="tokens"), "'reads' must be a list of RASP labels"),
        (_edit_spec(compiled=[]), "'compiled' must be a JSON object"),
        (_edit_spec(format=True), "'format' is True, expected 1"),
        (_edit_spec(extra=1), "unknown fields ['extra']"),
        (_edit_spec(reads=["nope"]), "reads names 'nope'"),
        (_edit_spec(d_learned=1 << 20, mlp_hidden_size=1 << 20), "parameters, more than the"),
    ],
)
def test_load_hybrid_refuses_a_damaged_spec_naming_the_file(saved_hybrid, tmp_path, text, match):
    directory = _copy_hybrid(saved_hybrid, tmp_path / "h")
    path = directory / saving.SPEC_FILE
    if callable(text):
        text = json.dumps(text(json.loads(path.read_text())))
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=re.escape(match)) as info:
        saving.load_hybrid(directory)
    assert str(path) in str(info.value)


def test_load_hybrid_refuses_missing_files_and_a_huge_spec(saved_hybrid, tmp_path):
    with pytest.raises(ValueError, match="hybrid.json does not exist: .* is not a saved hybrid"):
        saving.load_hybrid(tmp_path / "nowhere")
    directory = _copy_hybrid(saved_hybrid, tmp_path / "h")
    (directory / saving.PARAMS_FILE).unlink()
    with pytest.raises(ValueError, match="params.npz does not exist"):
        saving.load_hybrid(directory)
    with open(directory / saving.SPEC_FILE, "r+b") as f:  # sparse: no disk used
        f.truncate(values.MAX_JSON_BYTES + 1)
    with pytest.raises(ValueError, match=r"hybrid.json .*more than the \d+ (bytes )?allowed"):
        saving.load_hybrid(directory)


def _npy_member(array=None, *, dtype="<f4", shape=None, data=b""):
    buf = io.BytesIO()
    if array is not None:
        np.save(buf, array, allow_pickle=True)
    else:
        header = {"descr": dtype, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a * np.nan, "contains NaN or infinite values"),
        (lambda a: a + np.inf, "contains NaN or infinite values"),
        (
            lambda a: a.astype(np.float64) + 1e300,
            re.compile("float32's range|too large for float32"),
        ),
        (lambda a: a + 1j, "has dtype complex"),
        (lambda a: a > 0, "has dtype bool"),
        (lambda a: a.astype("U3"), "has dtype <U3"),
        (lambda a: a.astype(object), "has dtype object"),
        (lambda a: a.astype(np.int32), "has dtype int32"),
        (lambda a: a.reshape(-1)[:1], "has shape (1,)"),
    ],
)
def test_load_hybrid_refuses_bad_arrays(saved_hybrid, tmp_path, change, match):
    directory = _copy_hybrid(saved_hybrid, tmp_path / "h")
    with np.load(saved_hybrid / saving.PARAMS_FILE) as npz:
        arrays = {name: npz[name] for name in npz.files}
    first = sorted(arrays)[0]
    arrays[first] = change(arrays[first])
    with zipfile.ZipFile(directory / saving.PARAMS_FILE, "w") as archive:
        for name, array in arrays.items():
            archive.writestr(name + ".npy", _npy_member(array))
    pattern = match if isinstance(match, re.Pattern) else re.escape(match)
    with pytest.raises(ValueError, match=pattern):
        saving.load_hybrid(directory)


def test_load_hybrid_checks_each_header_before_reading_its_data(saved_hybrid, tmp_path):
    """A member declaring a huge shape is refused from its header alone (no memory bomb)."""
    directory = _copy_hybrid(saved_hybrid, tmp_path / "h")
    path = directory / saving.PARAMS_FILE
    with zipfile.ZipFile(saved_hybrid / saving.PARAMS_FILE) as source:
        members = {name: source.read(name) for name in source.namelist()}
    first = sorted(members)[0]
    members[first] = _npy_member(shape=(1 << 28,), data=b"\0" * 64)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match=re.escape("has shape (268435456,), but")):
        saving.load_hybrid(directory)
    # A damaged archive is a ValueError naming the file, not EOFError or BadZipFile.
    for cut in (0, 10, path.stat().st_size // 2):
        path.write_bytes((saved_hybrid / saving.PARAMS_FILE).read_bytes()[:cut])
        with pytest.raises(ValueError, match="params.npz is not a valid .npz archive"):
            saving.load_hybrid(directory)
    path.write_bytes((saved_hybrid / saving.PARAMS_FILE).read_bytes())
    _, params = saving.load_hybrid(directory)
    assert all(v.dtype == np.float32 for values in params.values() for v in values.values())


def test_picture_marks_compiled_and_learned(sort, tmp_path):
    program, compiled = sort
    hspec = _hspec(program, compiled)
    boxes = picture.components(hspec)
    compiled_texts = [text for _, _, kind, text in boxes if kind == "compiled"]
    for head in compiled.spec.heads():
        assert any(head.label in t and t.startswith(head.name) for t in compiled_texts)
    learned_layers = {layer for layer, _, kind, _ in boxes if kind == "learned"}
    assert learned_layers == set(range(hspec.num_layers))
    pytest.importorskip("matplotlib")
    picture.draw(hspec, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_tracr_show_draws_a_saved_hybrid(hist, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tracr import cli

    program, compiled = hist
    hspec = _hspec(program, compiled)
    saving.save_hybrid(tmp_path / "h", hspec, model.init_params(hspec, compiled.params, seed=0))
    code = cli.main(["show", str(tmp_path / "h"), "--input", "1 2", "-o", str(tmp_path / "pics")])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "pics" / "hybrid_layout.png").stat().st_size > 1000


def test_learned_positions_off_leaves_positions_to_the_compiled_indices(sort):
    program, compiled = sort
    hspec = _hspec(program, compiled, reads=(program.label, "indices"), learned_positions=False)
    params = model.init_params(hspec, compiled.params, seed=0)
    assert f"{model.LEARNED}/pos_embed" not in params
    assert f"{model.LEARNED}/token_embed" in params
    assert (
        hspec.read_indices[-MAX_SEQ_LEN:] == compiled.spec.directions_of("indices")[-MAX_SEQ_LEN:]
    )


def test_make_mesh_has_the_batch_axis():
    mesh = batching.make_mesh()
    assert mesh.axis_names == (batching.BATCH_AXIS, batching.MODEL_AXIS)
    assert mesh.shape[batching.BATCH_AXIS] == len(jax.local_devices())
    assert mesh.shape[batching.MODEL_AXIS] == 1


def _output_targets(compiled, outputs_per_input, length):
    values = list(compiled.spec.output.values)
    targets = np.full((len(outputs_per_input), length), -1, dtype=np.int32)
    for row, out in enumerate(outputs_per_input):
        targets[row, 1 : len(out) + 1] = [values.index(v) for v in out]
    return targets


def test_finetuning_on_the_programs_own_task_keeps_it_exact(hist):
    program, compiled = hist
    inputs = _inputs()
    ids = running.encode_padded(compiled, inputs)
    targets = _output_targets(compiled, [rasp.evaluate(program, x) for x in inputs], ids.shape[1])
    lean = compiled.lean_weights()
    tuned, losses = finetune.finetune(lean, ids, targets, steps=30, learning_rate=1e-3)
    assert losses[-1] < losses[0]  # the margins grow
    decoded = np.asarray(fast.decode(tuned, jnp.asarray(ids)))
    real = targets >= 0
    np.testing.assert_array_equal(decoded[real], targets[real])


def test_finetuning_on_a_perturbed_task_moves_the_model(hist):
    program, compiled = hist
    inputs = _inputs()
    ids = running.encode_padded(compiled, inputs)
    # Perturbed: the count of each token, capped at 2.
    perturbed = [[min(v, 2) for v in rasp.evaluate(program, x)] for x in inputs]
    targets = _output_targets(compiled, perturbed, ids.shape[1])
    lean = compiled.lean_weights()
    real = targets >= 0

    def agreement(weights):
        return np.mean(np.asarray(fast.decode(weights, jnp.asarray(ids)))[real] == targets[real])

    tuned, losses = finetune.finetune(lean, ids, targets, steps=300, learning_rate=3e-3)
    assert agreement(lean) < 1.0
    assert losses[-1] < 0.5 * losses[0]
    assert agreement(tuned) > agreement(lean)
    moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), lean, tuned)
    assert any(jax.tree_util.tree_leaves(moved))


def test_tracr_show_of_a_damaged_hybrid_is_a_user_error(saved_hybrid, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tracr import cli

    directory = _copy_hybrid(saved_hybrid, tmp_path / "h")
    path = directory / saving.PARAMS_FILE
    path.write_bytes(path.read_bytes()[:100])
    code = cli.main(["show", str(directory), "--input", "1 2", "-o", str(tmp_path / "pics")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("tracr show: error: ") and "params.npz is not a valid .npz" in err
