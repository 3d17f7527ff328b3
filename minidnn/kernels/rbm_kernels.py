"""Fused sigmoid and Bernoulli-sampling kernels for RBM training (contrastive divergence).

Most of a CD step is matrix products, which stay BLAS products (``v @ W``,
``h @ W.T``, one ``[v0; vk]ᵀ [p0; pk]`` for the statistics). What is left
is element-wise work over (batch, units) arrays; each kernel here does it in
one pass, in place:

* ``sigmoid_bias(pre, bias, scale=1)``: p = σ(pre + bias) in place (hidden
  probabilities, mean-field reconstructions), stored as ``scale``·p.
* ``sigmoid_bernoulli(pre, bias, key, states, scale=1)``:
      p = σ(pre + bias),  s = 1[u < p],  pre ← scale·p
  where ``pre`` is the product ``v W`` (batch, n_hidden) and u are uniform
  draws made inside the kernel from the counter-based generator below. This
  is Bernoulli sampling of the hidden (or visible) layer of an RBM:
  P(h_j = 1 | v) = σ(c_j + Σ_i v_i W_ij) (Hinton, 2002, "Training products
  of experts by minimizing contrastive divergence").
* ``sigmoid_sample(pre, bias, uniforms)``: the same with caller-given
  uniforms (kept for callers that bring their own draws).
* ``_bernoulli_states_kernel(pre, bias, key, states, row_offset)``: the states of
  ``sigmoid_bernoulli`` without storing p (the chain's samples whose
  probabilities nobody reads). The minibatch's rows come from
  ``kernels.gather.gather_rows_into`` (the training loop's four-row gather).

``scale`` folds the CD statistics' row weights (−1/n for the data rows, 1/m
for the chains) into the pass that writes the probabilities, so no second
pass over (batch, units) scales them; the draw compares u with the unscaled
p, and scale·p is the float product a separate ``p *= scale`` would give
(scale 1 stores p exactly), so the results are bit for bit those of the two
passes.

Random numbers. Drawing the uniforms with ``Generator.random`` cost about as
much as the whole sigmoid pass (2–3 ns per draw, a third of the non-GEMM
time of an epoch), so the uniforms come from Philox4x32-10 (Salmon, Moraes,
Dror & Shaw, 2011, "Parallel random numbers: as easy as 1, 2, 3"), a
counter-based generator: output block b is a keyed bijection of the counter
(b, 0, c2, c3), so the draws are computed in SIMD lanes inside the kernel
and any element's draw can be recomputed alone. The four 32-bit words
``key = (k0, k1, c2, c3)`` of each call are drawn from the caller's
``numpy.random.Generator`` (``draw_key``), so all randomness still follows
one seeded Generator. Element i of the C-order array uses word i mod 4 of
block i // 4; the uniform is u = (bits >> 8)·2⁻²⁴ in float32 (the
resolution of ``Generator.random(dtype=float32)``) and bits·2⁻³² in
float64.

Sigmoid. ``math.exp`` is a libm call that LLVM cannot vectorise, so the
float32 kernels use Cephes' ``expf`` (range reduction e^t = 2^n e^r,
|r| ≤ ln2/2, degree-5 polynomial; about 1 ulp) inlined, which vectorises
(8 lanes with AVX2): σ(x) = 1 / (1 + e^{−x}) with the exponent clamped to
[−87, 87], relative error below 1e-6 everywhere. float64 kernels use
``math.exp`` (exact to rounding).

``*_numpy`` functions are the plain NumPy twins that define what the
kernels compute; tests hold the kernels to them (the Philox words bit for
bit, against the published known-answer vectors too).
"""
from __future__ import annotations

import math
import sys

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

_LITTLE_ENDIAN = sys.byteorder == "little"

#: Philox4x32 multipliers and Weyl key increments (Salmon et al., 2011, table 2)
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
PHILOX_ROUNDS = 10


# -- the NumPy twins (the definition) ---------------------------------------------

