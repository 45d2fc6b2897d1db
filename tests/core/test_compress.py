import numpy as np
import pytest

from fedvlm.core.compress import (
    codes_of,
    dequantize,
    dequantize_state,
    deserialize,
    nbytes,
    pack_nibbles,
    quantize,
    quantize_state,
    serialize,
    state_nbytes_quantized,
    unpack_nibbles,
)

KEY_A = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
KEY_B = "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_B.weight"


def _steps_per_element(q):
    return np.repeat(q.steps.astype(np.float64), q.block)[: q.size].reshape(q.shape)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_is_unbiased_and_within_one_step(bits):
    # prepare: 150 elements -> blocks of 64, 64 and a short one of 22
    rng = np.random.default_rng(bits)
    x = rng.normal(scale=1e-3, size=(10, 15)).astype(np.float32)
    draws = 2000
    # execute
    total = np.zeros(x.shape)
    worst = 0.0
    for _ in range(draws):
        q = quantize(x, bits, 64, rng)
        err = dequantize(q).astype(np.float64) - x
        total += err
        worst = max(worst, float(np.max(np.abs(err) / _steps_per_element(q))))
    # assert: per-element mean error ~ N(0, <= step/(2 sqrt(2000)) = 0.011 step); allow 0.1
    step = _steps_per_element(q)
    assert np.max(np.abs(total / draws) / step) < 0.1
    assert worst <= 1.0 + 1e-6


def test_quantize_hand_example():
    # prepare: one block [0, 0.5, 1] at 4 bits -> min 0, step 1/15, t = [0, 7.5, 15]
    x = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    # execute
    q = quantize(x, 4, 64, np.random.default_rng(0))
    codes = codes_of(q)
    # assert: end points are exact, the middle rounds to 7 or 8
    assert q.mins[0] == 0.0
    assert q.steps[0] == pytest.approx(1 / 15, rel=1e-7) and q.steps[0] >= np.float32(1 / 15)
    assert codes[0] == 0 and codes[2] == 15 and codes[1] in (7, 8)
    assert dequantize(q)[0] == 0.0


def test_middle_value_rounds_up_half_the_time():
    # t = 7.5 -> code 8 with probability 0.5
    rng = np.random.default_rng(1)
    x = np.array([0.0, 0.5, 1.0])
    ups = sum(int(codes_of(quantize(x, 4, 64, rng))[1] == 8) for _ in range(2000))
    assert 900 < ups < 1100


def test_constant_block_is_exact():
    x = np.full(70, 0.25, dtype=np.float32)
    q = quantize(x, 4, 64, np.random.default_rng(0))
    np.testing.assert_array_equal(dequantize(q), x)


def test_four_bit_packing_round_trips_codes():
    # prepare: hand case, low nibble first: [1, 2, 15] -> 0x21, 0x0F
    np.testing.assert_array_equal(pack_nibbles(np.array([1, 2, 15])), [0x21, 0x0F])
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 16, size=101).astype(np.uint8)
    # execute
    packed = pack_nibbles(codes)
    # assert
    assert packed.dtype == np.uint8 and packed.size == 51
    np.testing.assert_array_equal(unpack_nibbles(packed, 101), codes)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("shape", [(), (0,), (7,), (64,), (3, 50), (4, 8, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_nbytes_is_serialized_length_and_payload_round_trips(bits, shape, dtype):
    # prepare
    rng = np.random.default_rng(3)
    x = rng.normal(size=shape).astype(dtype)
    q = quantize(x, bits, 64, rng)
    # execute
    data = serialize(q)
    back = deserialize(data)
    # assert
    assert len(data) == nbytes(q)
    assert back.shape == q.shape and back.bits == bits and back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dequantize(back), dequantize(q))
    assert dequantize(back).dtype == np.dtype(dtype)


def test_four_bit_payload_size_hand_computed():
    # 4096 float32 (16384 bytes) at 4 bits, block 64: header 8 + shape 8 + 64 blocks x
    # (min + step) 8 bytes + 2048 code bytes = 2576 bytes
    q = quantize(np.ones(4096, dtype=np.float32), 4, 64, np.random.default_rng(0))
    assert nbytes(q) == 8 + 8 + 64 * 8 + 2048 == len(serialize(q))
    q8 = quantize(np.ones(4096, dtype=np.float32), 8, 64, np.random.default_rng(0))
    assert nbytes(q8) == 8 + 8 + 64 * 8 + 4096


def test_state_round_trip_keeps_keys_shapes_dtypes():
    # prepare
    rng = np.random.default_rng(4)
    state = {
        KEY_A: rng.normal(size=(8, 32)).astype(np.float32),
        KEY_B: rng.normal(size=(16, 8)).astype(np.float32),
    }
    # execute
    qstate = quantize_state(state, 8, 64, rng)
    back = dequantize_state(qstate)
    # assert
    assert list(back) == list(state)
    for k, a in state.items():
        assert back[k].shape == a.shape and back[k].dtype == a.dtype
        assert np.all(np.abs(back[k] - a) <= _steps_per_element(qstate[k]) * (1 + 1e-6))
    assert state_nbytes_quantized(qstate) == sum(len(serialize(q)) for q in qstate.values())


@pytest.mark.parametrize(
    "x,bits,match",
    [
        (np.zeros(4, dtype=np.float32), 3, "bits"),
        (np.array([1.0, np.nan]), 8, "NaN"),
        (np.zeros(4, dtype=np.int32), 8, "dtype"),
    ],
)
def test_bad_inputs_rejected(x, bits, match):
    with pytest.raises(ValueError, match=match):
        quantize(x, bits, 64, np.random.default_rng(0))
