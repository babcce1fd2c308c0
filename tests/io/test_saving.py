"""Saved models: exact round trips, and clear refusals of bad or hostile files."""

import json
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy

from tracr.compiler import compiling, equivalence, lib
from tracr.compiler.library_cases import LIBRARY_CASES
from tracr.io import saving
from tracr.rasp import rasp

MAX_SEQ_LEN = 3


def _outputs(model, inputs):
    """Unembedded outputs and decoded values for `inputs`, padded to one batch.

    Runs eagerly: with one shape, the second model reuses the first's compiled
    primitives, which is far cheaper than jit-compiling each model.
    """
    enc = model.input_encoder
    ids = [
        enc.encode([enc.bos_token, *x]) + [enc.pad_encoding] * (MAX_SEQ_LEN - len(x))
        for x in inputs
    ]
    with jax.disable_jit():
        out = model.forward(model.params, jnp.asarray(ids, dtype=jnp.int32))
    unembedded = np.asarray(out.unembedded_output)
    decoded = [
        model.output_encoder.decode(row.tolist())[1 : len(x) + 1]
        for x, row in zip(inputs, unembedded)
    ]
    return unembedded, decoded


def _assert_same_model(original, loaded):
    assert loaded.residual_labels == original.residual_labels
    assert loaded.model_config.num_layers == original.model_config.num_layers
    assert loaded.model_config.num_heads == original.model_config.num_heads
    assert loaded.model_config.key_size == original.model_config.key_size
    assert loaded.model_config.mlp_hidden_size == original.model_config.mlp_hidden_size
    assert loaded.model_config.causal == original.model_config.causal
    assert loaded.model_config.activation_function is jax.nn.relu
    assert not loaded.model_config.layer_norm
    assert set(loaded.params) == set(original.params)
    for module, inner in original.params.items():
        assert set(loaded.params[module]) == set(inner)
        for name, value in inner.items():
            np.testing.assert_array_equal(np.asarray(loaded.params[module][name]), value)
    np.testing.assert_array_equal(loaded.unembed_matrix, original.unembed_matrix)
    for enc in ("input_encoder", "output_encoder"):
        a, b = getattr(original, enc), getattr(loaded, enc)
        assert type(a) is type(b)
        if hasattr(a, "decoding_map"):
            assert [(k, type(v), v) for k, v in a.decoding_map.items()] == [
                (k, type(v), v) for k, v in b.decoding_map.items()
            ]
    assert loaded.input_encoder.bos_token == original.input_encoder.bos_token
    assert loaded.input_encoder.pad_token == original.input_encoder.pad_token


@pytest.mark.parametrize("case", LIBRARY_CASES, ids=lambda c: c.name)
def test_round_trip_gives_identical_model_and_outputs(case, tmp_path):
    causal = case.supports_causal and case.name in ("frac_prevs", "pair_balance")
    program = case.program(MAX_SEQ_LEN)
    model = compiling.compile_rasp_to_model(program, set(case.vocab), MAX_SEQ_LEN, causal=causal)
    saving.save_model(model, tmp_path / "m")
    loaded = saving.load_model(tmp_path / "m")
    _assert_same_model(model, loaded)
    inputs = list(equivalence.all_inputs(case.vocab, MAX_SEQ_LEN))
    unembedded, decoded = _outputs(model, inputs)
    unembedded_loaded, decoded_loaded = _outputs(loaded, inputs)
    np.testing.assert_array_equal(unembedded_loaded, unembedded)
    assert decoded_loaded == decoded
    assert [list(map(type, row)) for row in decoded_loaded] == [
        list(map(type, row)) for row in decoded
    ]


def test_types_of_tokens_and_outputs_survive(tmp_path):
    model = compiling.compile_rasp_to_model(lib.make_reverse(rasp.tokens), {1, "a", 2.5}, 3)
    saving.save_model(model, tmp_path)
    loaded = saving.load_model(tmp_path)
    with jax.disable_jit():
        decoded = loaded.apply(["compiler_bos", 1, "a", 2.5]).decoded
    assert decoded == ["compiler_bos", 2.5, "a", 1]
    tokens = [loaded.input_encoder.decoding_map[i] for i in range(5)]
    assert sorted(map(type, tokens), key=str) == sorted([str, str, int, str, float], key=str)
    with pytest.raises(ValueError, match="Unknown tokens"):
        loaded.apply(["compiler_bos", "1"])  # the string "1" is not the int 1

    pairs = compiling.compile_rasp_to_model(rasp.Map(lambda x: (x, x == 1), rasp.tokens), {1, 2}, 2)
    saving.save_model(pairs, tmp_path / "pairs")
    loaded = saving.load_model(tmp_path / "pairs")
    with jax.disable_jit():
        decoded = loaded.apply(["compiler_bos", 1, 2]).decoded
    assert decoded == ["compiler_bos", (1, True), (2, False)]


