"""The example notebook runs top to bottom on the CPU (its cells assert what they show)."""

import pathlib

import pytest

pytest.importorskip("transformer_lens")
nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / "examples" / "transformer_lens.ipynb"


def test_transformer_lens_notebook_runs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [
        o.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    ]
    text = "".join(outputs)
    assert "JAX: ['compiler_bos', 'c', 'b', 'a']" in text
    assert "TransformerLens: ['compiler_bos', 'c', 'b', 'a']" in text
    assert "zeroed:" in text
    assert not any(
        o.get("output_type") == "error" for c in notebook.cells for o in c.get("outputs", [])
    )
