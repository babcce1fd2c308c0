"""Learned compression: a short run keeps frac_prevs exact enough below d_exact."""

import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("optax")  # the `train` extra; the `test` extra installs it
pytest.importorskip("tqdm")

from tracr.compiler import compiling  # noqa: E402
from tracr.compiler.library_cases import CASES_BY_NAME  # noqa: E402
from tracr.compression import exact, learned, running  # noqa: E402

MAX_SEQ_LEN = 5


def test_short_learned_run_on_frac_prevs_reaches_99_percent_below_d_exact():
    case = CASES_BY_NAME["frac_prevs"]
    model = compiling.compile_rasp_to_model(case.program(MAX_SEQ_LEN), set(case.vocab), MAX_SEQ_LEN)
    residual_size = len(model.residual_labels)
    inputs, _ = exact.domain_inputs(model)
    train, held_out = learned.split_inputs(inputs, seed=0)
    d_exact = exact.exact_compression(model, train).d_exact
    d = d_exact - 1
    assert d < d_exact < residual_size  # 8 < 9 < 11

    trainer = learned.CompressionTrainer(model, batch_size=32)
    start = exact.exact_compression(model, train).truncated(d)
    before = trainer.evaluate(start, held_out)
    result = trainer.train(
        train, held_out, embedding_size=d, steps=1000, learning_rate=3e-3, seed=0, progress=False
    )
    assert result.w.shape == (d, residual_size)
    assert before.token_accuracy < 0.5  # dropping a direction breaks the model...
    assert result.report.token_accuracy >= 0.99  # ...and training repairs it
    assert result.report.num_positions == sum(len(x) for x in held_out)
    # frac_prevs outputs k/n for n <= 5: nearest-value decoding allows 1/40.
    assert result.report.numerical_tolerance == pytest.approx(1 / 40)
    assert result.report.layer_names == (
        "layer_0/attn",
        "layer_0/mlp",
        "layer_1/attn",
        "layer_1/mlp",
    )
    assert max(result.report.layer_errors) < max(before.layer_errors)
    assert result.losses.shape == (1000,) and result.losses[-50:].mean() < result.losses[0]

    # The trainer masks rows past d; run the real width-d model independently.
    small = running.CompressedModel(model, result.w)
    ids = jnp.asarray(running.encode_padded(model, held_out))
    real = np.asarray(ids)[:, 1:] != model.input_encoder.pad_encoding
    got = np.asarray(small.forward(small.params, ids).unembedded_output)[:, 1:][real]
    want = np.asarray(model.forward(model.params, ids).unembedded_output)[:, 1:][real]
    assert np.mean(np.abs(got - want) <= 1 / 40) >= 0.99


def test_training_config_and_split_check_their_arguments():
    with pytest.raises(ValueError, match="embedding_size must be an int >= 1"):
        learned.TrainingConfig(embedding_size=0)
    with pytest.raises(ValueError, match="init must be one of"):
        learned.TrainingConfig(embedding_size=3, init="zeros")
    with pytest.raises(ValueError, match="held_out_fraction"):
        learned.split_inputs([("a",), ("b",)], held_out_fraction=1.5)
    train, held_out = learned.split_inputs([(t,) for t in "abcdefgh"], 0.25, seed=1)
    assert len(train) == 6 and len(held_out) == 2 and not set(train) & set(held_out)
    assert learned.split_inputs([(t,) for t in "abcdefgh"], 0.25, seed=1) == (train, held_out)


def test_reported_accuracy_is_the_share_of_outputs_apply_gets_right():
    """A truncated exact basis leaves some hist outputs empty: apply decodes
    None there. The report once counted those right (argmax) and said 1.0
    where apply agreed on 93 of 102 positions."""
    from tracr.compiler import equivalence
    from tracr.compiler.library_cases import CASES_BY_NAME
    from tracr.compression import exact, running

    case = CASES_BY_NAME["hist"]
    model = compiling.compile_rasp_to_model(case.program(3), set(case.vocab), 3)
    basis = exact.exact_compression(model)
    xs = list(equivalence.all_inputs(case.vocab, 3))
    for d in (1, basis.w.shape[0] - 1, basis.w.shape[0]):
        w = basis.truncated(d)
        compressed = running.CompressedModel(model, w)
        agree = total = 0
        for x in xs:
            want = model.apply(["compiler_bos", *x]).decoded[1:]
            got = compressed.apply(["compiler_bos", *x]).decoded[1:]
            agree += sum(a == b for a, b in zip(want, got))
            total += len(want)
        report = learned.evaluate_compression(model, w, xs)
        assert report.num_positions == total
        assert report.token_accuracy == pytest.approx(agree / total)
    assert agree == total  # the full basis is exact