def test_metadata_is_kept(tmp_path):
    model = compiling.compile_rasp_to_model(lib.make_hist(), {"a", "b"}, 2)
    saving.save_model(model, tmp_path, metadata={"program": "lib:make_hist"})
    assert saving.load_metadata(tmp_path) == {"program": "lib:make_hist"}
    with pytest.raises(ValueError, match="metadata must map str to str"):
        saving.save_model(model, tmp_path / "x", metadata={"n": 1})


def test_files_are_plain_json_and_safetensors(tmp_path):
    hist = lib.make_hist()
    model = compiling.compile_rasp_to_model(hist, {"a", "b"}, 2)
    saving.save_model(model, tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["model.json", "model.safetensors", "program.json"]
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["format_version"] == saving.FORMAT_VERSION
    assert doc["config"]["activation_function"] == "relu"
    assert doc["config"]["max_seq_len"] == 2
    assert doc["input"]["bos_token"] == {"type": "str", "value": "compiler_bos"}
    assert doc["output"] == {
        "encoding": "categorical",
        "values": [{"type": "int", "value": v} for v in range(3)],
    }
    assert [model.residual_labels[i] for i in doc["unembedding"]] == [
        f"{hist.label}:{v}" for v in range(3)
    ]
    arrays = safetensors.numpy.load_file(tmp_path / "model.safetensors")
    assert arrays["token_embed/embeddings"].dtype == np.float32
    assert arrays["token_embed/embeddings"].shape == (4, len(model.residual_labels))
    with safetensors.safe_open(tmp_path / "model.safetensors", framework="np") as f:
        assert f.metadata() == {
            "format": "tracr-model",
            "format_version": str(saving.FORMAT_VERSION),
            "content_sha256": doc["content_hash"]["sha256"],
        }


def test_two_saves_of_one_model_are_the_same_bytes(tmp_path):
    """Reproducible files (for Hub uploads and content hashes): the safetensors
    header's keys are sorted, so its metadata order does not vary."""
    model = compiling.compile_rasp_to_model(lib.make_reverse(rasp.tokens), {"a", "b"}, 3)
    saves = []
    for i in range(3):
        saving.save_model(model, tmp_path / str(i), hub=True)
        saves.append({p.name: p.read_bytes() for p in sorted((tmp_path / str(i)).iterdir())})
    assert "model.safetensors" in saves[0] and "program.json" in saves[0]
    assert saves[0] == saves[1] == saves[2]
    back = saving.load_model(tmp_path / "0")
    assert back.apply(["compiler_bos", "a", "b"]).decoded == ["compiler_bos", "b", "a"]


# --------------------------------------------------------------------------
# Bad files. `saved` is a fresh small model directory for each test.


@pytest.fixture(scope="module")
def _template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template")
    model = compiling.compile_rasp_to_model(lib.make_frac_prevs(rasp.tokens == "x"), {"x", "y"}, 3)
    saving.save_model(model, path)
    return path


def _copy_model_files(source, target):
    """model.json and model.safetensors of `source` (no program.json) into `target`."""
    for name in ("model.json", "model.safetensors"):
        (target / name).write_bytes((source / name).read_bytes())
    return target


@pytest.fixture
def saved(_template, tmp_path):
    return _copy_model_files(_template, tmp_path)


@pytest.fixture
def legacy(saved):
    """The same model as format version 2 wrote it: params.npz and no content hash."""
    arrays = safetensors.numpy.load_file(saved / "model.safetensors")
    (saved / "model.safetensors").unlink()
    with open(saved / "params.npz", "wb") as f:
        np.savez(f, **arrays)

    def to_v2(doc):
        doc.pop("content_hash")
        doc.pop("program", None)  # program.json's checksum: format version 3 only
        doc.update(format_version=2)
        doc["params"].update(file="params.npz", sha256=saving._sha256(saved / "params.npz"))

    _edit_json(saved, to_v2)
    return saved


def _edit_json(directory: pathlib.Path, edit) -> None:
    path = directory / "model.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _rewrite_npz(directory: pathlib.Path, edit, allow_pickle: bool = False) -> None:
    """Rewrites params.npz with `edit(arrays)` and records its new checksum, as an
    attacker who controls both files would."""
    path = directory / "params.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    edit(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    _edit_json(directory, lambda d: d["params"].update(sha256=saving._sha256(path)))


def _rewrite_safetensors(directory: pathlib.Path, edit, metadata=None) -> None:
    """Rewrites model.safetensors with `edit(arrays)` (same metadata unless given) and
    records its new checksum, as an attacker who controls both files would."""
    path = directory / "model.safetensors"
    with safetensors.safe_open(path, framework="np") as f:
        old_metadata = f.metadata()
    arrays = dict(safetensors.numpy.load_file(path))
    edit(arrays)
    safetensors.numpy.save_file(arrays, path, metadata=metadata or old_metadata)
    _edit_json(directory, lambda d: d["params"].update(sha256=saving._sha256(path)))


def _load_fails(directory, match):
    with pytest.raises(ValueError, match=match) as info:
        saving.load_model(directory)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_truncated_json_is_refused(saved):
    path = saved / "model.json"
    path.write_bytes(path.read_bytes()[:200])
    _load_fails(saved, "model.json is not valid JSON")


def test_nan_in_json_is_refused(saved):
    path = saved / "model.json"
    path.write_text(path.read_text().replace('"dropout_rate": 0.0', '"dropout_rate": NaN'))
    _load_fails(saved, "not valid JSON.*NaN")


@pytest.mark.parametrize(
    "fixture, name", [("saved", "model.safetensors"), ("legacy", "params.npz")]
)
def test_corrupt_weights_fail_the_checksum(request, fixture, name):
    directory = request.getfixturevalue(fixture)
    path = directory / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _load_fails(directory, f"{name} does not match the SHA-256")


def test_npz_truncated_params_are_refused(legacy):
    path = legacy / "params.npz"
    path.write_bytes(path.read_bytes()[:-100])
    _load_fails(legacy, "does not match the SHA-256")
    # With a matching checksum (a hostile writer), the archive itself is refused.
    _edit_json(legacy, lambda d: d["params"].update(sha256=saving._sha256(path)))
    _load_fails(legacy, "not a valid .npz archive")


def test_npz_wrong_shape_is_refused(legacy):
    name = "transformer/layer_0/mlp/linear_1/w"

    def edit(arrays):
        arrays[name] = np.zeros((arrays[name].shape[0], arrays[name].shape[1] + 1), np.float32)

    _rewrite_npz(legacy, edit)
    _load_fails(legacy, "linear_1/w' has shape .* but the config implies")


def test_config_inconsistent_with_arrays_is_refused(saved):
    _edit_json(saved, lambda d: d["config"].update(num_layers=3))
    _load_fails(saved, "does not match model.json's config: unexpected arrays \\[\\], missing")


def test_unknown_keys_are_refused(saved):
    _edit_json(saved, lambda d: d.update(extra=1))
    _load_fails(saved, "unknown keys \\['extra'\\]")


def test_unknown_config_key_is_refused(saved):
    _edit_json(saved, lambda d: d["config"].update(use_bias=True))
    _load_fails(saved, "'config' has unknown keys \\['use_bias'\\]")


def test_missing_key_is_refused(saved):
    _edit_json(saved, lambda d: d.pop("residual_labels"))
    _load_fails(saved, "missing keys \\['residual_labels'\\]")


def test_npz_unknown_array_is_refused(legacy):
    _rewrite_npz(legacy, lambda a: a.update({"transformer/layer_9/attn/query/w": np.zeros(1)}))
    _load_fails(legacy, "unexpected arrays \\['transformer/layer_9/attn/query/w'\\]")


def test_npz_missing_array_is_refused(legacy):
    _rewrite_npz(legacy, lambda a: a.pop("pos_embed/embeddings"))
    _load_fails(legacy, "missing arrays \\['pos_embed/embeddings'\\]")


class _Hostile:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_npz_object_arrays_are_refused_without_unpickling(legacy):
    marker = legacy / "pwned"
    name = "transformer/layer_0/attn/query/b"

    def edit(arrays):
        arrays[name] = np.array([_Hostile(marker)] * arrays[name].shape[0], dtype=object)

    _rewrite_npz(legacy, edit, allow_pickle=True)
    message = _load_fails(legacy, "dtype object; only float32 or float64")
    assert "pickle" in message
    assert not marker.exists()


def test_npz_non_float_arrays_are_refused(legacy):
    name = "pos_embed/embeddings"
    _rewrite_npz(legacy, lambda a: a.update({name: a[name].astype(np.int64)}))
    _load_fails(legacy, "dtype int64")


def test_npz_non_finite_values_are_refused(legacy):
    def edit(arrays):
        arrays["token_embed/embeddings"] = arrays["token_embed/embeddings"].copy()
        arrays["token_embed/embeddings"][0, 0] = np.inf

    _rewrite_npz(legacy, edit)
    _load_fails(legacy, "contains NaN or infinite values")


def test_wrong_version_is_refused(saved):
    _edit_json(saved, lambda d: d.update(format_version=1))
    _load_fails(saved, "format_version 1 is not supported; this tracr reads versions 2, 3")


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["config"].update(causal=not d["config"]["causal"]), "config.causal"),
        (lambda d: d["residual_labels"].reverse(), "residual_labels"),
        (
            lambda d: d.update(unembedding=[(d["unembedding"][0] + 1) % d["config"]["d_model"]]),
            "unembedding",
        ),
        (lambda d: d["input"]["tokens"].reverse(), "input.tokens"),
        (lambda d: d["spec"].update(causal=not d["spec"]["causal"]), "config.causal"),
    ],
)
def test_an_edited_field_that_disagrees_with_the_spec_is_refused(saved, edit, field):
    _edit_json(saved, edit)
    _load_fails(saved, f"{field}.*disagree with the model's spec")


