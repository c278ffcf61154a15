"""Compression codecs: round trips, error bounds, exact sizes, unbiasedness, error feedback,
state round trips, malformed payloads and registry errors."""

import math

import numpy as np
import pytest

from feddm_hpc.compression import (
    HEADER_SIZE,
    Compressor,
    decode_payload,
    lossless,
    make_compressor,
    payload_bytes_float32,
    zstd_available,
)
from feddm_hpc.compression import quantize as q
from feddm_hpc.compression.floatcast import from_bf16, to_bf16
from feddm_hpc.compression.topk import IDX_BITMAP, IDX_DELTA16, IDX_DELTA32, topk_indices
from feddm_hpc.config import CompressionConfig
from feddm_hpc.errors import ConfigError

N = 10001
CHUNK = 1024  # every test's chunk size, passed explicitly (CompressionConfig's default is 4096)


def update(n=N, seed=0, scale=1e-3):
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def comp(**cfg):
    return make_compressor(CompressionConfig(**dict({"chunk_size": CHUNK}, **cfg)))


def roundtrip(c: Compressor, x, seed=1, cid=0):
    payload = c.encode(x, cid, np.random.default_rng(seed))
    assert payload.dtype == np.uint8 and payload.ndim == 1
    out = c.decode(payload, x.size)
    assert out.dtype == np.float32 and out.shape == x.shape
    return payload, out


def chunk_scale(x, bits, chunk=CHUNK):
    """Per-element scale (max - min) / (2**bits - 1) of the element's chunk, computed naively."""
    scales = np.empty(x.size, dtype=np.float64)
    for s in range(0, x.size, chunk):
        c = x[s: s + chunk].astype(np.float64)
        scales[s: s + chunk] = (c.max() - c.min()) / (2 ** bits - 1)
    return scales


# -- identity and byte accounting --------------------------------------------------------------

def test_identity_roundtrip_is_exact_and_sized():
    x = update()
    x[:4] = [-0.0, 1e-42, 3e38, -7.5]
    payload, out = roundtrip(comp(uplink="none"), x)
    assert out.tobytes() == x.tobytes()
    assert payload.size == HEADER_SIZE + 4 * N
    assert payload_bytes_float32(N) == 4 * N


def test_decode_into_out_buffer():
    x = update()
    c = comp(uplink="quant", bits=4)
    payload = c.encode(x, 0, None)
    out = np.full(N, 7.0, dtype=np.float32)
    assert c.decode(payload, N, out=out) is out
    np.testing.assert_array_equal(out, c.decode(payload, N))


# -- uniform quantization ----------------------------------------------------------------------

def test_packed_sizes_are_exact():
    # n = 10001, chunk 1024 -> 10 chunks with a float32 min and scale each (80 bytes).
    x = update()
    expected = {8: 32 + 80 + 10001, 4: 32 + 80 + 5001, 2: 32 + 80 + 2501}
    for bits, size in expected.items():
        for stochastic in (False, True):
            c = comp(uplink="quant", bits=bits, stochastic_rounding=stochastic)
            assert c.encode(x, 0, np.random.default_rng(0)).size == size
    assert comp(uplink="quant", bits=16).encode(x, 0, None).size == 32 + 2 * 10001


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_deterministic_quant_error_within_half_step(bits):
    x = update()
    _, out = roundtrip(comp(uplink="quant", bits=bits), x)
    err = np.abs(out.astype(np.float64) - x)
    half = chunk_scale(x, bits) / 2
    assert np.all(err <= half * (1 + 1e-5) + 1e-12)
    assert err.max() > 0.4 * half.max()  # really quantized, not a lossless path


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_stochastic_quant_error_within_one_step(bits):
    x = update()
    _, out = roundtrip(comp(uplink="quant", bits=bits, stochastic_rounding=True), x)
    err = np.abs(out.astype(np.float64) - x)
    assert np.all(err <= chunk_scale(x, bits) * (1 + 1e-5) + 1e-12)


