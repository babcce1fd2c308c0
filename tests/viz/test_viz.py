"""Pictures: PNGs are written, with labelled axes and titles a person can read."""

import subprocess
import sys

import pytest

from tracr.compiler import compiling, lib
from tracr.rasp import rasp

matplotlib = pytest.importorskip("matplotlib")

from tracr import viz  # noqa: E402  (after the skip: needs matplotlib)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


SORT = lib.make_sort_unique(rasp.tokens, rasp.tokens)


@pytest.fixture(scope="module")
def sort_model():
    return compiling.compile_rasp_to_model(SORT, {1, 2, 3}, 3)


TOKENS = ["compiler_bos", 3, 1, 2]


def test_write_pngs_writes_residual_and_attention_pictures(sort_model, tmp_path):
    paths = viz.write_pngs(sort_model, TOKENS, tmp_path / "pics", dpi=60)
    names = [p.name for p in paths]
    assert names == [
        "circuit.png",
        "residual_stream.png",
        "residual_00_embeddings.png",
        "residual_01_layer_0_attention.png",
        "residual_02_layer_0_mlp.png",
        "residual_03_layer_1_attention.png",
        "residual_04_layer_1_mlp.png",
        "attention_layer0.png",
        "attention_layer1.png",
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        assert len(data) > 5_000, path


def test_residual_figure_labels_dimensions_positions_and_stages(sort_model):
    fig = viz.plot_residual_stream(sort_model, TOKENS)
    axes = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in axes] == [
        "embeddings",
        "residual stream after layer 0 attention",
        "residual stream after layer 0 MLP",
        "residual stream after layer 1 attention",
        "residual stream after layer 1 MLP (no change)",
    ]
    bottom = axes[-1]
    assert [t.get_text() for t in bottom.get_xticklabels()] == sort_model.residual_labels
    assert [t.get_text() for t in bottom.get_yticklabels()] == ["0: BOS", "1: 3", "2: 1", "3: 2"]
    assert "residual dimension" in bottom.get_xlabel()
    # The image is the residual itself: one-hot token 3 at position 1.
    values = axes[0].images[0].get_array()
    column = sort_model.residual_labels.index("tokens:3")
    assert values[1, column] == 1.0 and values[2, column] == 0.0
    matplotlib.pyplot.close(fig)


def test_attention_figure_shows_each_used_head_with_its_roles(sort_model):
    assert viz.used_heads(sort_model, 1) == [0]
    assert viz.used_heads(sort_model, 5) == []
    roles = viz.head_roles(sort_model, 1, 0)
    assert roles["writes"] == SORT.label == sort_model.spec.output.label
    # Select(keys=target_pos, queries=indices): position i reads the key whose
    # target position is i.
    target_pos = SORT.children[0].keys  # the Select's keys: make_sort_unique's target_pos
    assert rasp.indices.label in roles["query"] and target_pos.label in roles["key"]
    with pytest.raises(ValueError, match="no compiled head 3"):
        viz.head_roles(sort_model, 1, 3)
    fig = viz.plot_attention(sort_model, TOKENS, layer=1)
    (ax,) = [ax for ax in fig.axes if ax.get_title()]
    assert ax.get_title().startswith(f"layer 1, head 0: writes {SORT.label}")
    assert ax.get_xlabel() == "key position (attended to)"
    weights = ax.images[0].get_array()
    # sort_unique: the query at the position of the k-th smallest key reads it.
    assert weights.shape == (4, 4)
    assert weights[1, 2] == pytest.approx(1.0, abs=1e-3)  # output 1 reads token 1 (pos 2)
    assert weights[2, 3] == pytest.approx(1.0, abs=1e-3)  # output 2 reads token 2 (pos 3)
    matplotlib.pyplot.close(fig)


def test_layer_without_used_heads_gives_no_figure():
    program = lib.make_frac_prevs(rasp.tokens == "x")
    model = compiling.compile_rasp_to_model(program, {"x", "y"}, 2)
    assert viz.used_heads(model, 0) == []
    assert viz.plot_attention(model, ["compiler_bos", "x"], layer=0) is None


def test_circuit_picture_has_a_box_per_node_and_labelled_edges(sort_model):
    from tracr.circuits import circuit

    c = circuit(sort_model)
    fig = viz.plot_circuit(c)
    (ax,) = fig.axes
    texts = [t.get_text() for t in ax.texts]
    assert sum(t.startswith("head ") for t in texts) == len(list(sort_model.spec.heads()))
    assert any(t.startswith("embed") for t in texts) and "unembed" in texts
    lines = {line for t in texts for line in t.split("\n")}
    for e in c.edges:  # each edge's label names the expressions it carries
        label = ", ".join(e.labels)
        assert label in lines or f"{e.slot}: {label}" in lines
    arrows = [t for t in ax.texts if type(t).__name__ == "Annotation"]
    assert len(arrows) == len({(e.parent, e.child) for e in c.edges})  # one per pair
    matplotlib.pyplot.close(fig)


def test_importing_viz_does_not_import_matplotlib():
    code = "import sys, tracr.viz, tracr.cli; print('matplotlib' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
