"""`tracr circuit`: a saved model's circuit in each format, read back by our readers."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tracr import cli
from tracr.circuits import circuit, formats
from tracr.compiler import compiling, lib
from tracr.io import saving

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("circuit") / "hist"
    model = compiling.compile_rasp_to_model(lib.make_hist(), {"a", "b"}, 3)
    saving.save_model(model, str(directory))
    return directory


def run_main(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_circuit_command_writes_each_format(capsys, model_dir, tmp_path):
    want = circuit(saving.load_model(str(model_dir)))
    readers = {
        "json": lambda doc: formats.from_json(doc).edge_keys(),
        "tl": formats.from_transformer_lens,
        "acdc": lambda rows: formats.from_acdc(formats.acdc_from_rows(rows)),
        "interpbench": lambda doc: formats.from_interpbench(doc["acdc_hooks"], "acdc_hooks"),
    }
    for fmt, read in readers.items():
        path = tmp_path / f"circuit_{fmt}.json"
        code, out, err = run_main(
            capsys, "circuit", str(model_dir), "--format", fmt, "-o", str(path)
        )
        assert code == 0, err
        assert f"{len(want.edges)} edges" in err and out == ""
        assert read(json.loads(path.read_text())) == want.edge_keys()


def test_circuit_command_prints_json_to_stdout_as_users_run_it(model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "tracr", "circuit", str(model_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TRACR_DEBUG": ""},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "tracr-circuit"


def test_circuit_command_rejects_an_unknown_format(capsys, model_dir):
    code, _, err = run_main(capsys, "circuit", str(model_dir), "--format", "yaml")
    assert code == 2 and "invalid choice" in err