def test_stochastic_rounding_is_unbiased():
    # Every chunk spans [0, 1], so the 4-bit step is 1/15; the inner values sit 0.3 steps above
    # a level: round-to-nearest is biased by -0.3 steps, stochastic rounding by ~0.
    step = 1 / 15
    x = ((np.arange(N) % 14) + 0.3).astype(np.float64) * step
    x[::CHUNK], x[1::CHUNK] = 0.0, 1.0
    x = x.astype(np.float32)
    c = comp(uplink="quant", bits=4, stochastic_rounding=True)
    m = 400
    seeds = np.random.SeedSequence(123).spawn(m)
    mean = sum(c.decode(c.encode(x, 0, np.random.default_rng(s)), N).astype(np.float64)
               for s in seeds) / m
    sigma = step * math.sqrt(0.3 * 0.7 / m)  # std of the mean of m Bernoulli(0.3) steps
    assert np.all(np.abs(mean - x) <= 6 * sigma + 1e-6)
    det = comp(uplink="quant", bits=4).decode(comp(uplink="quant", bits=4).encode(x, 0, None), N)
    assert np.abs(det - x).mean() > 0.25 * step > 10 * np.abs(mean - x).mean()


def test_same_seed_same_payload_different_seed_differs():
    x = update()
    for cfg in (dict(uplink="quant", bits=2, stochastic_rounding=True),
                dict(uplink="topk", topk_fraction=0.1, topk_value_bits=8,
                     stochastic_rounding=True)):
        c = comp(**cfg)
        a = c.encode(x, 5, np.random.default_rng([7, 3, 5]))
        b = c.encode(x, 5, np.random.default_rng([7, 3, 5]))
        d = c.encode(x, 5, np.random.default_rng([7, 4, 5]))
        assert np.array_equal(a, b) and not np.array_equal(a, d)


def test_constant_chunks_do_not_divide_by_zero():
    x = np.full(3000, 0.25, dtype=np.float32)
    x[CHUNK: 2 * CHUNK] = 0.0
    for bits in (8, 4, 2):
        for stochastic in (False, True):
            with np.errstate(all="raise"):
                _, out = roundtrip(comp(uplink="quant", bits=bits,
                                        stochastic_rounding=stochastic), x)
            np.testing.assert_array_equal(out, x)


def test_chunk_larger_than_block_and_tail():
    x = update(n=3 * q.BLOCK + 5)
    c = comp(uplink="quant", bits=8, chunk_size=2 * q.BLOCK + 3)
    _, out = roundtrip(c, x)
    assert np.all(np.abs(out - x) <= chunk_scale(x, 8, 2 * q.BLOCK + 3) / 2 * (1 + 1e-5))


def _ordinary(seed=0):
    x = update(seed=seed)
    x[:3] = [-2.5, 1e-30, 7.0]
    return x


def _old_formula(x, bits, chunk=CHUNK):
    """Decode(encode(x)) by the documented float32 formula, one chunk at a time (no blocks)."""
    levels = 2 ** bits - 1
    out = np.empty_like(x)
    for s in range(0, x.size, chunk):
        c = x[s: s + chunk]
        lo, hi = c.min(), c.max()
        scale = np.float32((np.float64(hi) - lo) / levels)
        inv = np.float32(min(1.0 / np.float64(scale), np.finfo(np.float32).max)) if scale > 0 \
            else np.float32(0)
        t = (c - lo) * inv + np.float32(0.5)
        codes = t.astype(np.uint8)
        out[s: s + chunk] = codes * scale + lo
    return out


