"""Running a compiled model on many token sequences at once.

`BatchRunner` turns ragged lists of tokens into a few jit-compiled calls:

1. cut the batch into pipeline chunks and encode each
   (`tracr.transformer.inputs.Codec`: one array, vectorised checks as in
   `apply`);
2. pad each chunk to a bucketed length with the PAD token, which attention
   masks out, so padding never changes a real position's output;
3. round each chunk to a bucketed size (a power of two, at most
   `max_batch`), so that only a few shapes are ever compiled;
4. with more than one device, place each chunk on a `Mesh` (`make_mesh`)
   over the batch axis (`NamedSharding`), weights replicated (or split over
   the mesh's model axis, `tracr.transformer.sharding`);
5. dispatch each chunk before decoding the one before it (JAX dispatch is
   asynchronous), so encoding and decoding overlap device work;
6. decode every output position with one lookup-table index per chunk.

The forward function is any pure `fn(weights, token_ids [B, T]) -> [B, T]`,
normally `tracr.transformer.fast.outputs` on lean weights::

    runner = BatchRunner(fast.outputs, lean, codec=inputs.Codec.from_spec(spec))
    runner([["BOS", "a", "b"], ["BOS", "c"]])   # [["BOS", x, y], ["BOS", z]]

Nothing here is specific to a backend: the same code runs on CPU, GPU and TPU.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tracr.transformer import encoder as encoder_lib
from tracr.transformer import inputs

ForwardFn = Callable[[Any, jax.Array], jax.Array]

# The largest batch compiled by default: big enough to fill a GPU, small
# enough that a chunk of a large compiled program fits in memory.
DEFAULT_MAX_BATCH = 8192
# Batches are cut into pipeline chunks of at least this many sequences (and at
# most PIPELINE_DEPTH chunks), so that encoding and decoding one chunk overlap
# another chunk's device work. Smaller chunks overlap more but cost a dispatch
# each, and XLA on CPU runs small computations inline, without overlap: on the
# 2-core CPU, 512 gave the fastest apply_batch at B=1024 (benchmarks/throughput.py).
PIPELINE_MIN_CHUNK = 512
PIPELINE_DEPTH = 4
# On CPU a compiled call loops (`lax.map`, inside the one compiled call) over
# micro-batches whose widest activation takes about CPU_MICRO_BATCH_BYTES:
# a whole 8192-batch spills out of the caches and runs at memory speed, 2-5x
# slower per sequence. Accelerators take the whole batch at once. The byte
# budget alone sets the size: a cap of 512 rows made the smallest programs
# (hist, count, length, pair_balance at n=10) 10-21% slower at B=8192 than
# the budget's 1024-2048 rows, in interleaved runs on the 2-core CPU.
CPU_MICRO_BATCH_BYTES = 2 << 20
CPU_MICRO_BATCH_RANGE = (16, DEFAULT_MAX_BATCH)

BATCH_AXIS = "batch"
MODEL_AXIS = "model"


def make_mesh(model: int = 1, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A `Mesh` of `devices` (default: all local ones) with axes ("batch", "model").

    `model` devices hold one slice of the weights each (heads and MLP hidden
    units, `tracr.transformer.sharding`); the rest of the device count splits
    the batch.

    Raises:
      ValueError: `model` does not divide the number of devices.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ValueError("devices is empty: pass at least one jax device.")
    if model < 1 or len(devices) % model:
        raise ValueError(
            f"model={model} must be >= 1 and divide the number of devices ({len(devices)})."
        )
    grid = np.array(devices, dtype=object).reshape(len(devices) // model, model)
    return Mesh(grid, (BATCH_AXIS, MODEL_AXIS))


def check_max_batch(max_batch: Any) -> None:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}.")


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
        ids for categorical programs, `inputs.NO_VALUE` where there is none,
        values for numerical ones); it must mask PAD keys out of attention.
      weights: the pytree passed to `forward`.
      input_encoder, output_encoder: the model's encoders (used when no
        `codec` is given).
      max_len: the longest sequence the model takes, BOS included (default:
        `weights.max_len`, or the codec's).
      codec: the token codec (default: built from the encoders).
      max_batch: the largest batch compiled; bigger batches run in chunks.
      devices: devices to shard the batch over (default: all local devices;
        sharding is used when there are two or more).
      mesh: a `make_mesh` mesh instead of `devices`; weights are placed with
        `weight_sharding` (default: replicated).
      weight_sharding: a pytree of shardings matching `weights`.
      micro_batch: rows per `lax.map` step inside a call (0 off, None auto).
    """

    def __init__(
        self,
        forward: ForwardFn,
        weights: Any,
        input_encoder: Optional[encoder_lib.CategoricalEncoder] = None,
        output_encoder: Optional[encoder_lib.Encoder] = None,
        max_len: Optional[int] = None,
        *,
        codec: Optional[inputs.Codec] = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        devices: Optional[Sequence[jax.Device]] = None,
        mesh: Optional[Mesh] = None,
        weight_sharding: Any = None,
        micro_batch: Optional[int] = None,
    ):
        if max_len is None:
            max_len = getattr(weights, "max_len", None) or (codec.max_len if codec else None)
        if codec is None:
            if not isinstance(input_encoder, encoder_lib.CategoricalEncoder):
                raise TypeError(
                    f"input_encoder must be a CategoricalEncoder, got "
                    f"{type(input_encoder).__name__}; compiled models have one (or pass codec)."
                )
            if max_len is None:
                raise ValueError("max_len is needed without a codec or lean weights.")
            codec = inputs.Codec.from_encoders(input_encoder, output_encoder, max_len)
        if codec.pad_id is None:
            raise ValueError(
                "the model needs both a BOS and a PAD token to run batches "
                f"(got bos={codec.bos_token!r}, pad={codec.pad_token!r})."
            )
        check_max_batch(max_batch)
        if micro_batch is not None and micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0 (0: off, None: auto), got {micro_batch}.")
        self.codec = codec
        self.max_len = min(int(max_len), codec.max_len)
        self.buckets = length_buckets(self.max_len)
        if mesh is None:
            mesh = make_mesh(1, devices)
        self.mesh = mesh
        self.devices = list(mesh.devices.flat)
        self.num_devices = int(mesh.shape[BATCH_AXIS])  # the batch is split this many ways
        self.micro_batch = micro_batch
        forward = _micro_batched(forward, self._micro_batch_size)
        # Chunks are a power of two and a multiple of the batch-axis size.
        self.max_batch = max(_pow2_at_least(max_batch), self._round_batch(1))
        self._pad_id = codec.pad_id

        if len(self.devices) > 1:
            self._in_sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS, None))
            if weight_sharding is None:
                weight_sharding = NamedSharding(mesh, PartitionSpec())
            self.weights = jax.device_put(weights, weight_sharding)
            self._forward = jax.jit(forward, out_shardings=self._in_sharding)
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
        of the batch-axis size."""
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

    def chunk_size(self, n: int) -> int:
        """Sequences per pipeline chunk for a batch of n."""
        per_chunk = max(PIPELINE_MIN_CHUNK, -(-n // PIPELINE_DEPTH))
        return min(self.max_batch, _pow2_at_least(per_chunk))

    # -- encoding, running, decoding ------------------------------------------

    def encode(self, batch: Sequence[Sequence[Any]]) -> inputs.Encoded:
        """Token lists -> `inputs.Encoded` (ids `[B, T]` padded with PAD, lengths).

        Raises:
          ValueError/TypeError: as `apply` for the first bad sequence (missing
            BOS, BOS or PAD after position 0, unknown token, too long).
        """
        encoded = self.codec.encode(batch)
        if len(batch) and int(encoded.lengths.max()) > self.max_len:
            self.bucket_length(int(encoded.lengths.max()))  # raises
        return encoded

    def dispatch(self, encoded: inputs.Encoded) -> Tuple[jax.Array, int]:
        """Pads one chunk to its bucket and starts it; (device outputs, rows)."""
        n = len(encoded.lengths)
        padded_len = self.bucket_length(int(encoded.lengths.max()))
        shape = (self._round_batch(n), padded_len)
        if encoded.ids.shape == shape:  # already a compiled shape: no copy
            return self.run_padded(encoded.ids), n
        width = min(encoded.ids.shape[1], padded_len)  # columns past the longest are PAD
        ids = np.full(shape, self._pad_id, dtype=np.int32)
        ids[:n, :width] = encoded.ids[:, :width]
        return self.run_padded(ids), n

    def run_padded(self, ids: Any) -> jax.Array:
        """One compiled call on padded ids `[B, T]` (B a multiple of the batch-axis
        size); returns the device array of outputs without waiting for it."""
        if len(ids) % self.num_devices:
            raise ValueError(
                f"ids has {len(ids)} rows; sharding over {self.num_devices} devices needs a "
                f"multiple of {self.num_devices}. Pad the batch (dispatch does)."
            )
        if self._in_sharding is None and not isinstance(ids, jax.Array):
            # One device: the compiled call moves host ids itself, about 0.1 ms
            # per call cheaper on CPU than a separate device_put first.
            return self._forward(self.weights, np.asarray(ids, dtype=np.int32))
        return self._forward(self.weights, self.place(ids))

    def place(self, ids: Any) -> jax.Array:
        """Puts padded ids `[B, T]` on the devices, split over the batch axis
        (ids already there stay where they are, without a round trip to the host)."""
        if not isinstance(ids, jax.Array):
            ids = np.asarray(ids, dtype=np.int32)
        elif ids.dtype != np.int32:
            ids = ids.astype(np.int32)
        if self._in_sharding is not None:
            return jax.device_put(ids, self._in_sharding)
        return jax.device_put(ids, self.devices[0])

    def decode(self, outputs: Any, lengths: np.ndarray) -> List[List[Any]]:
        """Outputs `[B, T]` (from `run_padded`, rows past len(lengths) ignored) ->
        one decoded list per sequence, BOS first."""
        outputs = np.asarray(outputs)[: len(lengths)]
        return self.codec.decode(outputs, lengths)

    def __call__(self, batch: Sequence[Sequence[Any]]) -> List[List[Any]]:
        """Decoded outputs of every sequence in `batch` (each starts with BOS).

        A pipeline over chunks: chunk k is encoded and dispatched, then chunk
        k-1 is decoded while the device runs chunk k (dispatch is
        asynchronous), so host work overlaps device work.

        Raises:
          ValueError/TypeError: as `encode`, for the first bad sequence of the
            whole batch (earlier chunks may have run; nothing is changed).
        """
        inputs.check_batch(batch)
        size = self.chunk_size(len(batch))
        decoded: List[List[Any]] = []
        waiting: Optional[Tuple[jax.Array, np.ndarray]] = None
        for start in range(0, len(batch), size):
            try:
                chunk = self.encode(batch[start : start + size])
            except (TypeError, ValueError):
                if start:  # name the sequence by its index in the whole batch
                    self.encode(batch)
                raise
            running = (self.dispatch(chunk)[0], chunk.lengths)
            if waiting is not None:
                decoded.extend(self.decode(*waiting))
            waiting = running
        if waiting is not None:
            decoded.extend(self.decode(*waiting))
        return decoded


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
