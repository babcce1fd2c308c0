"""The `tracr` command line, run as users run it: in a subprocess."""

import json
import os
import re
import subprocess
import sys

import pytest

from tracr import cli
from tracr.cli.commands import bench as bench_command
from tracr.cli.commands import run as run_command
from tracr.rasp import rasp, traversal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tracr(*args, cwd=None):
    """Runs `python -m tracr ARGS`; returns (exit status, stdout, stderr)."""
    result = subprocess.run(
        [sys.executable, "-m", "tracr", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "TRACR_DEBUG": ""},
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


def assert_one_line_error(code, out, err, command, match):
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"tracr {command}: error: "), err
    assert match in lines[0], err


@pytest.fixture(scope="module")
def sort_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli") / "sort_model"
    code, out, err = tracr(
        "compile", "lib:make_sort_unique", "--vocab", "1,2,3,4,5", "--max-seq-len", "5",
        "-o", str(directory),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "compiled lib:make_sort_unique(vals=tokens, keys=tokens): 2 layers, 1 heads, "
        "d_model 24, mlp 11, 2,674 parameters",
        "checked against the RASP evaluator on all 3905 inputs: every output agrees",
        f"saved to {directory}",
    ]
    return directory


def test_compile_checks_against_the_evaluator_unless_told_not_to(tmp_path):
    args = ["lib:make_length", "--vocab", "a,b", "--max-seq-len", "3"]
    code, out, err = tracr("compile", *args, "-o", str(tmp_path / "checked"))
    assert code == 0, err
    assert "checked against the RASP evaluator on all 14 inputs: every output agrees" in out
    code, out, err = tracr("compile", *args, "--no-check", "-o", str(tmp_path / "unchecked"))
    assert code == 0, err
    assert "checked against" not in out and (tmp_path / "unchecked").is_dir()
    code, out, err = tracr(
        "compile", *args, "--check-inputs", "5", "-o", str(tmp_path / "sampled")
    )  # fmt: skip
    assert code == 0, err
    assert "checked against the RASP evaluator on a sample of 200 inputs" in out