def test_other_format_is_refused(saved):
    _edit_json(saved, lambda d: d.update(format="safetensors"))
    _load_fails(saved, "'format' is 'safetensors'")


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d["config"].update(num_heads="1"), "num_heads.* must be int"),
        (lambda d: d["config"].update(causal=1), "causal.* must be bool"),
        (lambda d: d["config"].update(activation_function="gelu"), "'gelu' is not one of"),
        (lambda d: d["config"].update(layer_norm=True), "layer_norm must be false"),
        (lambda d: d["residual_labels"].pop(), "residual_labels must be a list of 9 strings"),
        (lambda d: d.update(unembedding=[99]), "unembedding must list 1 distinct"),
        (lambda d: d["output"].update(encoding="binary"), "output must be"),
        (lambda d: d["input"]["tokens"].append({"type": "int", "value": "1"}), "cannot be '1'"),
        (lambda d: d["input"]["tokens"].append({"type": "set", "value": []}), "unknown value type"),
        (lambda d: d["input"]["tokens"].append(d["input"]["tokens"][0]), "more than once"),
        (lambda d: d["input"].update(bos_token={"type": "str", "value": "?"}), "not among"),
        (lambda d: d["params"].update(file="../../etc/passwd"), "params.file must be"),
    ],
)
def test_schema_violations_are_refused(saved, edit, match):
    _edit_json(saved, edit)
    _load_fails(saved, match)