def _stable_sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def scaled_probabilities_numpy(p: np.ndarray, scale) -> np.ndarray:
    """scale·p, stored as 0 where p < (smallest normal of p's dtype)/|scale|, so that no
    stored value is subnormal (the kernels' rule, ``_normal_floor``).

    The kernels store probabilities scaled by ±1/batch (the statistics' weights), and
    σ·0.01 of a unit far below threshold is subnormal in float32 (σ ≥ 1.6e-38 from the
    clamp, times 1/100): the products that read them then take the CPU's slow path
    (sitting 22: the 784×200×500 gradient GEMM 1.2 → 26 ms at 3 % subnormal entries, a
    PCD-1 step 4 → 21 ms after 300 steps at lr 0.1, momentum 0.9, weight decay 0.002).
    Each value stored as 0 moves a statistic by less than 1.2e-38 (2.2e-308 in float64);
    the Bernoulli draws compare the uniforms with the unscaled p, so they do not change."""
    t = p.dtype.type
    scale = t(scale)
    if scale == 0:
        return np.zeros_like(p)
    floor = t(np.finfo(p.dtype).tiny) / abs(scale)
    return np.where(p < floor, t(0), p * scale)     # NaN stays NaN


def sigmoid_bias_numpy(pre: np.ndarray, bias: np.ndarray, scale=1.0) -> np.ndarray:
    """scale·σ(pre + bias), bias broadcast over rows, no subnormal stored
    (``scaled_probabilities_numpy``); (batch, units) -> (batch, units)."""
    return scaled_probabilities_numpy(_stable_sigmoid(pre + bias), scale)


def sigmoid_sample_numpy(pre: np.ndarray, bias: np.ndarray, uniforms: np.ndarray,
                         scale=1.0):
    """(scale·p, s) with p = σ(pre + bias) and s = 1[uniforms < p] (same dtype as pre);
    the draw from the unscaled p, the stored scale·p as ``scaled_probabilities_numpy``."""
    p = _stable_sigmoid(pre + bias)
    s = (uniforms < p).astype(pre.dtype)
    return scaled_probabilities_numpy(p, scale), s


def philox4x32_numpy(counters: np.ndarray, key) -> np.ndarray:
    """Philox4x32-10 of each row of ``counters`` (blocks, 4) uint32 under ``key`` (k0, k1).

    Each round: (hi0, lo0) = M0·c0, (hi1, lo1) = M1·c2 (32×32 → 64-bit),
    c ← (hi1 ⊕ c1 ⊕ k0, lo1, hi0 ⊕ c3 ⊕ k1, lo0), then k ← k + (W0, W1)."""
    c = [np.asarray(counters[:, i], dtype=np.uint64) for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    mask = np.uint64(0xFFFFFFFF)
    for _ in range(PHILOX_ROUNDS):
        p0 = c[0] * np.uint64(PHILOX_M0)
        p1 = c[2] * np.uint64(PHILOX_M1)
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & mask]
        k0, k1 = (k0 + np.uint64(PHILOX_W0)) & mask, (k1 + np.uint64(PHILOX_W1)) & mask
    return np.stack(c, axis=1).astype(np.uint32)


def philox_bits_numpy(n: int, key) -> np.ndarray:
    """The n 32-bit words a kernel call with ``key`` = (k0, k1, c2, c3) uses, in element order."""
    blocks = (int(n) + 3) // 4
    counters = np.zeros((blocks, 4), dtype=np.uint32)
    counters[:, 0] = np.arange(blocks, dtype=np.uint32)
    counters[:, 2], counters[:, 3] = key[2], key[3]
    return philox4x32_numpy(counters, key[:2]).reshape(-1)[:n]