# SHA-256 of the payloads of _ordinary() (chunk 1024, rng seed 1), computed with the code as it
# was before the wide-range fix: ordinary inputs must keep their exact bytes.
_PAYLOAD_SHA = {
    (8, False): "f3c8fb81b09d7d583c436681ca29ce01edcad8b60ebe9300b6c92ceaa804a220",
    (8, True): "199737ca6a194715152483027fbb648226023ed63d28bb25b50fc9824c134b4b",
    (4, False): "c4ed2039922e1e8ef23d799a50a52c9b1118fcdd3acfb2f6c57076c63e9350bd",
    (4, True): "eccec859d9ebd9e0aa5ef42e9f46de9b7c5f76aceedeead7ced878312d015cf8",
    (2, False): "48107dcd0db555a9668e8ccf588eb5f2e99199b816ea307ce2e9350b9cb8cf6e",
    (2, True): "93b4d8721f8f376fda3243edcb50caddedc3311e1271e6bb5a860477128371e6",
}


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_ordinary_quant_payloads_unchanged(bits):
    import hashlib

    x = _ordinary()
    for stochastic in (False, True):
        c = comp(uplink="quant", bits=bits, stochastic_rounding=stochastic)
        payload, out = roundtrip(c, x)
        assert hashlib.sha256(payload.tobytes()).hexdigest() == _PAYLOAD_SHA[bits, stochastic]
    det = comp(uplink="quant", bits=bits)
    assert det.decode(det.encode(x, 0, None), N).tobytes() == _old_formula(x, bits).tobytes()


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_quant_range_beyond_float32_max_round_trips_finite(bits):
    """max - min overflows float32 (-3e38 .. 3e38); codes and decode must not become inf/nan."""
    big = np.finfo(np.float32).max
    x = (np.random.default_rng(2).uniform(-3e38, 3e38, 3000)).astype(np.float32)
    x[:2] = [-3e38, 3e38]
    x[CHUNK: CHUNK + 2] = [-big, big]                            # the widest range there is
    x[2 * CHUNK:] = update(3000 - 2 * CHUNK)                     # an ordinary chunk after them
    for stochastic in (False, True):
        with np.errstate(all="raise"):
            _, out = roundtrip(comp(uplink="quant", bits=bits, stochastic_rounding=stochastic), x)
        assert np.isfinite(out).all()
        err = np.abs(out.astype(np.float64) - x)
        step = chunk_scale(x, bits)
        bound = step if stochastic else step / 2
        assert np.all(err <= bound * (1 + 1e-5) + 1e-12)
    # The ordinary chunk decodes exactly as it would alone.
    det = comp(uplink="quant", bits=bits)
    alone = det.decode(det.encode(x[2 * CHUNK:].copy(), 0, None), x.size - 2 * CHUNK)
    np.testing.assert_array_equal(det.decode(det.encode(x, 0, None), x.size)[2 * CHUNK:], alone)
    # A corrupt payload with an infinite scale still decodes to non-finite values (the server
    # rejects them), not to clamped finite ones.
    payload = det.encode(x, 0, None)
    c = q.num_chunks(x.size, CHUNK)
    payload[HEADER_SIZE + 4 * c: HEADER_SIZE + 8 * c].view("<f4")[0] = np.inf
    with np.errstate(all="ignore"):
        assert not np.isfinite(det.decode(payload, x.size)[:CHUNK]).all()


def test_topk_8bit_values_with_range_beyond_float32_max():
    x = update()
    x[:2] = [-3e38, 3e38]
    _, out = roundtrip(comp(uplink="topk", topk_fraction=0.01, topk_value_bits=8), x)
    assert np.isfinite(out).all()
    assert abs(float(out[0]) + 3e38) < 3e38 / 255 and abs(float(out[1]) - 3e38) < 3e38 / 255


@pytest.mark.parametrize("bits", [4, 2])
def test_bit_packing_layout_and_roundtrip(bits):
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 5, 2 * q.BLOCK + 7):
        codes = rng.integers(0, 2 ** bits, n).astype(np.uint8)
        packed = q.pack_bits(codes, bits)
        assert packed.size == math.ceil(n * bits / 8)
        np.testing.assert_array_equal(q.unpack_bits(packed, bits, n), codes)
    codes = np.array([1, 2, 3, 0, 3], dtype=np.uint8)
    if bits == 4:
        assert list(q.pack_bits(codes, 4)) == [1 | 2 << 4, 3, 3]
    else:
        assert list(q.pack_bits(codes, 2)) == [1 | 2 << 2 | 3 << 4, 3]


# -- 16-bit floats -----------------------------------------------------------------------------