def test_missing_files_are_refused(saved, tmp_path_factory):
    with pytest.raises(FileNotFoundError, match="nope does not exist"):
        saving.load_model(saved / "nope")
    with pytest.raises(ValueError, match="is not a directory"):
        saving.load_model(saved / "model.json")
    (saved / "model.safetensors").unlink()
    _load_fails(saved, "model.safetensors does not exist")
    empty = tmp_path_factory.mktemp("empty")
    _load_fails(empty, "model.json does not exist: not a saved tracr model")


def test_npz_duplicate_zip_members_are_refused(legacy):
    path = legacy / "params.npz"
    with zipfile.ZipFile(path, "a") as archive:
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("pos_embed/embeddings.npy", b"junk")
    _edit_json(legacy, lambda d: d["params"].update(sha256=saving._sha256(path)))
    _load_fails(legacy, "lists an array more than once")


# --------------------------------------------------------------------------
# Format version 2 (params.npz) still loads.


def test_version_2_npz_model_loads_with_the_same_outputs(legacy, _template):
    original = saving.load_model(_template)
    loaded = saving.load_model(legacy)
    _assert_same_model(original, loaded)
    inputs = list(equivalence.all_inputs({"x", "y"}, MAX_SEQ_LEN))
    assert _outputs(loaded, inputs)[1] == _outputs(original, inputs)[1]


# --------------------------------------------------------------------------
# model.safetensors: hostile or corrupt weights.


