"""Run by test_transformer_lens_3.py in a subprocess whose PYTHONPATH puts a TransformerLens
3.x (unpacked wheel) first: our HookedTransformer path against `apply`, every library case."""

import sys

import jax
import transformer_lens

from tracr.compiler import compiling, equivalence
from tracr.compiler.library_cases import LIBRARY_CASES
from tracr.export import lens_model, to_transformer_lens_model

MAX_SEQ_LEN = 3


def main() -> int:
    assert lens_model.has_hooked_transformer(), transformer_lens.__file__
    failed = []
    for case in LIBRARY_CASES:
        program = case.program(MAX_SEQ_LEN)
        model = compiling.compile_rasp_to_model(
            program, set(case.vocab), MAX_SEQ_LEN, causal=case.supports_causal
        )
        lens = to_transformer_lens_model(model)
        assert type(lens.model).__name__ == "HookedTransformer"
        bos = model.input_encoder.bos_token
        inputs = [[bos, *x] for x in equivalence.all_inputs(case.vocab, MAX_SEQ_LEN)]
        with jax.disable_jit():
            outs = [model.apply(x) for x in inputs]
        # The argmax decode, as test_torch_parity compares (apply says None where no output
        # direction is reached; the TransformerLens codec takes the argmax there).
        decode = model.output_encoder.decode
        want = [[bos, *decode(o.unembedded[0].tolist())[1:]] for o in outs]
        if lens.decode_batch(inputs) != want:
            failed.append(case.name)
    _, cache = lens.model.run_with_cache(lens.token_ids(inputs[-1]))
    for name in ("attn.hook_result", "hook_q_input", "hook_k_input", "hook_v_input"):
        assert f"blocks.0.{name}" in cache, name
    print(
        f"TransformerLens {transformer_lens.__file__}: {len(LIBRARY_CASES)} cases, failed {failed}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
