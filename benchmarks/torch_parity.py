"""Parity of the torch exports with the JAX model, for every library program.

For each program of `tracr.compiler.library_cases` at `--max-seq-len` (3),
on every input up to that length (one padded batch, PAD masked), prints:

- `inputs`: how many inputs were run;
- `module`, `lens`: inputs where the plain torch module / the TransformerLens
  model decode differently from the JAX model (`apply`), and the largest
  absolute difference of any residual (after any sublayer, real positions);
- `bf16 cert`: whether `certificate.certify(..., dtype=bfloat16)` says
  bfloat16 is exact, and `bf16 ok`: whether both torch models in bfloat16
  decode the evaluator's value at every position it defines.

Run: `python benchmarks/torch_parity.py [--max-seq-len N]` (needs the `torch` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tracr.compiler import certificate, compiling, equivalence  # noqa: E402
from tracr.compiler.library_cases import LIBRARY_CASES  # noqa: E402
from tracr.export import to_torch_module, to_transformer_lens_model  # noqa: E402
from tracr.rasp import causal_eval, rasp  # noqa: E402


def _residual_error(reference, ours, real) -> float:
    return max(float(np.abs(a[real] - b[real]).max()) for a, b in zip(reference, ours))


def _bf16_ok(model, program, case, inputs, batch) -> bool:
    evaluate = causal_eval.evaluate if case.supports_causal else rasp.evaluate
    numerical = not model.spec.output.categorical
    for exported in (to_torch_module, to_transformer_lens_model):
        decoded = exported(model, dtype=torch.bfloat16).decode_batch(batch)
        for x, row in zip(inputs, decoded):
            for expected, value in zip(evaluate(program, list(x)), row[1:]):
                if expected is not None and not equivalence._values_equal(
                    expected, value, numerical
                ):
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seq-len", type=int, default=3)
    n = parser.parse_args().max_seq_len
    print(f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}, max_seq_len {n}")
    print(
        f"{'program':18} {'inputs':>6} {'module':>16} {'lens':>16} {'bf16 cert':>9} {'bf16 ok':>7}"
    )
    start = time.time()
    for case in LIBRARY_CASES:
        program = case.program(n)
        model = compiling.compile_rasp_to_model(
            program, set(case.vocab), n, causal=case.supports_causal
        )
        inputs = list(equivalence.all_inputs(case.vocab, n))
        batch = [[model.input_encoder.bos_token, *x] for x in inputs]
        module = to_torch_module(model)
        ids, _ = module.codec.encode_batch(batch)
        with jax.disable_jit():
            out = model.forward(model.params, jnp.asarray(ids, dtype=jnp.int32))
        reference = [np.asarray(r) for r in out.transformer_output.residuals]
        real = ids != model.spec.input.pad_id
        want = [model.apply(x).decoded for x in batch]
        cells = []
        residuals = []
        with torch.no_grad():
            module(torch.as_tensor(ids), residuals=residuals)
        cells.append((module.decode_batch(batch), [r.numpy() for r in residuals]))
        lens = to_transformer_lens_model(model)
        with torch.no_grad():
            _, cache = lens.model.run_with_cache(
                torch.as_tensor(ids), attention_mask=torch.as_tensor(real).long()
            )
        lens_res = []
        for layer in range(len(module.layers)):
            lens_res.append(cache[f"blocks.{layer}.hook_resid_mid"].numpy())
            lens_res.append(cache[f"blocks.{layer}.hook_resid_post"].numpy())
        cells.append((lens.decode_batch(batch), lens_res))
        shown = [
            f"{sum(a != b for a, b in zip(d, want))} wrong "
            f"{_residual_error(reference, r, real):.1e}"
            for d, r in cells
        ]
        cert = certificate.certify(model, program, dtype=jnp.bfloat16, intermediates=False)
        ok = _bf16_ok(model, program, case, inputs, batch) if cert.exact else "-"
        print(
            f"{case.name:18} {len(inputs):>6} {shown[0]:>16} {shown[1]:>16} "
            f"{str(cert.exact):>9} {str(ok):>7}"
        )
    print(f"{time.time() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