def test_truncated_safetensors_are_refused(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    _edit_json(saved, lambda d: d["params"].update(sha256=saving._sha256(path)))
    _load_fails(saved, "not a valid safetensors file")


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda a: a.update({"transformer/layer_0/mlp/linear_1/w": np.zeros((2, 2), "f4")}),
            "linear_1/w' has shape \\(2, 2\\), but the config implies",
        ),
        (
            lambda a: a.update({"pos_embed/embeddings": a["pos_embed/embeddings"].astype("i4")}),
            "pos_embed/embeddings' has dtype I32; only F32 or F64",
        ),
        (
            lambda a: a["token_embed/embeddings"].__setitem__((0, 0), np.nan),
            "contains NaN or infinite values",
        ),
        (
            lambda a: a.update({"transformer/layer_9/attn/query/w": np.zeros(1, "f4")}),
            "unexpected arrays \\['transformer/layer_9/attn/query/w'\\]",
        ),
        (lambda a: a.pop("pos_embed/embeddings"), "missing arrays \\['pos_embed/embeddings'\\]"),
    ],
)
def test_bad_safetensors_arrays_are_refused(saved, edit, match):
    _rewrite_safetensors(saved, edit)
    _load_fails(saved, match)


def test_weights_from_another_save_are_refused(saved):
    metadata = {"format": "tracr-model", "format_version": "3", "content_sha256": "0" * 64}
    _rewrite_safetensors(saved, lambda a: None, metadata=metadata)
    _load_fails(saved, "metadata content_sha256 do not match model.json")


# --------------------------------------------------------------------------
# The content hash: any edit after saving is named.


def test_an_edited_array_is_named(saved):
    name = "transformer/layer_0/attn/query/w"
    _rewrite_safetensors(saved, lambda a: a[name].__setitem__((0, 0), a[name][0, 0] + 1.0))
    message = _load_fails(saved, f"array {name} changed since the model was saved")
    assert "content hash" in message


@pytest.mark.parametrize(
    "edit, named",
    [
        (
            lambda d: next(x for x in d["spec"]["layers"] if x["heads"])["heads"][0].update(
                label="edited"
            ),
            "spec.layers",
        ),
        (lambda d: d["metadata"].update(program="another"), "metadata.program"),
        (lambda d: d["spec"]["output"].update(label="edited"), "spec.output"),
    ],
)
def test_an_edited_field_is_named(saved, edit, named):
    _edit_json(saved, edit)
    _load_fails(saved, f"{named} changed since the model was saved")


def test_an_edited_content_hash_is_refused(saved):
    _edit_json(saved, lambda d: d["content_hash"].update(sha256="0" * 64))
    # The weights' metadata records the hash too, so they no longer belong to model.json.
    _load_fails(saved, "metadata content_sha256 do not match")


# --------------------------------------------------------------------------
# Saving onto an existing model, and Hub folders.


def test_saving_onto_a_saved_model_needs_overwrite(legacy):
    model = saving.load_model(legacy)
    with pytest.raises(FileExistsError, match="already holds a saved model; pass overwrite=True"):
        saving.save_model(model, legacy)
    saving.save_model(model, legacy, overwrite=True)
    # The version-2 weights are replaced by model.safetensors.
    assert sorted(p.name for p in legacy.iterdir()) == ["model.json", "model.safetensors"]
    assert json.loads((legacy / "model.json").read_text())["format_version"] == 3
    _assert_same_model(model, saving.load_model(legacy))


def test_hub_folder_loads_back_and_describes_the_model(tmp_path):
    program = lib.make_reverse(rasp.tokens)
    model = compiling.compile_rasp_to_model(program, {"a", "b"}, 3)
    meta = {"program": "lib:make_reverse(tokens)", "certificate": "certificate: exact"}
    saving.save_model(model, tmp_path, metadata=meta, hub=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "circuit.json",
        "config.json",
        "model.json",
        "model.safetensors",
        "program.json",
        "vocab.json",
    ]
    loaded = saving.load_model(tmp_path)
    _assert_same_model(model, loaded)
    config = json.loads((tmp_path / "config.json").read_text())
    spec = model.spec
    assert config["d_model"] == spec.d_model and config["n_heads"] == spec.num_heads
    assert config["d_vocab"] == len(spec.input.tokens) and config["d_vocab_out"] == 2
    assert config["normalization_type"] is None and config["act_fn"] == spec.activation
    assert config["use_attn_result"] and config["use_split_qkv_input"]
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    tokens = [saving.decode_value(t, "t") for t in vocab["tokens"]]
    assert tokens == list(spec.input.tokens)
    assert tokens[vocab["bos_token_id"]] == spec.input.bos_token
    assert vocab["output"]["label"] == program.label
    card = (tmp_path / "README.md").read_text()
    assert "lib:make_reverse(tokens)" in card and "max_seq_len: 3" in card
    assert f"layers: {spec.num_layers}" in card and "certificate: exact" in card


