"""`tracr compile --force` and `tracr bundle`: a Hub folder that loads back, in JAX and torch."""

import json

import jax
import pytest

from tracr import circuits, cli
from tracr.circuits import formats
from tracr.io import saving

ARGS = ["lib:make_reverse", "--vocab", "a,b", "--max-seq-len", "3"]


def _main(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def compiled_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bundle") / "reverse"
    assert cli.main(["compile", *ARGS, "-o", str(directory)]) == 0
    return directory


def test_compile_onto_a_saved_model_needs_force(capsys, compiled_dir, tmp_path):
    target = tmp_path / "m"
    assert _main(capsys, "compile", *ARGS, "--no-check", "-o", str(target))[0] == 0
    code, _, err = _main(capsys, "compile", *ARGS, "--no-check", "-o", str(target))
    assert code == 2 and "already holds a saved model; pass --force" in err
    assert err.count("\n") == 1
    assert _main(capsys, "compile", *ARGS, "--no-check", "--force", "-o", str(target))[0] == 0


def test_compile_keeps_the_certificate(compiled_dir):
    certificate = saving.load_metadata(compiled_dir)["certificate"]
    assert certificate.startswith("certificate for ") and "on all 14 inputs" in certificate


def test_bundle_writes_a_hub_folder_that_loads_back(capsys, compiled_dir, tmp_path):
    out_dir = tmp_path / "hub"
    code, out, err = _main(capsys, "bundle", str(compiled_dir), "-o", str(out_dir))
    assert code == 0, err
    assert "wrote a Hub-ready folder" in out
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == [
        "README.md",
        "circuit.json",
        "config.json",
        "model.json",
        "model.safetensors",
        "program.json",
        "vocab.json",
    ]
    card = (out_dir / "README.md").read_text()
    assert saving.load_metadata(compiled_dir)["certificate"] in card
    assert "lib:make_reverse" in card
    original, loaded = saving.load_model(compiled_dir), saving.load_model(out_dir)
    tokens = [original.input_encoder.bos_token, "a", "b", "b"]
    with jax.disable_jit():
        assert loaded.apply(tokens).decoded == original.apply(tokens).decoded
    assert json.loads((out_dir / "config.json").read_text())["d_model"] == original.spec.d_model
    bundled = formats.from_json(json.loads((out_dir / "circuit.json").read_text()))
    assert bundled.edges == circuits.circuit(loaded).edges and bundled.edges
    code, _, err = _main(capsys, "bundle", str(compiled_dir), "-o", str(out_dir))
    assert code == 2 and "pass overwrite=True (tracr: --force)" in err
    assert _main(capsys, "bundle", str(compiled_dir), "-o", str(out_dir), "--force")[0] == 0


def test_transformer_lens_loads_the_hub_folder(capsys, compiled_dir, tmp_path):
    pytest.importorskip("transformer_lens")
    from tracr.export import to_transformer_lens_model

    out_dir = tmp_path / "hub"
    assert _main(capsys, "bundle", str(compiled_dir), "-o", str(out_dir))[0] == 0
    model = saving.load_model(out_dir)
    lens = to_transformer_lens_model(model)
    batch = [[model.input_encoder.bos_token, *x] for x in (["a"], ["a", "b"], ["b", "b", "a"])]
    with jax.disable_jit():
        assert lens.decode_batch(batch) == [model.apply(x).decoded for x in batch]


def test_bundle_of_a_missing_directory_is_a_usage_error(capsys, tmp_path):
    code, _, err = _main(capsys, "bundle", str(tmp_path / "nope"), "-o", str(tmp_path / "x"))
    assert code == 2 and "is not a directory written by `tracr compile`" in err


def test_save_model_hub_writes_what_bundle_writes(capsys, compiled_dir, tmp_path):
    """One writer: `tracr bundle` and save_model(hub=True) give the same files."""
    assert _main(capsys, "bundle", str(compiled_dir), "-o", str(tmp_path / "cli"))[0] == 0
    model = saving.load_model(compiled_dir)
    metadata = saving.load_metadata(compiled_dir)
    saving.save_model(model, tmp_path / "api", metadata=metadata, hub=True)
    names = sorted(p.name for p in (tmp_path / "cli").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "api").iterdir())
    for name in names:  # the same bytes, weights and their SHA-256 included
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()
    circuit = json.loads((tmp_path / "api" / "circuit.json").read_text())
    assert formats.from_json(circuit).edges == circuits.circuit(model).edges
    card = (tmp_path / "api" / "README.md").read_text()
    assert "- `program.json`: the RASP program" in card and "- `circuit.json`: the circuit" in card
    loaded = saving.load_model(tmp_path / "api")
    tokens = [model.input_encoder.bos_token, "b", "a", "a"]
    with jax.disable_jit():
        assert loaded.apply(tokens).decoded == model.apply(tokens).decoded
    assert loaded.program(["b", "a", "a"]) == ["a", "a", "b"]  # program.json, rebuilt
