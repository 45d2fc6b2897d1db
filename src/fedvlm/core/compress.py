"""Stochastic b-bit quantization of update arrays with per-block scales.

Scheme (asymmetric, min/step per block): the array is flattened and cut into blocks of
``block`` elements (the last one may be shorter). Per block ``lo = min`` and ``hi = max``
are stored as float32 ``min`` (rounded down) and ``step >= (hi - min) / (2^b - 1)``
(rounded up), so every element lies in ``[min, min + (2^b - 1) step]``. An element with
``t = (x - min) / step`` gets code ``floor(t + u)``, ``u ~ U[0, 1)``: ``E[code] = t``, so
``E[dequantize(quantize(x))] = x`` (unbiased, up to the final cast to the input dtype),
and ``|dequantized - x| < step``. Asymmetric rather than symmetric because LoRA deltas
of a block are often one-signed; it costs one more float32 per block.

Wire format of ``serialize`` (little-endian), which ``nbytes`` counts exactly:
``bits u8 | dtype code u8 | ndim u8 | 0 u8 | block u32 | ndim x u64 shape |``
``n_blocks x f32 min | n_blocks x f32 step | codes``; codes are one byte per element at 8
bits and two per byte at 4 bits (element 2i in the low nibble, 2i+1 in the high one).
"""

import struct
from dataclasses import dataclass

import numpy as np

from fedvlm.core.types import AdapterState

_HEADER = struct.Struct("<BBBBI")
_DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float16), 2: np.dtype(np.float64)}
_DTYPE_CODES = {dt: code for code, dt in _DTYPES.items()}


@dataclass(frozen=True)
class QuantizedArray:
    """One quantized array: ``codes`` (uint8, packed at 4 bits), per-block float32
    ``mins`` and ``steps``, and what is needed to rebuild it (shape, dtype, bits, block)."""

    codes: np.ndarray
    mins: np.ndarray
    steps: np.ndarray
    shape: tuple[int, ...]
    dtype: np.dtype
    bits: int
    block: int

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """Pack 4-bit codes (uint8 values < 16) two per byte; an odd tail is padded with 0."""
    c = np.asarray(codes, dtype=np.uint8).ravel()
    if c.size % 2:
        c = np.append(c, np.uint8(0))
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, n: int) -> np.ndarray:
    """Inverse of ``pack_nibbles``: the first ``n`` codes."""
    out = np.empty(2 * packed.size, dtype=np.uint8)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    return out[:n]