def uniforms_from_bits_numpy(bits: np.ndarray, dtype) -> np.ndarray:
    """U[0, 1) from 32-bit words: (bits >> 8)·2⁻²⁴ in float32, bits·2⁻³² in float64 (exact)."""
    if np.dtype(dtype) == np.float32:
        return (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
    return bits.astype(np.float64) * 2.0 ** -32


def sigmoid_bernoulli_numpy(pre: np.ndarray, bias: np.ndarray, key, row_offset: int = 0,
                            scale=1.0):
    """(scale·p, s): p = σ(pre + bias), s = 1[u < p], u from ``philox_bits_numpy(pre.size, key)``;
    with ``row_offset`` r, pre is rows r, r + 1, … of a bigger array and takes those rows'
    words (element i of the block is element r·cols + i of the whole)."""
    skip = int(row_offset) * pre.shape[1]
    bits = philox_bits_numpy(skip + pre.size, key)[skip:]
    u = uniforms_from_bits_numpy(bits, pre.dtype).reshape(pre.shape)
    return sigmoid_sample_numpy(pre, bias, u, scale)


def draw_key(rng: np.random.Generator) -> np.ndarray:
    """The four uint32 words (k0, k1, c2, c3) of one kernel call, drawn from ``rng``:
    two raw 64-bit outputs of its bit generator, low word first on every platform
    (1 µs; ``rng.integers`` took 6 µs, twice per minibatch)."""
    return rng.bit_generator.random_raw(2).astype("<u8").view("<u4").astype(np.uint32)


# -- scalar pieces (inlined into the kernels) --------------------------------------

@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterpret an int32 as the float32 with those bits (to build 2^n exactly)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return sig, codegen


_F = np.float32


@numba.njit(cache=True, inline="always", error_model="numpy")
def _sigmoid32(x):
    # e^t, t = −x clamped to [−87, 87] (σ is then 0 or 1 to float32 precision anyway):
    # t = n ln2 + r with n = round(t log2 e), ln2 split in two for an exact product
    t = min(max(-x, _F(-87.0)), _F(87.0))
    # n + 128 = floor(t log2 e + 128.5) by truncation (the argument is positive); kept in
    # int32 and converted before any arithmetic, so the conversions vectorise
    n_plus_128 = numba.int32(t * _F(1.4426950408889634) + _F(128.5))
    fn = _F(n_plus_128) - _F(128.0)
    r = t - fn * _F(0.693359375) + fn * _F(2.12194440e-4)
    p = _F(1.9875691500e-4)
    p = p * r + _F(1.3981999507e-3)
    p = p * r + _F(8.3334519073e-3)
    p = p * r + _F(4.1665795894e-2)
    p = p * r + _F(1.6666665459e-1)
    p = p * r + _F(5.0000001201e-1)
    e = (p * (r * r) + r + _F(1.0)) * _int32_bits_as_float32(numba.int32((n_plus_128 - 1) << 23))
    return _F(1.0) / (_F(1.0) + e)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _sigmoid64(x):
    return 1.0 / (1.0 + math.exp(min(max(-x, -708.0), 708.0)))


def _sigmoid(x):
    """σ(x) in the precision of x (dispatched at compile time by ``overload``)."""
    raise NotImplementedError("only callable from Numba kernels")


@overload(_sigmoid, inline="always")
def _sigmoid_overload(x):
    if x == types.float32:
        return lambda x: _sigmoid32(x)
    return lambda x: _sigmoid64(x)


def _normal_floor(scale):
    """The least σ whose σ·scale is a normal number (``scaled_probabilities_numpy``): the
    smallest normal of scale's dtype over |scale| (infinite for scale 0, whose products
    are 0 anyway). A kernel stores σ·scale where σ ≥ this floor and 0 below it: one
    compare and one select per element, beside the σ's ~25 operations (a NaN σ fails
    the compare and is stored, as before)."""
    raise NotImplementedError("only callable from Numba kernels")


_TINY32, _TINY64 = np.float32(np.finfo(np.float32).tiny), np.finfo(np.float64).tiny


@overload(_normal_floor, inline="always")
def _normal_floor_overload(scale):
    if scale == types.float32:
        return lambda scale: _TINY32 / abs(scale) if scale != 0 else _F(np.inf)
    return lambda scale: _TINY64 / abs(scale) if scale != 0 else np.inf


def _uniform(bits, like):
    """U[0, 1) from a uint32 in the precision of ``like``."""
    raise NotImplementedError("only callable from Numba kernels")


@overload(_uniform, inline="always")
def _uniform_overload(bits, like):
    if like == types.float32:
        # bits >> 8 < 2^24 fits an int32, whose conversion vectorises (an unsigned one does not)
        return lambda bits, like: _F(numba.int32(bits >> numba.uint32(8))) * _F(2.0 ** -24)
    return lambda bits, like: np.float64(bits) * 2.0 ** -32


@numba.njit(cache=True, inline="always")
def _philox_block(block, c2, c3, k0, k1):
    c0 = numba.uint32(block)
    c1 = numba.uint32(0)
    for _ in range(PHILOX_ROUNDS):
        p0 = numba.uint64(c0) * numba.uint64(PHILOX_M0)
        p1 = numba.uint64(c2) * numba.uint64(PHILOX_M1)
        c0, c1, c2, c3 = (numba.uint32((p1 >> numba.uint64(32)) ^ c1 ^ k0), numba.uint32(p1),
                          numba.uint32((p0 >> numba.uint64(32)) ^ c3 ^ k1), numba.uint32(p0))
        k0 = numba.uint32(k0 + numba.uint32(PHILOX_W0))
        k1 = numba.uint32(k1 + numba.uint32(PHILOX_W1))
    return c0, c1, c2, c3


@numba.njit(cache=True)
def _philox_fill(out, first_block, key):
    """out[4j + l] = word l of Philox block first_block + j (len(out) a multiple of 4)."""
    _philox_fill_into(out, first_block, key, np.empty((4, out.shape[0] // 4), np.uint32))


@numba.njit(cache=True, inline="always")
def _philox_fill_into(out, first_block, key, lanes):
    """_philox_fill with caller-given scratch ``lanes`` (4, ≥ len(out)/4).

    One loop over the blocks with the 10 rounds inside (unrolled, the block's four
    words in registers), its results stored in four unit-stride rows of ``lanes``,
    then interleaved into ``out``: LLVM vectorises the blocks (8 per ymm pass) and
    the rounds never go through memory. Sitting 23: 12 % less time a word than
    one loop over the blocks per round (which loaded and stored the four rows ten
    times), the same words; a loop of whole blocks storing with stride 4 straight
    into ``out`` stayed scalar (4.7 ns a word against about 1.5, sitting 19)."""
    n = out.shape[0] // 4
    w0, w1, w2, w3 = lanes[0, :n], lanes[1, :n], lanes[2, :n], lanes[3, :n]
    base = numba.uint32(first_block)
    key0, key1 = numba.uint32(key[0]), numba.uint32(key[1])
    key2, key3 = numba.uint32(key[2]), numba.uint32(key[3])
    for j in range(n):
        c0, c1, c2, c3 = numba.uint32(base + numba.uint32(j)), numba.uint32(0), key2, key3
        k0, k1 = key0, key1
        for _ in range(PHILOX_ROUNDS):
            p0 = numba.uint64(c0) * numba.uint64(PHILOX_M0)
            p1 = numba.uint64(c2) * numba.uint64(PHILOX_M1)
            c0, c1, c2, c3 = (numba.uint32((p1 >> numba.uint64(32)) ^ c1 ^ k0),
                              numba.uint32(p1),
                              numba.uint32((p0 >> numba.uint64(32)) ^ c3 ^ k1),
                              numba.uint32(p0))
            k0 = numba.uint32(k0 + numba.uint32(PHILOX_W0))
            k1 = numba.uint32(k1 + numba.uint32(PHILOX_W1))
        w0[j], w1[j], w2[j], w3[j] = c0, c1, c2, c3
    for j in range(n):
        out[4 * j] = w0[j]
        out[4 * j + 1] = w1[j]
        out[4 * j + 2] = w2[j]
        out[4 * j + 3] = w3[j]


# -- the kernels ------------------------------------------------------------------

# Serial on purpose: a (100, 784) minibatch is ~0.1 ms of work here, about what waking a
# thread pool costs, and Numba threads contend with OpenBLAS's between the GEMMs they
# alternate with (a prange build of the Bernoulli kernel measured 0.48 ms per (100, 784)
# call against 0.29 ms serial, 2 threads, between GEMMs, on the loaded 2-core machine).
# nogil and ``row_offset`` (a row block gets the draws the whole call would give it) let
# threads split the rows; the RBM's row split that did (``_split_step``) lost its quiet
# A/B and was deleted in sitting 22, but the offsets stay tested.
# error_model="numpy": no ZeroDivisionError branch, so the loops vectorise.
# ``scale`` is always applied: p·1 is p exactly, and one multiply per element costs less
# than a second build of each kernel.
# Two rows per loop: one σ is a chain of ~25 dependent vector operations (the Horner
# polynomial, the division), so two independent chains per iteration keep more of the
# vector units busy (15 % faster on a (100, 784) block at 1 thread, the same operations
# on each element, so the same bits)
@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sigmoid_bias_kernel(pre, bias, scale):
    rows, cols = pre.shape
    floor, zero = _normal_floor(scale), pre.dtype.type(0.0)
    r = 0
    while r + 1 < rows:
        a, b = pre[r], pre[r + 1]
        for c in range(cols):
            p = _sigmoid(a[c] + bias[c])
            q = _sigmoid(b[c] + bias[c])
            a[c] = zero if p < floor else p * scale
            b[c] = zero if q < floor else q * scale
        r += 2
    if r < rows:
        a = pre[r]
        for c in range(cols):
            p = _sigmoid(a[c] + bias[c])
            a[c] = zero if p < floor else p * scale


@numba.njit(cache=True, error_model="numpy")
def _sigmoid_sample_kernel(pre, bias, uniforms, states):
    rows, cols = pre.shape
    one, zero = pre.dtype.type(1.0), pre.dtype.type(0.0)
    for r in range(rows):
        for c in range(cols):
            p = _sigmoid(pre[r, c] + bias[c])
            pre[r, c] = p
            states[r, c] = one if uniforms[r, c] < p else zero


#: Philox words made per pass of the Bernoulli kernel (whole rows; 64 KiB of words)
WORDS_PER_PASS = 16384


@numba.njit(cache=True, nogil=True)
def _pass_buffers(cols):
    # rows a pass of the Bernoulli kernels covers, and the words / lanes scratch for them
    rows_per_pass = max(1, WORDS_PER_PASS // cols)
    most = 4 * ((rows_per_pass * cols) // 4 + 2)
    return rows_per_pass, np.empty(most, dtype=np.uint32), np.empty((4, most // 4), dtype=np.uint32)


@numba.njit(cache=True, nogil=True)
def _fill_pass_words(words, lanes, key, row_offset, first_row, last_row, cols):
    # the Philox words of rows first_row … last_row - 1 (rows of the array the key's
    # counters number from row_offset) into words, whole 4-word blocks; returns where
    # row first_row's first word sits in words
    start = (row_offset + first_row) * cols
    first_block = start // 4
    n_blocks = ((row_offset + last_row) * cols + 3) // 4 - first_block
    _philox_fill_into(words[:4 * n_blocks], first_block, key, lanes)
    return start - 4 * first_block


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _sigmoid_bernoulli_kernel(pre, bias, key, states, row_offset, scale):
    # the Philox words of a block of rows in one vectorised pass (a pass per row, 196
    # blocks for 784 units, was 4x slower: loops too short), then σ and the draw.
    # pre is rows row_offset … of the array the key's counters number (a row block
    # worked on by one thread draws what the whole call would draw for those rows)
    rows, cols = pre.shape
    if rows == 0 or cols == 0:
        return
    one, zero = pre.dtype.type(1.0), pre.dtype.type(0.0)
    floor = _normal_floor(scale)
    rows_per_pass, words, lanes = _pass_buffers(cols)
    for first_row in range(0, rows, rows_per_pass):
        last_row = min(rows, first_row + rows_per_pass)
        offset = _fill_pass_words(words, lanes, key, row_offset, first_row, last_row, cols)
        r = first_row
        while r + 1 < last_row:             # two rows per loop, as _sigmoid_bias_kernel
            # slices indexed from 0: no wraparound test in the loop, so it vectorises
            o = offset + (r - first_row) * cols
            words_a, words_b = words[o:o + cols], words[o + cols:o + 2 * cols]
            a, a_states, b, b_states = pre[r], states[r], pre[r + 1], states[r + 1]
            for c in range(cols):
                p = _sigmoid(a[c] + bias[c])
                q = _sigmoid(b[c] + bias[c])
                a[c] = zero if p < floor else p * scale
                b[c] = zero if q < floor else q * scale
                a_states[c] = one if _uniform(words_a[c], p) < p else zero
                b_states[c] = one if _uniform(words_b[c], q) < q else zero
            r += 2
        if r < last_row:
            o = offset + (r - first_row) * cols
            row_words = words[o:o + cols]
            row, row_states = pre[r], states[r]
            for c in range(cols):
                p = _sigmoid(row[c] + bias[c])
                row[c] = zero if p < floor else p * scale
                row_states[c] = one if _uniform(row_words[c], p) < p else zero


@numba.njit(cache=True, error_model="numpy", nogil=True)
def _bernoulli_states_kernel(pre, bias, key, states, row_offset):
    # _sigmoid_bernoulli_kernel without storing σ: the draws only, pre left as it is.
    # For the passes whose probabilities nobody reads (PCD's visible sample, the chain's
    # inner Gibbs steps): the same σ, uniforms and compare, so the same states, without
    # the floor test, the scaling and the store of every element
    rows, cols = pre.shape
    if rows == 0 or cols == 0:
        return
    one, zero = pre.dtype.type(1.0), pre.dtype.type(0.0)
    rows_per_pass, words, lanes = _pass_buffers(cols)
    for first_row in range(0, rows, rows_per_pass):
        last_row = min(rows, first_row + rows_per_pass)
        offset = _fill_pass_words(words, lanes, key, row_offset, first_row, last_row, cols)
        r = first_row
        while r + 1 < last_row:
            o = offset + (r - first_row) * cols
            words_a, words_b = words[o:o + cols], words[o + cols:o + 2 * cols]
            a, a_states, b, b_states = pre[r], states[r], pre[r + 1], states[r + 1]
            for c in range(cols):
                p = _sigmoid(a[c] + bias[c])
                q = _sigmoid(b[c] + bias[c])
                a_states[c] = one if _uniform(words_a[c], p) < p else zero
                b_states[c] = one if _uniform(words_b[c], q) < q else zero
            r += 2
        if r < last_row:
            o = offset + (r - first_row) * cols
            row_words = words[o:o + cols]
            row, row_states = pre[r], states[r]
            for c in range(cols):
                p = _sigmoid(row[c] + bias[c])
                row_states[c] = one if _uniform(row_words[c], p) < p else zero


def _check(pre, bias, other=None, what="uniforms"):
    if pre.ndim != 2 or bias.shape != (pre.shape[1],):
        raise ValueError(f"rbm kernels expect pre (batch, units) and bias (units,), got "
                         f"{pre.shape} and {bias.shape}")
    if pre.dtype not in (np.float32, np.float64):
        raise ValueError(f"rbm kernels need float32 or float64 arrays, got {pre.dtype}")
    if not pre.flags.c_contiguous or pre.dtype != bias.dtype:
        raise ValueError("rbm kernels need a C-contiguous pre-activation array of the bias dtype")
    if other is not None and other.shape != pre.shape:
        raise ValueError(f"{what} must have shape {pre.shape}, got {other.shape}")


def sigmoid_sample(pre: np.ndarray, bias: np.ndarray, uniforms: np.ndarray):
    """In place: pre ← σ(pre + bias); returns (pre, states) with states = 1[u < p]."""
    _check(pre, bias, uniforms)
    states = np.empty_like(pre)
    _sigmoid_sample_kernel(pre, bias, uniforms, states)
    return pre, states


def sigmoid_bernoulli(pre: np.ndarray, bias: np.ndarray, key: np.ndarray,
                      states: np.ndarray | None = None, row_offset: int = 0, scale=1.0):
    """In place: pre ← scale·p, p = σ(pre + bias); states ← 1[u < p] (the unscaled p)
    with Philox uniforms under ``key``
    (four uint32 from ``draw_key``). ``states`` (same shape and dtype, any layout, may be a
    row block of a bigger buffer) is allocated when not given. ``row_offset``: pre holds
    rows row_offset, row_offset + 1, … of a bigger array, and gets the draws a call on
    the whole array would give those rows (how threads split one call). Returns (pre, states)."""
    _check(pre, bias, states, "states")
    key = np.ascontiguousarray(key, dtype=np.uint32)
    if key.shape != (4,):
        raise ValueError(f"sigmoid_bernoulli needs a key of 4 uint32 words, got shape {key.shape}")
    row_offset = int(row_offset)
    if row_offset < 0:
        raise ValueError(f"sigmoid_bernoulli row_offset must be >= 0, got {row_offset}")
    if (row_offset + pre.shape[0]) * pre.shape[1] >= 4 * 2 ** 32:
        raise ValueError(f"sigmoid_bernoulli counts blocks in 32 bits; "
                         f"{(row_offset + pre.shape[0]) * pre.shape[1]} elements is too many")
    if states is None:
        states = np.empty_like(pre)
    elif states.dtype != pre.dtype:
        raise ValueError(f"states must have dtype {pre.dtype}, got {states.dtype}")
    _sigmoid_bernoulli_kernel(pre, bias, key, states, row_offset, pre.dtype.type(scale))
    return pre, states


def philox_bits(n: int, key: np.ndarray) -> np.ndarray:
    """The kernel's Philox words for elements 0 … n−1 under ``key`` (the twin is
    ``philox_bits_numpy``)."""
    key = np.ascontiguousarray(key, dtype=np.uint32)
    out = np.empty(4 * ((int(n) + 3) // 4), dtype=np.uint32)
    _philox_fill(out, 0, key)
    return out[:n]


def sigmoid_bias(pre: np.ndarray, bias: np.ndarray, scale=1.0) -> np.ndarray:
    """In place: pre ← scale·σ(pre + bias); returns pre."""
    _check(pre, bias)
    _sigmoid_bias_kernel(pre, bias, pre.dtype.type(scale))
    return pre


# -- sitting 20: one call per pass between the products --------------------------------

@numba.njit(cache=True, error_model="numpy", nogil=True)
def _hidden_pass_kernel(p, bias, n, key, states, pos, neg, lo0, hi0, lo1, hi1):
    """The hidden layer's work after ``[v0; vk] W`` in one call: rows [lo0, hi0) of
    p0 = p[:n] ← pos·σ(p0 + c), rows [lo1, hi1) of pk = p[n:] ← neg·σ(pk + c) with
    the chain's next states 1[u < σ] under ``key`` (those rows' draws of the whole
    call). The two serial kernels above, called in turn: the same operations on every
    element, so the same bits as two calls, without a second dispatch."""
    if hi0 > lo0:
        _sigmoid_bias_kernel(p[lo0:hi0], bias, pos)
    if hi1 > lo1:
        _sigmoid_bernoulli_kernel(p[n + lo1:n + hi1], bias, key, states[lo1:hi1], lo1, neg)


def hidden_pass_numpy(p, bias, n, key, pos, neg):
    """The twin of ``hidden_pass`` over all rows: (pos·σ(p0 + c), neg·σ(pk + c), states)."""
    p0 = sigmoid_bias_numpy(p[:n], bias, pos)
    pk, states = sigmoid_bernoulli_numpy(p[n:], bias, key, 0, neg)
    return p0, pk, states


def hidden_pass(p, bias, n, key, states, pos, neg, rows0=None, rows1=None):
    """In place: ``_hidden_pass_kernel`` on p (n + m, units), rows0 = (lo0, hi0) of p0
    and rows1 = (lo1, hi1) of pk (default: all), states (m, units)."""
    _check(p, bias)
    m = p.shape[0] - int(n)
    if not 0 <= int(n) <= p.shape[0] or states.shape != (m, p.shape[1]) \
            or states.dtype != p.dtype:
        raise ValueError(f"hidden_pass needs 0 <= n <= {p.shape[0]} and states of shape "
                         f"{(m, p.shape[1])} and dtype {p.dtype}, got n={n}, "
                         f"{states.shape} {states.dtype}")
    lo0, hi0 = (0, int(n)) if rows0 is None else rows0
    lo1, hi1 = (0, m) if rows1 is None else rows1
    key = np.ascontiguousarray(key, dtype=np.uint32)
    t = p.dtype.type
    _hidden_pass_kernel(p, bias, int(n), key, states, t(pos), t(neg), lo0, hi0, lo1, hi1)
    return p, states


def draw_keys(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` keys (count, 4) in one draw: row j is what the j-th of ``count``
    consecutive ``draw_key(rng)`` calls returns (the bit generator's raw outputs
    2j and 2j + 1, low words first), so the stream is unchanged (one 1 µs call)."""
    raw = rng.bit_generator.random_raw(2 * int(count))
    if not _LITTLE_ENDIAN:                      # low word first on every platform
        return raw.astype("<u8").view("<u4").astype(np.uint32).reshape(int(count), 4)
    return raw.view(np.uint32).reshape(int(count), 4)