def test_a_model_that_disagrees_is_not_saved(tmp_path, monkeypatch, capsys):
    """A compiler bug, simulated: the check must refuse to save the model."""
    from tracr.compiler import compiling

    real = compiling.compile_rasp_to_model

    def wrong_program_compiled(program, **kwargs):  # length is always 1
        wrong = rasp.Map(lambda x: 1, rasp.tokens)
        return real(traversal.in_place_of(wrong, program), **kwargs)

    monkeypatch.setattr(compiling, "compile_rasp_to_model", wrong_program_compiled)
    target = tmp_path / "model"
    code = cli.main(
        ["compile", "lib:make_length", "--vocab", "a,b", "--max-seq-len", "2", "-o", str(target)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "disagrees with the RASP evaluator on all 6 inputs" in err
    assert "nothing was saved" in err and not target.exists()


def test_demo_prints_model_and_evaluator_output():
    code, out, err = tracr("demo")
    assert code == 0, err
    assert out.splitlines() == [
        "program: sort_unique  input: ['compiler_bos', 3, 1, 5, 2]",
        "model output:     ['compiler_bos', 1, 2, 3, 5]",
        "RASP evaluator:   [1, 2, 3, 5]",
    ]


def test_compile_writes_a_loadable_model(sort_dir):
    doc = json.loads((sort_dir / "model.json").read_text())
    assert doc["metadata"]["program"] == "lib:make_sort_unique(vals=tokens, keys=tokens)"
    assert (sort_dir / "model.safetensors").stat().st_size > 0


def test_run_saved_model_prints_decoded_output(sort_dir):
    code, out, err = tracr("run", str(sort_dir), "--input", "3 1 5 2")
    assert code == 0, err
    assert out.splitlines() == [
        "model:  lib:make_sort_unique(vals=tokens, keys=tokens)",
        "input:  [3, 1, 5, 2]",
        "output: [1, 2, 3, 5]",
    ]


def test_run_program_with_residuals_prints_named_table():
    code, out, err = tracr(
        "run", "lib:make_frac_prevs", "--vocab", "x,y", "--max-seq-len", "4",
        "--input", "xyxx", "--residuals",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[:4] == [
        "model:  lib:make_frac_prevs(bools=tokens==x)",
        "input:  ['x', 'y', 'x', 'x']",
        "output: [1.0, 0.5, 0.6667, 0.75]",
        "RASP:   [1.0, 0.5, 0.6667, 0.75]",
    ]
    assert "== residual stream embeddings ==" in lines
    assert "== residual stream after layer 0 attention (no change) ==" in lines
    after = lines.index("== residual stream after layer 1 attention ==")
    header = ["dimension", "0:", "BOS", "1:", "x", "2:", "y", "3:", "x", "4:", "x"]
    assert lines[after + 1].split() == header
    table = lines[after + 2 : lines.index("", after)]
    rows = {line.split()[0]: line.split()[1:] for line in table}
    assert len(rows) == 10  # the residual width of frac_prevs at max_seq_len 4
    # The output's row is labelled frac_prevs_<id>, as in Tracr.
    (output_row,) = [row for name, row in rows.items() if re.fullmatch(r"frac_prevs_\d+", name)]
    assert output_row == [".", "1", "0.5", "0.667", "0.75"]
    assert rows["one"] == ["1"] * 5
    assert rows["tokens:y"] == [".", ".", "1", ".", "."]


def test_user_error_is_one_line_with_exit_status_2(sort_dir):
    code, out, err = tracr("run", str(sort_dir), "--input", "3 1 9")
    assert_one_line_error(
        code, out, err, "run", "--input: unknown tokens ['9']; the vocabulary is {1, 2, 3, 4, 5}"
    )


def test_help_lists_every_command():
    code, out, _ = tracr("--help")
    assert code == 0
    for command in ("demo", "compile", "run", "show", "export", "compress", "bench"):
        assert f"    {command}" in out


@pytest.mark.parametrize(
    "command, words",
    [
        ("compile", ["PROGRAM", "--vocab", "--max-seq-len", "--causal", "--arg", "-o DIR"]),
        ("run", ["MODEL", "--input", "--residuals", "--vocab"]),
        ("show", ["--input", "-o DIR", "matplotlib", "attention"]),
        ("export", ["TransformerLens", "-o DIR"]),
        ("compress", ["--dim", "d_exact", "--steps"]),
        ("bench", ["compression", "throughput", "compile_time"]),
    ],
)
def test_help_of_each_command_is_useful(command, words, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tracr {command}")
    assert "example: tracr" in out
    for word in words:
        assert word in out, word


# --------------------------------------------------------------------------
# In-process (cheaper): more commands and every kind of user error.


def run_main(capsys, *args):
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "args, command, match",
    [
        (["compile", "lib:make_sort_unique", "-o", "x"], "compile",
         "needs --vocab and --max-seq-len"),
        (["compile", "lib:nope", "--vocab", "1", "--max-seq-len", "2", "-o", "x"], "compile",
         "lib:nope is not in tracr.compiler.lib; choose one of detect_pattern, make_count"),
        (["compile", "sort_model", "-o", "x"], "compile", "PROGRAM 'sort_model' must be lib:NAME"),
        (["run", "lib:make_count", "--vocab", "a,b", "--max-seq-len", "3", "--input", "ab"], "run",
         "lib:make_count needs token: pass --arg token=VALUE"),
        (["run", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--input", "ab",
          "--arg", "x=1"], "run", "lib:make_hist has no parameter x; its signature is make_hist()"),
        (["run", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "3", "--input", "ab",
          "--arg", "oops"], "run", "--arg 'oops' must look like NAME=VALUE"),
        (["run", "lib:make_nary_sequencemap", "--vocab", "a", "--max-seq-len", "2", "--input", "a"],
         "run", "takes a Python function as 'f'"),
        (["run", "lib:make_hist", "--vocab", "a,,b", "--max-seq-len", "3", "--input", "a"], "run",
         "--vocab 'a,,b' has an empty item"),
        (["run", "lib:make_hist", "--vocab", "a,b", "--max-seq-len", "2", "--input", "abab"], "run",
         "Input has 5 tokens (BOS included) but the model was compiled for at most 3"),
        (["run", "no/such/dir", "--input", "a"], "run", "MODEL 'no/such/dir' does not exist"),
        (["run", "missing.py:f", "--input", "a"], "run",
         "program file 'missing.py' does not exist"),
        (["bench", "throughput_x"], None, "invalid choice: 'throughput_x'"),
        # The compiler's argument checks are the user's mistakes too.
        (["compile", "lib:make_sort_unique", "--vocab", "1,2,compiler_bos", "--max-seq-len", "3",
          "-o", "x"], "compile", "The compiler_bos token 'compiler_bos' is also in the vocab"),
        (["compile", "lib:make_sort_unique", "--vocab", "1,2,compiler_pad", "--max-seq-len", "3",
          "-o", "x"], "compile", "The compiler_pad token 'compiler_pad' is also in the vocab"),
        (["compile", "lib:make_sort_unique", "--vocab", "1,2", "--max-seq-len", "3",
          "--mlp-exactness", "0", "-o", "x"], "compile", "mlp_exactness must be between 1 and"),
        (["run", "lib:make_length", "--vocab", "1,2", "--max-seq-len", "3", "--input", "1",
          "--mlp-exactness", "nan"], "run", "mlp_exactness must be between 1 and"),
    ],
)  # fmt: skip
def test_user_errors(capsys, args, command, match):
    code, out, err = run_main(capsys, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    prefix = f"tracr {command}: error: " if command else "tracr bench: error: "
    assert lines[0].startswith(prefix), err
    assert match in lines[0], err


def test_saved_model_with_program_options_is_refused(capsys, sort_dir):
    code, _, err = run_main(capsys, "run", str(sort_dir), "--input", "1", "--vocab", "1,2")
    assert code == 2
    assert "--vocab only apply when MODEL is a program" in err


def test_corrupt_saved_model_is_one_line(capsys, sort_dir, tmp_path):
    for name in ("model.json", "model.safetensors"):
        (tmp_path / name).write_bytes((sort_dir / name).read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    code, _, err = run_main(capsys, "run", str(tmp_path), "--input", "1")
    assert code == 2
    assert err.count("\n") == 1 and "does not match the SHA-256" in err


def test_bundle_of_a_damaged_model_is_a_user_error(capsys, sort_dir, tmp_path):
    for path in sort_dir.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "model.json").write_text("{")
    code, _, err = run_main(capsys, "bundle", str(tmp_path), "-o", str(tmp_path / "out"))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("tracr bundle: error: "), err
    assert "model.json is not valid JSON" in err
    assert not (tmp_path / "out").exists()


def test_show_of_a_damaged_hybrid_is_a_user_error(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "hybrid.json").write_text("[1]")
    (tmp_path / "params.npz").write_bytes(b"not a zip")
    args = ["show", str(tmp_path), "--input", "1", "-o", str(tmp_path / "pics")]
    code, _, err = run_main(capsys, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("tracr show: error: "), err
    assert "hybrid.json must hold a JSON object" in err


def test_a_value_error_from_inside_the_compiler_is_still_a_bug(capsys, monkeypatch):
    """Only the compiler's argument checks are usage errors; a later ValueError is tracr's bug."""
    from tracr.compiler import validating

    def broken(program):
        raise ValueError("broken inside the compiler")

    monkeypatch.setattr(validating, "static_validate", broken)
    args = ["compile", "lib:make_length", "--vocab", "1,2", "--max-seq-len", "3", "-o", "x"]
    code, _, err = run_main(capsys, *args)
    assert code == 1, err
    assert err.startswith("tracr compile: internal error: ValueError: broken inside"), err
    assert "bug" in err


def test_run_file_program_with_args(capsys, tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(
        "from tracr.rasp import rasp\n"
        "def shifted(sop: rasp.SOp, offset: int) -> rasp.SOp:\n"
        "    return rasp.Map(lambda x: x + offset, sop)\n"
        "program = rasp.Map(lambda x: x * 2, rasp.tokens)\n"
    )
    code, out, err = run_main(
        capsys, "run", f"{path}:shifted", "--vocab", "1,2,3", "--max-seq-len", "3",
        "--input", "1,3", "--arg", "offset=10",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[2:] == ["output: [11, 13]", "RASP:   [11, 13]"]
    code, out, err = run_main(
        capsys, "run", f"{path}:program", "--vocab", "1,2", "--max-seq-len", "2", "--input", "2"
    )
    assert code == 0, err
    assert "output: [4]" in out


def test_library_arguments_are_filled_in(capsys):
    code, out, err = run_main(
        capsys, "run", "lib:make_sort", "--vocab", "2,4,6", "--max-seq-len", "3", "--input", "6 2 6"
    )
    assert code == 0, err
    assert out.splitlines() == [
        "model:  lib:make_sort(vals=tokens, keys=tokens, max_seq_len=3, min_key=2)",
        "input:  [6, 2, 6]",
        "output: [2, 6, 6]",
        "RASP:   [2, 6, 6]",
    ]
    code, out, err = run_main(
        capsys, "run", "lib:shift_by", "--vocab", "a,b", "--max-seq-len", "3", "--causal",
        "--input", "aba", "--arg", "offset=1",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "model:  lib:shift_by(offset=1, sop=tokens)"
    assert out.splitlines()[3].startswith("RASP:   [None, 'a', 'b']")


def test_export_writes_state_dict_and_config(capsys, sort_dir, tmp_path):
    import numpy as np

    code, out, err = run_main(capsys, "export", str(sort_dir), "-o", str(tmp_path / "tl"))
    assert code == 0, err
    info = json.loads((tmp_path / "tl" / "transformer_lens.json").read_text())
    assert info["config"]["d_model"] == 24 and info["config"]["act_fn"] == "relu"
    assert info["tokens"][info["bos_token_id"]] == {"type": "str", "value": "compiler_bos"}
    with np.load(tmp_path / "tl" / "transformer_lens.npz", allow_pickle=False) as arrays:
        assert arrays["blocks.1.attn.W_Q"].shape == (1, 24, info["config"]["d_head"])


def test_show_writes_pngs(capsys, sort_dir, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, err = run_main(
        capsys, "show", str(sort_dir), "--input", "3 1", "-o", str(tmp_path / "pics")
    )
    assert code == 0, err
    assert "wrote 9 pictures" in out.splitlines()[0]
    assert (tmp_path / "pics" / "attention_layer1.png").stat().st_size > 5_000
    assert (tmp_path / "pics" / "circuit.png").stat().st_size > 5_000


def test_compress_reports_exact_compression_or_a_clear_error(capsys, sort_dir):
    code, out, err = run_main(capsys, "compress", str(sort_dir))
    try:
        import tracr.compression.exact  # noqa: F401
    except ModuleNotFoundError:
        assert code == 2 and "tracr compress needs tracr.compression.exact" in err
        return
    assert code == 0, err
    assert "exact compression: d_exact = " in out and "of D = 24" in out


def test_bench_without_script_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(bench_command, "_benchmarks_dir", lambda: tmp_path)
    code, _, err = run_main(capsys, "bench", "throughput")
    assert code == 2
    assert err.strip() == (
        f"tracr bench: error: benchmark 'throughput' is not available: {tmp_path}/throughput.py "
        "does not exist (benchmarks run from a source checkout)."
    )


def test_bench_runs_the_script_with_its_arguments(capsys, monkeypatch, tmp_path):
    (tmp_path / "compile_time.py").write_text(
        "import sys\nprint('bench args', sys.argv[1:])\nsys.exit(3)\n"
    )
    monkeypatch.setattr(bench_command, "_benchmarks_dir", lambda: tmp_path)
    code, out, _ = run_main(capsys, "bench", "compile_time", "--quick", "x")
    assert code == 3
    assert out.strip() == "bench args ['--quick', 'x']"


def test_parsers():
    assert cli.parse_vocab("1,2,3") == [1, 2, 3]
    assert cli.parse_vocab("0.5, 1") == [0.5, 1.0]
    assert cli.parse_vocab("a,b,1") == ["a", "b", "1"]
    assert cli.parse_vocab("(,),{,}") == ["(", ")", "{", "}"]
    assert cli.parse_value("(),{}", []) == ["()", "{}"]
    assert cli.parse_value("3", ["3", "a"]) == "3"
    assert cli.parse_value("3", []) == 3
    assert cli.parse_value("True", []) is True
    assert cli.is_program_spec("lib:make_hist") and cli.is_program_spec("a/b.py:f")
    assert not cli.is_program_spec("some_dir")


# ------------------------------------------------------------- issue 17 edges

_PROGRAMS = """
from tracr.rasp import rasp


def boom():
    raise RuntimeError("the user's bug")


def identity(sop):  # unannotated: --arg sop=indices binds rasp.indices
    return rasp.Map(lambda x: x, sop)


def listed():
    return rasp.Map(lambda x: [x], rasp.tokens)
"""


@pytest.fixture()
def programs(tmp_path):
    path = tmp_path / "programs.py"
    path.write_text(_PROGRAMS)
    return path


def test_a_raising_program_function_is_one_line_naming_it(capsys, programs):
    args = ["run", f"{programs}:boom", "--vocab", "1,2", "--max-seq-len", "3", "--input", "1"]
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, out, err, "run", f"{programs}:boom() raised RuntimeError")
    assert "the user's bug" in err and "--debug" in err
    code, _, err = tracr(*args, "--debug")
    assert code == 1 and "Traceback" in err and "RuntimeError: the user's bug" in err


def test_an_unhashable_map_value_is_a_user_error(capsys, programs):
    args = ["run", f"{programs}:listed", "--vocab", "1,2", "--max-seq-len", "3", "--input", "1"]
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, out, err, "run", "returned [1] (a list, unhashable)")


def test_unannotated_sop_parameters_are_bound_as_documented(capsys, programs):
    args = ["run", f"{programs}:identity", "--vocab", "a,b", "--max-seq-len", "3"]
    code, out, err = run_main(capsys, *args, "--arg", "sop=indices", "--input", "b a b")
    assert code == 0, err
    assert "output: [0, 1, 2]" in out and "sop=indices" in out
    code, out, err = run_main(capsys, *args, "--arg", "sop=tokens", "--input", "b a b")
    assert code == 0, err
    assert "output: ['b', 'a', 'b']" in out


def test_input_separators_can_be_mixed(capsys):
    args = ["run", "lib:make_length", "--vocab", "1,2,3", "--max-seq-len", "4"]
    code, out, err = run_main(capsys, *args, "--input", "1, 2 3,,1")
    assert code == 0, err
    assert "input:  [1, 2, 3, 1]" in out and "output: [4, 4, 4, 4]" in out


def test_other_errors_are_bugs_not_usage_errors(capsys, monkeypatch):
    """A ValueError from inside tracr is a bug: one line, exit status 1, not a usage error."""
    monkeypatch.setattr(
        run_command, "parse_input", lambda text, model: (_ for _ in ()).throw(ValueError("x"))
    )
    args = ["run", "lib:make_length", "--vocab", "1,2", "--max-seq-len", "3", "--input", "1"]
    code, out, err = run_main(capsys, *args)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith("tracr run: internal error: ValueError: x") and "bug" in err


def test_a_closed_pipe_ends_quietly():
    """`tracr run ... | head`: the reader is gone before the output is written."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracr", "run", "lib:make_length", "--vocab", "a,b",
         "--max-seq-len", "3", "--input", "ab", "--residuals"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""


def test_circuit_format_choices_are_the_circuit_formats():
    from tracr.circuits import formats
    from tracr.cli import parser

    assert parser.CIRCUIT_FORMATS == formats.FORMATS


def test_unspaced_input_names_the_unknown_character():
    # A one-character vocabulary reads "xyxq" as four tokens, so the error names 'q',
    # not the whole string.
    code, out, err = tracr(
        "run", "lib:make_frac_prevs", "--vocab", "x,y", "--max-seq-len", "4", "--input", "xyq"
    )
    assert_one_line_error(
        code, out, err, "run", "--input: unknown tokens ['q']; the vocabulary is {x, y}"
    )