def _f32_down(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _f32_up(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def quantize(x: np.ndarray, bits: int, block: int, rng: np.random.Generator) -> QuantizedArray:
    """Stochastically quantize ``x`` (float16/32/64, finite) to ``bits`` in {4, 8} with one
    min/step pair per ``block`` consecutive elements of the flattened array."""
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if not 1 <= block < 2**32:
        raise ValueError(f"block must be a positive 32-bit int, got {block}")
    x = np.asarray(x)
    if x.dtype not in _DTYPE_CODES:
        raise ValueError(f"cannot quantize dtype {x.dtype}; expected float16/32/64")
    flat = x.astype(np.float64).ravel()
    if not np.all(np.isfinite(flat)):
        raise ValueError("cannot quantize NaN or Inf")
    n, levels = flat.size, 2**bits - 1
    n_blocks = -(-n // block)
    if n:  # pad with the last value, which changes no block's min or max
        flat = np.pad(flat, (0, n_blocks * block - n), mode="edge")
    blocks = flat.reshape(n_blocks, block)
    mins = _f32_down(blocks.min(axis=1, initial=np.inf))
    steps = _f32_up((blocks.max(axis=1, initial=-np.inf) - mins) / levels)
    t = (blocks - mins[:, None]) / np.where(steps > 0, steps, 1.0)[:, None]
    codes = np.clip(np.floor(t + rng.random(t.shape)), 0, levels).astype(np.uint8).ravel()[:n]
    return QuantizedArray(
        codes=pack_nibbles(codes) if bits == 4 else codes,
        mins=mins.astype(np.float32),
        steps=steps.astype(np.float32),
        shape=tuple(x.shape),
        dtype=x.dtype,
        bits=bits,
        block=block,
    )


def codes_of(q: QuantizedArray) -> np.ndarray:
    """One uint8 code per element (unpacked at 4 bits)."""
    return unpack_nibbles(q.codes, q.size) if q.bits == 4 else q.codes


def dequantize(q: QuantizedArray) -> np.ndarray:
    """``min + code * step`` per element, reshaped and cast to the original dtype."""
    idx = np.arange(q.size) // q.block
    vals = q.mins[idx].astype(np.float64) + codes_of(q) * q.steps[idx].astype(np.float64)
    return vals.reshape(q.shape).astype(q.dtype)


def nbytes(q: QuantizedArray) -> int:
    """Exact length of ``serialize(q)``: header + shape + mins + steps + codes."""
    return _HEADER.size + 8 * len(q.shape) + 4 * (q.mins.size + q.steps.size) + q.codes.size


def serialize(q: QuantizedArray) -> bytes:
    """The wire bytes of ``q`` (format in the module docstring)."""
    header = _HEADER.pack(q.bits, _DTYPE_CODES[np.dtype(q.dtype)], len(q.shape), 0, q.block)
    return b"".join(
        [
            header,
            np.asarray(q.shape, dtype="<u8").tobytes(),
            q.mins.astype("<f4").tobytes(),
            q.steps.astype("<f4").tobytes(),
            q.codes.tobytes(),
        ]
    )


def deserialize(data: bytes) -> QuantizedArray:
    """Inverse of ``serialize``."""
    bits, dtype_code, ndim, _, block = _HEADER.unpack_from(data, 0)
    pos = _HEADER.size
    shape = tuple(int(d) for d in np.frombuffer(data, dtype="<u8", count=ndim, offset=pos))
    pos += 8 * ndim
    n = int(np.prod(shape, dtype=np.int64))
    n_blocks = -(-n // block)
    mins = np.frombuffer(data, dtype="<f4", count=n_blocks, offset=pos).astype(np.float32)
    steps = np.frombuffer(data, dtype="<f4", count=n_blocks, offset=pos + 4 * n_blocks)
    pos += 8 * n_blocks
    n_codes = (n + 1) // 2 if bits == 4 else n
    codes = np.frombuffer(data, dtype=np.uint8, count=n_codes, offset=pos).copy()
    if pos + n_codes != len(data):
        raise ValueError(f"payload is {len(data)} bytes, header implies {pos + n_codes}")
    return QuantizedArray(
        codes, mins, steps.astype(np.float32), shape, _DTYPES[dtype_code], bits, block
    )


def quantize_state(
    state: AdapterState, bits: int, block: int, rng: np.random.Generator
) -> dict[str, QuantizedArray]:
    """``quantize`` every array of ``state`` (in key order, from one ``rng``)."""
    return {k: quantize(a, bits, block, rng) for k, a in state.items()}


def dequantize_state(qstate: dict[str, QuantizedArray]) -> AdapterState:
    """``dequantize`` every array."""
    return {k: dequantize(q) for k, q in qstate.items()}


def state_nbytes_quantized(qstate: dict[str, QuantizedArray]) -> int:
    """Sum of ``nbytes`` over the arrays: the array payload, names not counted (as in
    ``types.state_nbytes``)."""
    return sum(nbytes(q) for q in qstate.values())


def compress_delta(
    state: AdapterState, reference: AdapterState, bits: int, block: int, rng: np.random.Generator
) -> tuple[AdapterState, int]:
    """Send ``state`` as a quantized delta from ``reference`` (which the receiver has).

    Returns what the receiver reconstructs, ``reference + dequantize(delta)``, after a real
    serialize / deserialize round trip, and the exact number of bytes serialized. The
    quantization is stochastic and unbiased, so the server's mean stays unbiased.
    """
    received, total = {}, 0
    for name, value in state.items():
        delta = value.astype(np.float64) - reference[name]
        wire = serialize(quantize(delta.astype(value.dtype), bits, block, rng))
        total += len(wire)
        received[name] = (reference[name] + dequantize(deserialize(wire))).astype(value.dtype)
    return received, total