def test_fp16_relative_error_and_prescale():
    x = update()
    x[:3] = [1e-7, -3e-6, 2e-9]  # fp16 subnormals without the power-of-two pre-scale
    _, out = roundtrip(comp(uplink="quant", bits=16, fp16_format="fp16"), x)
    err = np.abs(out.astype(np.float64) - x)
    assert np.all(err <= 2.0 ** -11 * np.abs(x) + 1e-20)
    big = update(scale=1e6)  # beyond fp16's 65504 without the pre-scale
    _, out = roundtrip(comp(uplink="quant", bits=16), big)
    assert np.all(np.abs(out.astype(np.float64) - big) <= 2.0 ** -11 * np.abs(big))


def test_bf16_relative_error_and_ties_to_even():
    x = update()
    _, out = roundtrip(comp(uplink="quant", bits=16, fp16_format="bf16"), x)
    assert np.all(np.abs(out.astype(np.float64) - x) <= 2.0 ** -8 * np.abs(x))  # 8-bit significand
    bits = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0xBF807FFF], dtype=np.uint32)
    out16 = np.empty(8, dtype=np.uint8)
    to_bf16(bits.view(np.float32), out16)
    assert list(out16.view("<u2")) == [0x3F80, 0x3F82, 0x3F81, 0xBF80]
    assert list(from_bf16(out16).view(np.uint32)) == [0x3F800000, 0x3F820000, 0x3F810000,
                                                     0xBF800000]


def test_bf16_saturates_finite_values_near_float32_max():
    """Round-to-nearest carries 3.4e38 into the exponent (inf); finite values saturate instead."""
    big = np.finfo(np.float32).max
    x = np.array([3.4e38, -3.4e38, big, -big, 3.3e38, np.inf, -np.inf, np.nan, 1.0],
                 dtype=np.float32)
    out16 = np.empty(2 * x.size, dtype=np.uint8)
    to_bf16(x, out16)
    assert list(out16.view("<u2")[:5]) == [0x7F7F, 0xFF7F, 0x7F7F, 0xFF7F, 0x7F78]
    assert list(out16.view("<u2")[5:]) == [0x7F80, 0xFF80, 0x7FC0, 0x3F80]  # as before
    back = from_bf16(out16)
    assert np.isfinite(back[:5]).all()
    assert np.all(np.abs(back[:5].astype(np.float64) - x[:5]) <= 2.0 ** -8 * np.abs(x[:5]))
    honest = update()
    honest[:2] = [3.4e38, -3.4e38]
    for cfg in (dict(uplink="quant", bits=16, fp16_format="bf16"),
                dict(uplink="topk", topk_fraction=0.01, topk_value_bits=16, fp16_format="bf16")):
        _, out = roundtrip(comp(**cfg), honest)
        assert np.isfinite(out).all() and out[0] > 3.3e38 and out[1] < -3.3e38


# -- top-k -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fraction,coding", [(0.01, IDX_DELTA16), (0.1, IDX_BITMAP),
                                             (1.0, IDX_BITMAP)])
def test_topk_keeps_largest_exactly_and_zeroes_rest(fraction, coding):
    x = update()
    payload, out = roundtrip(comp(uplink="topk", topk_fraction=fraction), x)
    k = math.ceil(fraction * N)
    kept = out != 0
    assert np.count_nonzero(kept) == k
    np.testing.assert_array_equal(out[kept], x[kept])
    if k < N:
        assert np.abs(x[kept]).min() >= np.abs(x[~kept]).max()
    assert payload[5] & 3 == coding
    index_bytes = {IDX_DELTA16: 2 * k, IDX_BITMAP: math.ceil(N / 8)}[coding]
    assert payload.size == HEADER_SIZE + 4 * k + index_bytes


