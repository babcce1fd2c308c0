"""`tracr circuit`: a saved model's circuit in each format, read back by our readers."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tracr.circuits import circuit, formats
from tracr.io import saving

ROOT = pathlib.Path(__file__).resolve().parents[2]


def tracr(*args):
    result = subprocess.run(
        [sys.executable, "-m", "tracr", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TRACR_DEBUG": ""},
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("circuit") / "hist"
    code, _, err = tracr(
        "compile", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "3", "-o", str(directory)
    )
    assert code == 0, err
    return directory


def test_circuit_command_writes_each_format(model_dir, tmp_path):
    want = circuit(saving.load_model(str(model_dir)))
    readers = {
        "json": lambda doc: formats.from_json(doc).edge_keys(),
        "tl": formats.from_transformer_lens,
        "acdc": lambda rows: formats.from_acdc(formats.acdc_from_rows(rows)),
        "interpbench": lambda doc: formats.from_interpbench(doc["acdc_hooks"], "acdc_hooks"),
    }
    for fmt, read in readers.items():
        path = tmp_path / f"circuit_{fmt}.json"
        code, out, err = tracr("circuit", str(model_dir), "--format", fmt, "-o", str(path))
        assert code == 0, err
        assert f"{len(want.edges)} edges" in err and out == ""
        assert read(json.loads(path.read_text())) == want.edge_keys()


def test_circuit_command_prints_json_to_stdout(model_dir):
    code, out, _ = tracr("circuit", str(model_dir))
    assert code == 0
    assert json.loads(out)["format"] == "tracr-circuit"


def test_circuit_command_rejects_an_unknown_format(model_dir):
    code, _, err = tracr("circuit", str(model_dir), "--format", "yaml")
    assert code == 2 and "invalid choice" in err