# --------------------------------------------------------------------------
# Files edited consistently, as a hostile editor can: the content hash is
# recomputed (with the public `content_parts`), so only the loader's checks of
# the model against itself and its weights stand in the way.


def _rehash(directory: pathlib.Path, edit_doc=None, edit_arrays=None) -> None:
    """Applies the edits, then rewrites model.safetensors, params.sha256 and the
    content hash so that every checksum matches again."""
    path = directory / "model.safetensors"
    arrays = dict(safetensors.numpy.load_file(path))
    doc = json.loads((directory / "model.json").read_text())
    if edit_doc:
        edit_doc(doc)
    if edit_arrays:
        edit_arrays(arrays)
    doc.pop("content_hash")
    with np.errstate(over="ignore"):
        parts = saving.content_parts(doc, arrays)
    total = saving._total(parts)
    metadata = {"format": "tracr-model", "format_version": "3", "content_sha256": total}
    safetensors.numpy.save_file(arrays, path, metadata=metadata)
    doc["params"]["sha256"] = saving._sha256(path)
    doc["content_hash"] = {"sha256": total, "parts": parts}
    (directory / "model.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def _categorical_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("categorical")
    model = compiling.compile_rasp_to_model(lib.make_reverse(rasp.tokens), {"a", "b"}, 3)
    saving.save_model(model, path)
    return path


@pytest.fixture
def categorical(_categorical_template, tmp_path):
    """A saved reverse model (categorical output), without program.json."""
    return _copy_model_files(_categorical_template, tmp_path)


def test_a_rehashed_unchanged_model_still_loads(saved, categorical):
    for directory in (saved, categorical):
        _rehash(directory)
        saving.load_model(directory)


def _both(section, key, change):
    """Edits `section.key` in model.json and in its spec alike (a consistent edit)."""

    def edit(doc):
        for root in (doc, doc["spec"]):
            root[section][key] = change(root[section][key], doc)

    return edit


def _spec(*path, value):
    def edit(doc):
        target = doc["spec"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return edit


def _first(doc, what):
    return next(i for i, layer in enumerate(doc["spec"]["layers"]) if layer[what])


def _layer_edit(what, change):
    def edit(doc):
        layer = doc["spec"]["layers"][_first(doc, what)]
        change(layer)

    return edit


INCONSISTENT = [
    # BOS and PAD the same token: padded positions would read as BOS.
    (_both("input", "pad_token", lambda v, d: d["input"]["bos_token"]), "pad_token is the BOS"),
    (_both("input", "tokens", lambda v, d: v[::-1]), "embeds\\[0\\] is residual"),
    (_both("output", "values", lambda v, d: v[::-1]), "output column 0 reads residual"),
    (
        lambda d: (
            _spec("output", "reads", value=lambda v: v[::-1])(d),
            d.update(unembedding=d["unembedding"][::-1]),
        ),
        "output column 0 reads residual",
    ),
    (_spec("input", "embeds", value=lambda v: v[::-1]), "embeds\\[1\\] is residual"),
    (_spec("input", "positions", value=lambda v: v[:2]), "positions has 2 entries"),
    (_spec("residual_values", value=lambda v: [{"type": "str", "value": "z"}] * len(v)), "labels"),
    (_layer_edit("heads", lambda layer: layer.update(heads=[])), "lists no head there"),
    (_layer_edit("mlp", lambda layer: layer.update(mlp=None)), "hidden units with weights"),
    (
        _layer_edit("heads", lambda layer: layer["heads"][0].update(query=[0])),
        "spec does not describe the weights \\(head .*: query uses",
    ),
    (_layer_edit("heads", lambda layer: layer["heads"][0].update(head=1.7)), "head must be an int"),
    (_layer_edit("heads", lambda layer: layer["heads"][0].update(head=5)), "not distinct ints"),
    (_layer_edit("heads", lambda layer: layer["heads"][0].update(head=-1)), "not distinct ints"),
    (_spec("layer_norm", value="false"), "layer_norm must be true or false, got 'false'"),
    (_spec("causal", value="false"), "causal must be true or false"),
    (_spec("output", "categorical", value="false"), "categorical must be true or false"),
    (_spec("layers", 0, "index", value=1), "layers\\[0\\].index is 1"),
]


@pytest.mark.parametrize("edit, match", INCONSISTENT, ids=[m for _, m in INCONSISTENT])
def test_a_model_json_inconsistent_with_itself_or_the_weights_is_refused(categorical, edit, match):
    _rehash(categorical, edit)
    before = {p.name: p.read_bytes() for p in categorical.iterdir()}
    _load_fails(categorical, match)
    assert {p.name: p.read_bytes() for p in categorical.iterdir()} == before


def test_positions_must_cover_max_seq_len(categorical):
    """max_seq_len raised everywhere, pos_embed padded to match, positions left short."""

    def edit_doc(doc):
        doc["config"]["max_seq_len"] = doc["spec"]["input"]["max_seq_len"] = 5

    def edit_arrays(arrays):
        pos = arrays["pos_embed/embeddings"]
        arrays["pos_embed/embeddings"] = np.concatenate([pos, np.zeros((2, pos.shape[1]), "f4")])

    _rehash(categorical, edit_doc, edit_arrays)
    _load_fails(categorical, "positions has 4 entries, but max_seq_len 5 needs 6")


def test_an_inconsistent_model_is_not_saved(tmp_path):
    import dataclasses

    model = compiling.compile_rasp_to_model(lib.make_reverse(rasp.tokens), {"a", "b"}, 3)
    spec = model.spec
    model.spec = dataclasses.replace(
        spec, input=dataclasses.replace(spec.input, pad_token=spec.input.bos_token)
    )
    with pytest.raises(ValueError, match="cannot be saved: input.pad_token is the BOS"):
        saving.save_model(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------
# float64 weights beyond float32's range would load as inf.


def test_float64_weights_beyond_float32_are_refused(categorical):
    name = "token_embed/embeddings"
    _rehash(categorical, edit_arrays=lambda a: a.update({name: a[name].astype("f8") * 1e300}))
    _load_fails(categorical, f"'{name}' contains NaN or infinite values \\(float64 values beyond")


def test_npz_float64_weights_beyond_float32_are_refused(legacy):
    name = "token_embed/embeddings"
    _rewrite_npz(legacy, lambda a: a.update({name: a[name].astype("f8") * 1e300}))
    _load_fails(legacy, f"'{name}' contains NaN or infinite values \\(float64 values beyond")


def test_finite_float64_weights_still_load(legacy, _template):
    _rewrite_npz(legacy, lambda a: a.update({k: v.astype("f8") for k, v in a.items()}))
    _assert_same_model(saving.load_model(_template), saving.load_model(legacy))


# --------------------------------------------------------------------------
# A version-3 file relabelled as version 2 (which has no content hash).


def _to_v2(directory: pathlib.Path, edit=None, keep=("content_hash",)) -> None:
    """Converts a saved model to version 2's layout, keeping the v3 fields in `keep`."""
    arrays = safetensors.numpy.load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    with open(directory / "params.npz", "wb") as f:
        np.savez(f, **arrays)

    def to_v2(doc):
        for key in ("content_hash", "program"):
            if key not in keep:
                doc.pop(key, None)
        doc.update(format_version=2)
        doc["params"].update(file="params.npz", sha256=saving._sha256(directory / "params.npz"))
        if edit:
            edit(doc)

    _edit_json(directory, to_v2)


def test_a_version_2_file_with_version_3_fields_is_refused(categorical):
    _to_v2(categorical, keep=("content_hash",))
    _load_fails(categorical, "format_version is 2, but the file has \\['content_hash'\\]")


def test_an_edited_version_2_file_is_refused_by_the_consistency_checks(categorical):
    _to_v2(categorical, _both("output", "values", lambda v, d: v[::-1]), keep=())
    _load_fails(categorical, "output column 0 reads residual")


def test_a_version_2_file_loads_with_a_warning(categorical, caplog):
    _to_v2(categorical, keep=())
    with caplog.at_level("WARNING"):
        saving.load_model(categorical)
    assert "format version 2 has no content hash" in caplog.text


# --------------------------------------------------------------------------
# Clear messages for files that are not regular files, and a float version.


@pytest.mark.parametrize("name", ["model.json", "model.safetensors"])
def test_a_directory_in_place_of_a_file_is_named(saved, name):
    (saved / name).unlink()
    (saved / name).mkdir()
    _load_fails(saved, f"{name} is not a regular file \\(a directory")


def test_a_device_in_place_of_model_json_is_refused_unread(saved):
    (saved / "model.json").unlink()
    (saved / "model.json").symlink_to("/dev/zero")
    _load_fails(saved, "model.json is not a regular file")


def test_a_float_format_version_is_refused(saved):
    _rehash(saved, lambda d: d.update(format_version=3.0))
    _load_fails(saved, "format_version 3.0 is not supported")


# --------------------------------------------------------------------------
# program.json: its SHA-256 is part of model.json, and it must be this model's.


@pytest.fixture(scope="module")
def _with_program(tmp_path_factory):
    """reverse and length, compiled for the same vocabulary and max_seq_len."""
    path = tmp_path_factory.mktemp("with_program")
    for name, program in (
        ("reverse", lib.make_reverse(rasp.tokens)),
        ("length", lib.make_length()),
    ):
        model = compiling.compile_rasp_to_model(program, {"a", "b"}, 3)
        saving.save_model(model, path / name)
    return path


@pytest.fixture
def reverse_dir(_with_program, tmp_path):
    for p in (_with_program / "reverse").iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return tmp_path


def _edit_program(directory, edit):
    path = directory / "program.json"
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _older_v3(directory):
    """As tracr wrote version 3 before model.json held program.json's SHA-256."""
    _rehash(directory, lambda d: d.pop("program", None))


def test_model_json_records_program_json_checksum(reverse_dir):
    doc = json.loads((reverse_dir / "model.json").read_text())
    assert doc["program"] == {
        "file": "program.json",
        "sha256": saving._sha256(reverse_dir / "program.json"),
    }
    assert "program.sha256" in doc["content_hash"]["parts"]
    loaded = saving.load_model(reverse_dir)
    assert loaded.program(["a", "b", "b"]) == ["b", "b", "a"]


def test_another_models_program_json_is_refused(reverse_dir, _with_program):
    (reverse_dir / "program.json").write_bytes((_with_program / "length/program.json").read_bytes())
    _load_fails(reverse_dir, "output is named 'length', but the model computes 'reverse_")
    _older_v3(reverse_dir)  # no checksum to compare: the output's name still is
    _load_fails(reverse_dir, "output is named 'length'.*belongs to another model")


def test_an_edited_program_json_fails_its_checksum(reverse_dir):
    def edit(doc):
        table = next(e for e in doc["exprs"] if e["kind"] == "map")["table"]
        table[0][1] = table[-1][1] if table[0][1] != table[-1][1] else {"type": "int", "value": 9}

    _edit_program(reverse_dir, edit)
    _load_fails(reverse_dir, "program.json does not match the SHA-256 recorded in model.json")


def test_older_version_3_files_without_the_checksum_still_load(reverse_dir):
    _older_v3(reverse_dir)
    loaded = saving.load_model(reverse_dir)
    assert loaded.program(["a", "b", "b"]) == ["b", "b", "a"]
    assert loaded.apply(["compiler_bos", "a", "b", "b"]).decoded[1:] == ["b", "b", "a"]


def test_a_program_json_with_a_duplicate_table_input_is_refused(reverse_dir):
    _older_v3(reverse_dir)

    def edit(doc):
        table = next(e for e in doc["exprs"] if e["kind"] == "map")["table"]
        table.append([table[0][0], {"type": "int", "value": 99}])

    _edit_program(reverse_dir, edit)
    _load_fails(
        reverse_dir, "program.json: exprs\\[\\d+\\] \\(map\\) lists the input .* more than once"
    )


def test_a_program_json_whose_output_is_another_expression_is_refused(reverse_dir):
    _older_v3(reverse_dir)
    _edit_program(reverse_dir, lambda d: d.update(output=0))
    _load_fails(reverse_dir, "program.json: its program's output is named 'indices'")


def test_a_directory_in_place_of_program_json_is_named(reverse_dir):
    (reverse_dir / "program.json").unlink()
    (reverse_dir / "program.json").mkdir()
    _load_fails(reverse_dir, "program.json is not a regular file \\(a directory")


def test_a_program_that_the_model_does_not_compute_is_not_written(tmp_path, caplog):
    model = compiling.compile_rasp_to_model(lib.make_reverse(rasp.tokens), {"a", "b"}, 3)
    with caplog.at_level("WARNING"):
        saving.save_model(model, tmp_path, program=lib.make_length())
    assert not (tmp_path / "program.json").exists()
    assert "the program's output is named 'length', but the model computes" in caplog.text
    assert json.loads((tmp_path / "model.json").read_text())["program"] is None
    assert saving.load_model(tmp_path).program is None
