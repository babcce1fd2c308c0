"""Running a compiled model on many token sequences at once.

`BatchRunner` turns ragged lists of tokens into a few jit-compiled calls:

1. encode every sequence (one dict lookup per token, checks as in `apply`);
2. pad to a bucketed length with the PAD token, which attention masks out, so
   padding never changes a real position's output;
3. cut the batch into chunks of a bucketed size (a power of two, at most
   `max_batch`), so that only a few shapes are ever compiled;
4. with more than one device, place each chunk on a `Mesh` over the batch
   axis (`NamedSharding`), weights replicated: every device runs its slice;
5. decode every output position and trim each sequence to its length.

The forward function is any pure `fn(weights, token_ids [B, T]) -> [B, T]`,
normally `tracr.transformer.fast.decode` on lean weights::

    runner = BatchRunner(fast.decode, lean, input_encoder, output_encoder)
    runner([["BOS", "a", "b"], ["BOS", "c"]])   # [["BOS", x, y], ["BOS", z]]

Nothing here is specific to a backend: the same code runs on CPU, GPU and TPU.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tracr.transformer import encoder as encoder_lib

ForwardFn = Callable[[Any, jax.Array], jax.Array]

# The largest batch compiled by default: big enough to fill a GPU, small
# enough that a chunk of a large compiled program fits in memory.
DEFAULT_MAX_BATCH = 8192
# On CPU a compiled call loops (`lax.map`, inside the one compiled call) over
# micro-batches whose widest activation takes about CPU_MICRO_BATCH_BYTES:
# a whole 8192-batch spills out of the caches and runs at memory speed, 2-5x
# slower per sequence. Accelerators take the whole batch at once.
CPU_MICRO_BATCH_BYTES = 2 << 20
CPU_MICRO_BATCH_RANGE = (16, 512)


BATCH_AXIS = "batch"


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A one-axis `Mesh` over `BATCH_AXIS`: batches split, weights replicated.

    Args:
      devices: the devices to use (default: all local devices).

    Raises:
      ValueError: devices is empty.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ValueError("devices is empty: pass at least one jax device.")
    return Mesh(np.array(devices), (BATCH_AXIS,))


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def length_buckets(max_len: int) -> Tuple[int, ...]:
    """Padded lengths used: powers of two below `max_len`, then `max_len` itself."""
    buckets = [1 << i for i in range(max(1, max_len).bit_length()) if (1 << i) < max_len]
    return tuple(buckets + [max_len])


class BatchRunner:
    """Encodes, pads, shards, runs and decodes batches of token sequences.

    Args:
      forward: pure `fn(weights, token_ids [B, T]) -> outputs [B, T]` (output
        ids for categorical programs, values for numerical ones); it must
        mask PAD keys out of attention.
      weights: the pytree passed to `forward`.
      input_encoder: the model's categorical input encoder (BOS and PAD set).
      output_encoder: decodes output ids (categorical) or passes values.
      max_len: the longest sequence the model takes, BOS included.
      max_batch: the largest batch compiled; bigger batches run in chunks.
      devices: devices to shard the batch over (default: all local devices;
        sharding is used when there are two or more).
    """

    def __init__(
        self,
        forward: ForwardFn,
        weights: Any,
        input_encoder: encoder_lib.CategoricalEncoder,
        output_encoder: Optional[encoder_lib.Encoder],
        max_len: int,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        devices: Optional[Sequence[jax.Device]] = None,
        micro_batch: Optional[int] = None,
    ):
        if not isinstance(input_encoder, encoder_lib.CategoricalEncoder):
            raise TypeError(
                f"input_encoder must be a CategoricalEncoder, got "
                f"{type(input_encoder).__name__}; compiled models have one."
            )
        if input_encoder.pad_encoding is None or input_encoder.bos_encoding is None:
            raise ValueError(
                "input_encoder needs both a BOS and a PAD token to run batches "
                f"(got bos={input_encoder.bos_token!r}, pad={input_encoder.pad_token!r})."
            )
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}.")
        if micro_batch is not None and micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0 (0: off, None: auto), got {micro_batch}.")
        self.input_encoder = input_encoder
        self.output_encoder = output_encoder
        self.max_len = int(max_len)
        self.buckets = length_buckets(self.max_len)
        self.devices = list(devices) if devices is not None else jax.local_devices()
        if not self.devices:
            raise ValueError("devices is empty: pass at least one jax device.")
        self.num_devices = len(self.devices)
        self.micro_batch = micro_batch
        forward = _micro_batched(forward, self._micro_batch_size)
        # Chunks are a power of two and a multiple of the device count.
        self.max_batch = max(_pow2_at_least(max_batch), self._round_batch(1))
        self._pad_id = input_encoder.pad_encoding
        self._bos_id = input_encoder.bos_encoding
        self._token_ids: Dict[Any, int] = dict(input_encoder.encoding_map)
        # Python's 1 == True: where a token could match across bool and number,
        # batches holding both kinds take the encoder's own type-aware check.
        self._vocab_bools = any(isinstance(v, bool) for v in self._token_ids)
        self._vocab_01 = any(
            _is_number(v) and not isinstance(v, bool) and v in (0, 1) for v in self._token_ids
        )
        if isinstance(output_encoder, encoder_lib.CategoricalEncoder):
            values = [output_encoder.decoding_map[i] for i in range(output_encoder.vocab_size)]
            self._output_values: Optional[np.ndarray] = np.empty(len(values), dtype=object)
            self._output_values[:] = values
        else:
            self._output_values = None

        if self.num_devices > 1:
            mesh = make_mesh(self.devices)
            self._in_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS, None))
            replicated = NamedSharding(mesh, PartitionSpec())
            self.weights = jax.device_put(weights, replicated)
            self._forward = jax.jit(
                forward,
                in_shardings=(replicated, self._in_sharding),
                out_shardings=self._in_sharding,
            )
        else:
            self._in_sharding = None
            self.weights = jax.device_put(weights, self.devices[0])
            self._forward = jax.jit(forward)

    # -- shapes ------------------------------------------------------------

    def _micro_batch_size(self, seq_len: int, itemsize: int) -> int:
        """Rows per lax.map step (over all devices) for padded length `seq_len`."""
        if self.micro_batch is not None:
            size = self.micro_batch
        elif self.devices[0].platform != "cpu":
            size = 0
        else:
            width = getattr(self.weights, "activation_width", None)
            per_sequence = itemsize * (width(seq_len) if width else 64 * seq_len)
            size = max(1, CPU_MICRO_BATCH_BYTES // per_sequence)
            size = 1 << (size.bit_length() - 1)  # a power of two, at most the budget
            size = min(max(size, CPU_MICRO_BATCH_RANGE[0]), CPU_MICRO_BATCH_RANGE[1])
        return size * self.num_devices

    def _round_batch(self, n: int) -> int:
        """The compiled batch size for n sequences: a power of two, a multiple
        of the device count."""
        b = _pow2_at_least(n)
        return ((b + self.num_devices - 1) // self.num_devices) * self.num_devices

    def bucket_length(self, length: int) -> int:
        """The padded length for sequences of at most `length` tokens."""
        for b in self.buckets:
            if length <= b:
                return b
        raise ValueError(
            f"A sequence has {length} tokens (BOS included) but the model takes at most "
            f"{self.max_len}; shorten it or compile with a larger max_seq_len."
        )

    # -- encoding ----------------------------------------------------------

    def encode(self, batch: Sequence[Sequence[Any]]) -> Tuple[np.ndarray, np.ndarray]:
        """Token lists -> (flat ids of all tokens in order, length of each list).

        Raises:
          ValueError/TypeError: as `input_encoder.encode` for the first bad
            sequence (missing BOS, unknown token, too long, not a list).
        """
        if isinstance(batch, (str, bytes)) or not hasattr(batch, "__len__"):
            raise TypeError(
                f"Expected a list of token lists, got {type(batch).__name__}: {batch!r}."
            )
        lengths = np.fromiter((len(s) for s in batch), dtype=np.int64, count=len(batch))
        if len(batch) == 0:
            return np.zeros(0, dtype=np.int32), lengths
        if self._may_confuse_bools(batch):
            flat = np.fromiter(
                itertools.chain.from_iterable(self.input_encoder.encode(s) for s in batch),
                dtype=np.int32,
                count=int(lengths.sum()),
            )
            return flat, lengths
        try:
            flat = np.fromiter(
                map(self._token_ids.__getitem__, itertools.chain.from_iterable(batch)),
                dtype=np.int32,
                count=int(lengths.sum()),
            )
        except (KeyError, TypeError):
            flat = None
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        bad = (
            flat is None
            or np.any(lengths == 0)
            or np.any(lengths > self.max_len)
            or np.any(flat[np.minimum(starts, max(len(flat) - 1, 0))] != self._bos_id)
        )
        if bad:
            for s in batch:  # the encoder raises the precise error
                self.input_encoder.encode(s)
            raise AssertionError("a bad sequence passed the encoder's checks")  # unreachable
        return flat, lengths

    def _may_confuse_bools(self, batch: Sequence[Sequence[Any]]) -> bool:
        if not (self._vocab_bools or self._vocab_01):
            return False
        types = set(map(type, itertools.chain.from_iterable(batch)))
        has_bool = bool in types
        has_number = any(t is not bool and issubclass(t, (int, float, np.number)) for t in types)
        return (has_bool and self._vocab_01) or (has_number and self._vocab_bools)

    # -- running -----------------------------------------------------------

    def run_ids(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Runs encoded sequences (flat ids, lengths, as from `encode`).

        Returns:
          The outputs (ids or values) of every real position, flat, in the
          order of `flat`.
        """
        n = len(lengths)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        pending = []
        for start in range(0, n, self.max_batch):
            chunk_lengths = lengths[start : start + self.max_batch]
            padded_len = self.bucket_length(int(chunk_lengths.max()))
            batch = self._round_batch(len(chunk_lengths))
            ids = np.full((batch, padded_len), self._pad_id, dtype=np.int32)
            real = np.arange(padded_len)[None, :] < chunk_lengths[:, None]
            ids[: len(chunk_lengths)][real] = flat[offsets[start] : offsets[start + len(real)]]
            pending.append((self.run_padded(ids), real))
        # Every chunk was dispatched before the first wait.
        outputs = [np.asarray(out)[: len(real)][real] for out, real in pending]
        return np.concatenate(outputs) if outputs else np.zeros(0, dtype=np.int32)

    def run_padded(self, ids: Any) -> jax.Array:
        """One compiled call on padded ids `[B, T]` (B a multiple of the device
        count); returns the device array of outputs without waiting for it."""
        if len(ids) % self.num_devices:
            raise ValueError(
                f"ids has {len(ids)} rows; sharding over {self.num_devices} devices needs a "
                f"multiple of {self.num_devices}. Pad the batch (run_ids does)."
            )
        return self._forward(self.weights, self.place(ids))

    def place(self, ids: Any) -> jax.Array:
        """Puts padded ids `[B, T]` on the devices, split over the batch axis."""
        if self._in_sharding is not None:
            return jax.device_put(ids, self._in_sharding)
        return jax.device_put(jnp.asarray(ids, dtype=jnp.int32), self.devices[0])

    def decode(self, outputs: np.ndarray, lengths: np.ndarray) -> List[List[Any]]:
        """Flat outputs (from `run_ids`) -> one decoded list per sequence, BOS first."""
        if self._output_values is not None:
            values = self._output_values[outputs].tolist()
        else:
            values = outputs.tolist()
        ends = np.cumsum(lengths).tolist()
        bos = [self.input_encoder.bos_token]
        return [bos + values[end - n + 1 : end] for end, n in zip(ends, lengths.tolist())]

    def __call__(self, batch: Sequence[Sequence[Any]]) -> List[List[Any]]:
        """Decoded outputs of every sequence in `batch` (each starts with BOS)."""
        flat, lengths = self.encode(batch)
        return self.decode(self.run_ids(flat, lengths), lengths)


def _micro_batched(forward: ForwardFn, micro_batch: Callable[[int, int], int]) -> ForwardFn:
    """`forward` run on `micro_batch(T, itemsize)` rows at a time (lax.map).

    Rows are dealt out round-robin (row r goes to step r % steps), so that a
    batch split over devices stays split the same way in every step.
    """

    def run(weights: Any, token_ids: jax.Array) -> jax.Array:
        batch, seq_len = token_ids.shape
        leaves = jax.tree_util.tree_leaves(weights)
        itemsize = max([np.dtype(x.dtype).itemsize for x in leaves] + [4])
        size = micro_batch(seq_len, itemsize)
        if not size or batch <= size or batch % size:
            return forward(weights, token_ids)
        steps = batch // size
        chunks = token_ids.reshape(size, steps, seq_len).transpose(1, 0, 2)
        out = jax.lax.map(lambda ids: forward(weights, ids), chunks)  # [steps, micro, T]
        return out.transpose(1, 0, 2).reshape(batch, seq_len)

    return run


def _is_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float, np.number))