def test_topk_selection_matches_full_sort_with_ties_and_sampling_path():
    rng = np.random.default_rng(3)
    n = 5 * 65536 + 11  # large enough for the sampled threshold
    cases = [rng.standard_normal(n).astype(np.float32),
             np.round(rng.standard_normal(n) * 4).astype(np.float32),  # many ties
             np.sort(rng.standard_normal(n)).astype(np.float32)]  # sorted
    hidden = np.zeros(n, dtype=np.float32)  # the strided sample sees only zeros: fallback path
    hidden[1:: n // 65536] = rng.standard_normal(hidden[1:: n // 65536].size)
    cases.append(hidden)
    for x in cases:
        for k in (1, 37, n // 100, n // 10, n // 3):
            got = topk_indices(x, k)
            ref = np.argsort(-np.abs(x), kind="stable")[:k]  # ties: lowest index first
            np.testing.assert_array_equal(got, np.sort(ref))


def test_topk_wide_gaps_use_32bit_deltas():
    x = np.zeros(200_000, dtype=np.float32)
    x[[5, 150_000]] = [1.0, -2.0]
    payload, out = roundtrip(comp(uplink="topk", topk_fraction=1e-5), x)
    assert payload[5] & 3 == IDX_DELTA32
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("value_bits,fmt", [(16, "fp16"), (16, "bf16"), (8, "fp16")])
def test_topk_compressed_values(value_bits, fmt):
    x = update()
    c = comp(uplink="topk", topk_fraction=0.05, topk_value_bits=value_bits, fp16_format=fmt)
    _, out = roundtrip(c, x)
    idx = topk_indices(x, math.ceil(0.05 * N))
    vals, got = x[idx].astype(np.float64), out[idx]
    if value_bits == 16:
        rel = 2.0 ** -11 if fmt == "fp16" else 2.0 ** -8
        assert np.all(np.abs(got - vals) <= rel * np.abs(vals))
    else:
        assert np.all(np.abs(got - vals) <= chunk_scale(x[idx], 8) / 2 * (1 + 1e-5))
    mask = np.ones(N, bool)
    mask[idx] = False
    assert not out[mask].any()


# -- error feedback and state ------------------------------------------------------------------

def test_error_feedback_sum_tracks_true_sum():
    # A constant update: without feedback the same rounding error repeats every round and the
    # sums drift apart linearly; with feedback the gap is the residual, below one 2-bit step.
    x = update(n=4096, seed=4)
    rounds = 40
    gaps = {}
    for ef in (False, True):
        c = comp(uplink="quant", bits=2, error_feedback=ef)
        sent = np.zeros(x.size)
        for t in range(rounds):
            sent += c.decode(c.encode(x, 9, None), x.size)
            gap = np.abs(sent - (t + 1) * x.astype(np.float64))
            if ef:
                step = chunk_scale(x, 2).max() * 2  # x + residual spans at most ~2 ranges
                assert gap.max() <= step
                np.testing.assert_allclose(sent, (t + 1) * x.astype(np.float64)
                                           - c.state_dict()["residual/9"], atol=1e-6)
        gaps[ef] = gap.max()
    assert gaps[False] > 10 * gaps[True]


def test_error_feedback_topk_sends_everything_eventually():
    x = update(n=2000, seed=5)
    c = comp(uplink="topk", topk_fraction=0.05, error_feedback=True)
    sent = np.zeros(x.size)
    for _ in range(200):
        sent += c.decode(c.encode(x, 0, None), x.size)
    plain = comp(uplink="topk", topk_fraction=0.05)
    once = plain.decode(plain.encode(x, 0, None), x.size)
    err_ef = np.abs(sent - 200 * x.astype(np.float64)).max()
    assert err_ef < 0.2 * np.abs(200 * (once - x)).max()


def test_state_dict_round_trip_reproduces_next_payload():
    cfg = dict(uplink="quant", bits=4, stochastic_rounding=True, error_feedback=True)
    a = comp(**cfg)
    for t in range(3):
        for cid in (2, 17):
            a.encode(update(seed=10 * t + cid), cid, np.random.default_rng([0, t, cid]))
    state = a.state_dict()
    assert sorted(state) == ["residual/17", "residual/2"]
    assert all(v.dtype == np.float32 and v.shape == (N,) for v in state.values())
    b = comp(**cfg)
    b.load_state_dict(state)
    nxt = update(seed=99)
    pa = a.encode(nxt, 17, np.random.default_rng([0, 3, 17]))
    pb = b.encode(nxt, 17, np.random.default_rng([0, 3, 17]))
    np.testing.assert_array_equal(pa, pb)
    fresh = comp(**cfg).encode(nxt, 17, np.random.default_rng([0, 3, 17]))
    assert not np.array_equal(pa, fresh)  # the residual really matters


def test_state_redistributes_over_ranks():
    a = comp(uplink="topk", topk_fraction=0.1, error_feedback=True)
    for cid in range(5):
        a.encode(update(seed=cid), cid, None)
    full = a.state_dict()
    ranks = [comp(uplink="topk", topk_fraction=0.1, error_feedback=True) for _ in range(2)]
    ranks[0].load_state_dict(full, client_ids=[0, 2, 4])
    ranks[1].load_state_dict(full, client_ids=[1, 3])
    assert ranks[0].clients_with_state == [0, 2, 4]
    merged = {**ranks[0].state_dict(), **ranks[1].state_dict()}
    assert sorted(merged) == sorted(full)
    assert all(np.array_equal(merged[k], full[k]) for k in full)
    moved = ranks[0].client_state(2)
    ranks[1].set_client_state(2, moved)
    ranks[0].drop_client(2)
    assert ranks[1].clients_with_state == [1, 2, 3] and ranks[0].clients_with_state == [0, 4]
    with pytest.raises(ValueError, match="residual/<client_id>"):
        ranks[0].load_state_dict({"momentum/3": np.zeros(3)})
    with pytest.raises(ValueError, match="client 4"):
        ranks[0].set_client_state(4, moved)


def test_state_dict_is_a_copy():
    c = comp(uplink="quant", bits=2, error_feedback=True)
    c.encode(update(), 1, None)
    snap = c.state_dict()["residual/1"]
    before = snap.copy()
    c.encode(update(seed=8), 1, None)
    np.testing.assert_array_equal(snap, before)


# -- lossless stage ----------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["zlib", "zstd"])
def test_lossless_stage_only_when_smaller(method):
    if method == "zstd" and not zstd_available():
        pytest.skip("zstandard not installed")
    x = update()
    sparse = comp(uplink="quant", bits=2, lossless=method)
    plain = comp(uplink="quant", bits=2)
    p, ref = sparse.encode(x, 0, None), plain.encode(x, 0, None)
    assert p[6] != 0 and p.size < ref.size
    np.testing.assert_array_equal(sparse.decode(p, N), plain.decode(ref, N))
    noise = np.random.default_rng(1).integers(0, 2 ** 32, N, dtype=np.uint32).view(np.float32)
    p = comp(uplink="none", lossless=method).encode(noise, 0, None)
    assert p[6] == 0 and p.size == HEADER_SIZE + 4 * N


def test_zstd_missing_is_a_config_error(monkeypatch):
    monkeypatch.setattr(lossless, "_zstd", None)
    with pytest.raises(ConfigError, match="compression.lossless.*zstandard"):
        comp(uplink="quant", bits=8, lossless="zstd")


# -- malformed input ---------------------------------------------------------------------------

def test_malformed_payloads_raise_value_error():
    x = update()
    for cfg in (dict(uplink="none"), dict(uplink="quant", bits=4),
                dict(uplink="topk", topk_fraction=0.01), dict(uplink="quant", bits=2,
                                                              lossless="zlib")):
        p = comp(**cfg).encode(x, 0, None)
        with pytest.raises(ValueError, match="truncated|decompress"):
            decode_payload(p[:-1], N)
        with pytest.raises(ValueError, match="truncated|decompress"):
            decode_payload(np.concatenate([p, [0]]).astype(np.uint8), N)
        with pytest.raises(ValueError, match="expected 10000"):
            decode_payload(p, N - 1)
        bad = p.copy()
        bad[3] = 99
        with pytest.raises(ValueError, match="unknown codec id 99"):
            decode_payload(bad, N)
    with pytest.raises(ValueError, match="shorter than the 32-byte header"):
        decode_payload(np.zeros(10, np.uint8), N)
    with pytest.raises(ValueError, match="magic"):
        decode_payload(np.zeros(100, np.uint8), N)
    with pytest.raises(ValueError, match="uint8"):
        decode_payload(np.zeros(100, np.float32), N)


def test_corrupt_topk_indices_raise():
    x = update()
    p = comp(uplink="topk", topk_fraction=0.01).encode(x, 0, None)
    bad = p.copy()
    bad[-2:] = 0  # the last delta becomes 0: indices no longer strictly increasing
    with pytest.raises(ValueError, match="strictly increasing"):
        decode_payload(bad, N)
    p = comp(uplink="topk", topk_fraction=0.2).encode(x, 0, None)
    bad = p.copy()
    bad[-1] |= 0x80  # a bit past n in the bitmap
    with pytest.raises(ValueError, match="bitmap"):
        decode_payload(bad, N)


def test_non_finite_update_rejected():
    x = update()
    x[5] = np.nan
    for cfg in (dict(uplink="quant", bits=8), dict(uplink="quant", bits=16),
                dict(uplink="topk")):
        with pytest.raises(ValueError, match="NaN or Inf"):
            comp(**cfg).encode(x, 0, None)


def test_any_compressor_decodes_any_payload():
    x = update()
    p = comp(uplink="topk", topk_fraction=0.1).encode(x, 0, None)
    np.testing.assert_array_equal(comp(uplink="none").decode(p, N), decode_payload(p, N))


# -- registry ----------------------------------------------------------------------------------

def Cfg(**kw):
    """A quant section with this file's chunk size; `kw` overrides any field."""
    return CompressionConfig(**dict({"uplink": "quant", "chunk_size": CHUNK}, **kw))


def test_registry_builds_from_the_typed_section():
    assert make_compressor(Cfg()).bits == 8
    assert make_compressor(Cfg()).chunk == CHUNK
    assert make_compressor(Cfg(bits=16, fp16_format="bf16")).fmt == "bf16"
    assert make_compressor(Cfg(uplink="topk")).name == "topk"
    assert not make_compressor(Cfg(uplink="none", error_feedback=True)).error_feedback


@pytest.mark.parametrize("field,value,needle", [
    ("uplink", "gzip", "compression.uplink.*none, quant, topk"),
    ("bits", 3, "compression.bits.*16, 8, 4, 2"),
    ("bits", True, "compression.bits"),
    ("chunk_size", 0, "compression.chunk_size"),
    ("lossless", "lz4", "compression.lossless.*none, zlib, zstd"),
])
def test_registry_errors_name_the_field(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        make_compressor(Cfg(**{field: value}))


@pytest.mark.parametrize("field,value", [("topk_fraction", 0.0), ("topk_fraction", 1.5),
                                         ("topk_value_bits", 4), ("fp16_format", "fp8")])
def test_registry_topk_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"compression.{field}"):
        make_compressor(Cfg(uplink="topk", **{field: value}))


def test_registry_takes_only_a_compression_config():
    for not_a_section in ({"uplink": "quant", "bits": 8}, None, "quant"):
        with pytest.raises(TypeError, match="CompressionConfig"):
            make_compressor(not_a_section)


def test_registry_defaults_are_the_config_defaults():
    """No second copy of the defaults: an unset field means CompressionConfig's default."""
    defaults = CompressionConfig()
    assert make_compressor(CompressionConfig(uplink="quant")).chunk == defaults.chunk_size == 4096
    topk = make_compressor(CompressionConfig(uplink="topk"))
    assert (topk.chunk, topk.value_bits, topk.fmt, topk.fraction) == (
        defaults.chunk_size, defaults.topk_value_bits, defaults.fp16_format, defaults.topk_fraction)


@pytest.mark.parametrize("field,value", [("downlink_bits", 3), ("target", "delta"),
                                         ("downlink", "topk"), ("fp16_format", "fp8"),
                                         ("topk_value_bits", 4)])
def test_registry_checks_every_choice_field(field, value):
    """A section built or replaced in code is checked like a loaded one, whatever the codec."""
    with pytest.raises(ConfigError, match=f"^compression.{field}: invalid value"):
        make_compressor(Cfg(**{field: value}))
