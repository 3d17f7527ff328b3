"""The whole forward pass of a ternary net in one kernel call (technique 1's inference path).

A ternary net (every weight matrix on the grid Δ = 2^0, codes c ∈ {−1, 0, 1})
computes, layer by layer,

    h_{l+1} = f_l(s_l · (h_l c_l) + b_l),      s_l = g_l·Δ,   f_l ∈ {σ, ReLU, identity}

``minidnn.quantization.discrete.DiscreteDense`` runs this one layer at a time
from Python (the reference path); at batch 1 that per-layer overhead (input
checks, an array allocation and a kernel dispatch per layer, a separate
activation layer) costs more than the arithmetic. Here the whole net is one
call (on the rows and columns paths), and the products use no multiplications:
each term is an addition or a subtraction of an input, and the scale s_l is
applied once per output. The gemm path trades that for BLAS's throughput: it
multiplies by the codes expanded to float32 ±1 and 0, one product a layer.

Four paths (``choose_path`` picks one by batch size and code density):

* **lut** (batches < ``ternary_lut.LUT_BELOW_BATCH`` where the CPU has AVX2;
  ``minidnn.kernels.ternary_lut``): subset-sum tables of the inputs three at a
  time, looked up 8 outputs an instruction from the codes packed as bytes;
  additions only, about a quarter of the rows kernel's instructions a weight.

* **rows** (small batches without AVX2, ``ternary_net_rows_kernel``): one sample at a time;
  for each input i with h_i ≠ 0 (zero inputs, e.g. MNIST's background, are
  skipped), the int8 code row c_i (1 byte a weight, a quarter of float32)
  selects +h_i, −h_i or 0 for every output, and the selects vectorise across
  the outputs.
* **columns** (sparse codes at batches ≥ ``COLUMNS_FROM_BATCH``,
  ``ternary_net_columns_kernel``):
  activations are kept transposed, features × batch, for the whole net; each
  output j adds the rows h[i, :] of its +1 inputs and subtracts those of its
  −1 inputs (``TernaryPlan``-style index lists, nonzero codes only), four rows
  a pass so the accumulator row is loaded and stored once per four adds.
* **gemm** (batches ≥ ``GEMM_FROM_BATCH``, except sparse codes, at most
  ``GEMM_ABOVE_DENSITY`` nonzero, from ``COLUMNS_FROM_BATCH`` on;
  ``ternary_net_gemm_forward``): the
  add-only product costs one addition per nonzero code and sample, gathered
  from memory, where a BLAS GEMM does several flops a cycle from registers;
  with dense codes (57 % nonzero) the columns kernel is ~2× slower than the
  float32 forward at batch 100. So, per layer, the int8 codes are expanded into
  a float32 scratch of ONE layer, c_ij → float32(c_ij) ∈ {−1, 0, 1} (exact),
  z = h @ c (BLAS), then z·s + b and f in one pass
  (``scale_bias_activate_kernel``). The expansion costs O(n_in·n_out), the GEMM
  O(n_in·n_out·batch); the scratch is made from the codes in each call and
  dropped after it, so no float weight is kept anywhere. Input columns that
  are zero for the whole batch (MNIST's border: 276 of 784 pixels at batch 100)
  are dropped first, with their code rows (``nonzero_columns_kernel``,
  ``gather_expand_kernel``): a zero input adds an exact zero, so only the
  summation order changes. When columns are dropped and the input is also
  sparse inside the kept ones (at most ``SPARSE_INPUT_DENSITY`` nonzero: MNIST
  pixels, 28 % at batch 100), the layer skips BLAS, the gather and the
  expansion: ``sparse_input_product_kernel`` adds, per sample, h_i·c_i over its
  nonzero inputs only, the int8 code rows converted in registers (layer 1 of
  the 784-300 net: ~300 against ~430 µs for scan + gather + expansion + GEMM).
  Nothing float is held between calls: the one-layer scratch lives only inside
  the call, made at the first layer that needs BLAS on expanded codes, the size
  of the largest layer from there on (360,000 B for the 300 × 300 layers when
  layer 1 took the sparse-input kernel; 940,800 B when 784-300 needs it). Sitting
  16's quiet 0.86× at batch 100 was profiled (``bench/discrete_gemm_profile.py``):
  no page faults per call (0.00 in both forwards), the expansions ~25 µs a
  300 × 300 layer and ~60 µs gather + expansion for layer 1, the epilogue 55
  against float32's 45 µs a layer (its division had stayed scalar). Panels of
  64 output columns into a small reused buffer were slower (1.66 against
  1.26 ms: BLAS repacks h for every panel) and OpenBLAS then sums some
  outputs in another order, which would break the bit-identity rule below.

The sigmoid inside the kernels is ``sigmoid_poly``: exp by range reduction
and a degree-6 polynomial (Cephes ``expf``; Moshier, 1989), with 2^n built
from its bits, so the loop vectorises (a libm ``exp`` per element would cost
more than the product). Its relative error against the correctly rounded
sigmoid is below 4·10⁻⁷ (a few float32 ulp); ``sigmoid_poly_numpy`` is its
twin, bit for bit. The gemm epilogue and the columns kernel run it fused with
s·z + b in one pass per element (``_affine_activate``, 2^n bitcast in a register,
error_model="numpy" so the division vectorises); the rows kernel keeps the
two-pass in-place form (``_sigmoid_poly_inplace``); both give the twin's bits.

NumPy twin of the whole pass: ``ternary_net_forward_numpy``, the float
simulation of the same codes, s_l·(h_l @ c_l.astype(float32)) + b_l, then
f_l (with ``sigmoid_poly_numpy``). The kernels add the same terms in another
order, so per layer they agree with it to float rounding,
|Δz| ≤ 2·n_in·ε·s·Σ_i|h_i c_i| (ε = 2⁻²⁴), bit for bit when every partial
sum is exact (dyadic inputs, identity activations), which the tests check.
The gemm path makes the twin's own BLAS call on the same float32 operands when
no input column is dropped, so it is then bit for bit equal to the twin on any
input (the poly sigmoid included); when columns are dropped, BLAS blocks the
shorter sum differently, or the sparse-input kernel sums in ascending input
order, and the bound above holds (bit for bit again on dyadic inputs). The
sparse-input kernel is bit for bit its own twin, ``sparse_input_product_numpy``
(the same ascending sum), on any input.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .rbm_kernels import _int32_bits_as_float32

IDENTITY, SIGMOID, RELU = 0, 1, 2
ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "relu": RELU}

# The paths' crossovers (``bench/discrete_inference_speed.py --crossover``, under load;
# bench/README.md): rows is fastest below batch 8 on both study models; from 8 on, gemm
# on the 57.5 %-nonzero model at every batch (columns 1.6–2.9× slower), and on the
# 25 %-nonzero model gemm up to batch 32, columns from 100 (cost ∝ the nonzero codes).
# Sitting 17 (one-pass epilogues, the sparse-input layer 1; paths forced in one process,
# interleaved, under load): on the 25 % model columns against gemm 372/327 µs at batch 16,
# 424/425 at 24, 438/536 at 32, 536/736 at 48 (minima), so columns from 32 on.
#: below this batch size ``ternary_net_forward`` runs one sample at a time (rows)
GEMM_FROM_BATCH = 8
#: nets with at most ``GEMM_ABOVE_DENSITY`` nonzero codes take the columns kernel from here
COLUMNS_FROM_BATCH = 32
#: above this fraction of nonzero codes the gemm path is kept at every batch ≥ 8
GEMM_ABOVE_DENSITY = 0.35
#: inside the gemm path, a layer whose input has whole-batch-zero columns and at most this
#: fraction of nonzero entries among the kept columns takes ``sparse_input_product_kernel``
#: (MNIST pixels, 784-300 codes, one thread, under load: 1.14–1.8× faster than gather +
#: expansion + BLAS at densities 0.25–0.35 and batches 8–256; 0.85× on a random zero
#: pattern of density 0.30, 0.59× at 0.45: the crossover is near 0.3)
SPARSE_INPUT_DENSITY = 0.3
PATHS = ("auto", "rows", "columns", "gemm", "lut")

_F = np.float32
# Cephes expf: exp(t) = 2^n · p(r), n = round(t·log2 e), r = t − n·ln 2 (ln 2 split in two)
_LOG2E, _LN2_HI, _LN2_LO = _F(1.44269504088896341), _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_ROUND = _F(12582912.0)      # 1.5·2^23: (v + R) − R rounds v to an integer (|v| < 2^22)
_T_MIN = _F(-87.0)           # exp(−87) ≈ 1.6·10⁻³⁸ is still a normal float32


# -- the sigmoid: twin and kernel ---------------------------------------------------------

def sigmoid_poly_numpy(z: np.ndarray) -> np.ndarray:
    """σ(z) in float32 through the Cephes exp polynomial (the kernels' sigmoid, bit for bit).

    e = exp(−|z|) ∈ (0, 1]; σ = 1/(1 + e) for z ≥ 0, e/(1 + e) otherwise."""
    z = np.asarray(z, dtype=np.float32)
    t = np.maximum(-np.abs(z), _T_MIN)
    n = (t * _LOG2E + _ROUND) - _ROUND
    r = (t - n * _LN2_HI) - n * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    e = (p * (r * r) + r) + _F(1)
    e *= ((n.astype(np.int32) + 127) << 23).view(np.float32)      # · 2^n
    one_plus = _F(1) + e
    return np.where(z >= 0, _F(1) / one_plus, e / one_plus).astype(np.float32)


@numba.njit(cache=True, inline="always")
def _sigmoid_poly_inplace(z, bits):
    """z ← σ(z) for a contiguous float32 array, ``bits`` an int32 scratch of z's size.
    Two passes, each a plain loop that vectorises: the polynomial, then 2^n and σ."""
    ef = bits.view(np.float32)   # not used as floats before pass 2 writes them
    n_el = z.size
    for k in range(n_el):
        t = -abs(z[k])
        if t < _T_MIN:
            t = _T_MIN
        n = (t * _LOG2E + _ROUND) - _ROUND
        r = (t - n * _LN2_HI) - n * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        e = (p * (r * r) + r) + np.float32(1)
        bits[k] = (np.int32(n) + np.int32(127)) << np.int32(23)
        z[k] = -e if z[k] < 0 else e       # keep the sign of z for pass 2
    for k in range(n_el):
        v = z[k]
        e = abs(v) * ef[k]
        # one division of a selected numerator: with two divisions under a select
        # the loop stayed scalar (~3× slower under load)
        numerator = np.float32(1) if v >= 0 else e
        z[k] = numerator / (np.float32(1) + e)


@numba.njit(cache=True)
def sigmoid_poly_kernel(z, bits):
    """In place: z ← σ(z) (flat float32), through ``_sigmoid_poly_inplace``."""
    _sigmoid_poly_inplace(z, bits)


@numba.njit(cache=True, inline="always")
def _activate(z, bits, act):
    if act == SIGMOID:
        _sigmoid_poly_inplace(z, bits)
    elif act == RELU:
        for k in range(z.size):
            if not z[k] > 0:      # NaN passes unchanged, as np.maximum
                z[k] = z[k] if z[k] != z[k] else np.float32(0)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _sigmoid_poly_scalar(v):
    """σ(v) for one float32, the same operations as ``sigmoid_poly_numpy`` (so bit for bit
    its twin), in one pass: 2^n is built from its bits in a register
    (``_int32_bits_as_float32``) instead of through an int32 scratch and a second loop.
    Callers need error_model="numpy" so that the division carries no zero-divisor
    branch (1 + e ≥ 1 never is zero) and loops over it vectorise."""
    t = -abs(v)
    if t < _T_MIN:
        t = _T_MIN
    n = (t * _LOG2E + _ROUND) - _ROUND
    r = (t - n * _LN2_HI) - n * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    e = (p * (r * r) + r) + np.float32(1)
    e = e * _int32_bits_as_float32((np.int32(n) + np.int32(127)) << np.int32(23))   # · 2^n
    numerator = np.float32(1) if v >= 0 else e
    return numerator / (np.float32(1) + e)


@numba.njit(cache=True, inline="always", error_model="numpy")
def _affine_activate(v, s, b, act):
    """f(v·s + b) for one float32 (the epilogue of a layer; ``act`` as in ``_activate``)."""
    z = v * s + b
    if act == SIGMOID:
        return _sigmoid_poly_scalar(z)
    if act == RELU and not z > 0:          # NaN passes unchanged, as np.maximum
        return z if z != z else np.float32(0)
    return z


def _activate_numpy(z, act):
    if act == SIGMOID:
        return sigmoid_poly_numpy(z)
    if act == RELU:
        return np.maximum(z, np.float32(0))
    return z


# -- the plan: every layer's arrays, concatenated --------------------------------------------

@dataclass
class TernaryNetPlan:
    """A ternary net as flat arrays for the kernels.

    ``sizes`` = [n_0, …, n_L]; layer l's codes (n_l, n_{l+1}) int8, row-major, are
    ``codes[code_ptr[l]:code_ptr[l+1]]``; its scale ``scales[l]`` = g·Δ, bias
    ``bias[bias_ptr[l]:bias_ptr[l+1]]``, activation ``acts[l]`` (IDENTITY, SIGMOID,
    RELU). For the columns kernel, output j of layer l has its +1 inputs at
    ``plus_index[plus_ptr[out_ptr[l] + j] : plus_ptr[out_ptr[l] + j + 1]]`` (and
    likewise ``minus_*``), index lists ascending."""

    sizes: np.ndarray
    codes: np.ndarray
    code_ptr: np.ndarray
    scales: np.ndarray
    bias: np.ndarray
    bias_ptr: np.ndarray
    acts: np.ndarray
    out_ptr: np.ndarray
    plus_ptr: np.ndarray
    plus_index: np.ndarray
    minus_ptr: np.ndarray
    minus_index: np.ndarray

    @property
    def n_layers(self) -> int:
        return len(self.scales)

    @property
    def width(self) -> int:
        return int(self.sizes.max())

    @property
    def nonzero_fraction(self) -> float:
        """Fraction of the codes that are ±1 (the add-only kernels' work per weight)."""
        return (len(self.plus_index) + len(self.minus_index)) / max(1, len(self.codes))

    def layer_codes(self, l: int) -> np.ndarray:
        return self.codes[self.code_ptr[l]:self.code_ptr[l + 1]].reshape(
            int(self.sizes[l]), int(self.sizes[l + 1]))

    def layer_bias(self, l: int) -> np.ndarray:
        return self.bias[self.bias_ptr[l]:self.bias_ptr[l + 1]]


def ternary_net_plan(layers) -> TernaryNetPlan:
    """The plan of ``layers``: a list of (codes (in, out) in {−1, 0, 1}, scale, bias or
    None, activation name), each layer's ``in`` equal to the previous ``out``."""
    if not layers:
        raise ValueError("a ternary net needs at least one layer")
    sizes = [int(np.shape(layers[0][0])[0])]
    codes, scales, biases, acts, plus, minus = [], [], [], [], [], []
    for l, (c, scale, b, act) in enumerate(layers):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[0] != sizes[-1]:
            raise ValueError(f"layer {l}: codes of shape {c.shape} do not follow a layer of "
                             f"{sizes[-1]} outputs")
        if c.size and (c.min() < -1 or c.max() > 1):
            raise ValueError(f"layer {l}: ternary codes must be -1, 0 or 1, got values in "
                             f"[{c.min()}, {c.max()}]")
        if act not in ACTIVATIONS:
            raise ValueError(f"layer {l}: activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {act!r}")
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"layer {l}: scale g·Δ must be a finite number > 0, got {scale}")
        n_out = c.shape[1]
        b = np.zeros(n_out, np.float32) if b is None else np.asarray(b, np.float32).reshape(-1)
        if b.shape != (n_out,):
            raise ValueError(f"layer {l}: bias of shape {b.shape}, expected ({n_out},)")
        sizes.append(n_out)
        codes.append(np.ascontiguousarray(c, dtype=np.int8).ravel())
        scales.append(scale)
        biases.append(b)
        acts.append(ACTIVATIONS[act])
        for sign, store in ((1, plus), (-1, minus)):
            cols, rows = np.nonzero(c.T == sign)       # grouped by output j, rows ascending
            store.append((np.bincount(cols, minlength=n_out), rows))
    index_dtype = np.uint16 if max(sizes) <= np.iinfo(np.uint16).max else np.uint32

    def ptr(parts):
        out = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=out[1:])
        return out

    def lists(store):
        counts = np.concatenate([cnt for cnt, _ in store])
        p = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=p[1:])
        return p, np.concatenate([rows for _, rows in store]).astype(index_dtype)

    plus_ptr, plus_index = lists(plus)
    minus_ptr, minus_index = lists(minus)
    return TernaryNetPlan(
        sizes=np.array(sizes, dtype=np.int64), codes=np.concatenate(codes),
        code_ptr=ptr(codes), scales=np.array(scales, dtype=np.float32),
        bias=np.concatenate(biases), bias_ptr=ptr(biases), acts=np.array(acts, dtype=np.int64),
        out_ptr=np.concatenate([[0], np.cumsum(sizes[1:])]).astype(np.int64),
        plus_ptr=plus_ptr, plus_index=plus_index, minus_ptr=minus_ptr, minus_index=minus_index)


# -- the twin --------------------------------------------------------------------------------

def ternary_net_forward_numpy(x: np.ndarray, plan: TernaryNetPlan) -> np.ndarray:
    """The float simulation, layer by layer: f_l(s_l·(h @ c_l) + b_l), float32 throughout."""
    h = np.asarray(x, dtype=np.float32)
    for l in range(plan.n_layers):
        z = h @ plan.layer_codes(l).astype(np.float32)
        z *= plan.scales[l]
        z += plan.layer_bias(l)
        h = _activate_numpy(z, plan.acts[l])
    return h


# -- the kernels -----------------------------------------------------------------------------

@numba.njit(cache=True)
def ternary_net_rows_kernel(x, sizes, codes, code_ptr, scales, bias, bias_ptr, acts, out):
    """out[b] = the net's output for sample x[b], one sample at a time (small batches).

    Per layer: acc_j = Σ_{i: h_i ≠ 0} sel(c_ij, h_i) with sel(1, v) = v, sel(−1, v) = −v,
    sel(0, v) = 0 (a select, no multiplication), then z_j = s·acc_j + b_j, f(z)."""
    batch = x.shape[0]
    n_layers = scales.shape[0]
    width = 0
    for l in range(n_layers + 1):
        width = max(width, sizes[l])
    h = np.empty(width, dtype=np.float32)
    acc = np.empty(width, dtype=np.float32)
    bits = np.empty(width, dtype=np.int32)
    zero = np.float32(0)
    for b in range(batch):
        n_in = sizes[0]
        for i in range(n_in):
            h[i] = x[b, i]
        for l in range(n_layers):
            n_in, n_out = sizes[l], sizes[l + 1]
            base = code_ptr[l]
            for j in range(n_out):
                acc[j] = zero
            for i in range(n_in):
                hi = h[i]
                if hi == zero:
                    continue
                neg = -hi
                row = codes[base + i * n_out: base + (i + 1) * n_out]
                for j in range(n_out):
                    c = row[j]
                    acc[j] += hi if c > 0 else (neg if c < 0 else zero)
            s = scales[l]
            bb = bias_ptr[l]
            for j in range(n_out):
                acc[j] = acc[j] * s + bias[bb + j]
            _activate(acc[:n_out], bits[:n_out], acts[l])
            for j in range(n_out):
                h[j] = acc[j]
        for j in range(sizes[n_layers]):
            out[b, j] = h[j]


@numba.njit(cache=True, inline="always")
def _add_rows(acc, h_t, index, start, stop, sign):
    """acc[:] += sign · Σ_p h_t[index[p], :], four rows a pass (one acc load/store per four)."""
    batch = acc.shape[0]
    p = start
    while p + 4 <= stop:
        r0, r1 = h_t[index[p]], h_t[index[p + 1]]
        r2, r3 = h_t[index[p + 2]], h_t[index[p + 3]]
        if sign > 0:
            for k in range(batch):
                acc[k] += (r0[k] + r1[k]) + (r2[k] + r3[k])
        else:
            for k in range(batch):
                acc[k] -= (r0[k] + r1[k]) + (r2[k] + r3[k])
        p += 4
    while p < stop:
        r0 = h_t[index[p]]
        if sign > 0:
            for k in range(batch):
                acc[k] += r0[k]
        else:
            for k in range(batch):
                acc[k] -= r0[k]
        p += 1


@numba.njit(cache=True, error_model="numpy")
def ternary_net_columns_kernel(x, sizes, scales, bias, bias_ptr, acts, out_ptr,
                               plus_ptr, plus_index, minus_ptr, minus_index, out):
    """The same net on a batch kept transposed (features × batch) from the first layer
    to the last: output j of a layer is a sum of whole rows h[i, :] (length batch)."""
    batch = x.shape[0]
    n_layers = scales.shape[0]
    width = 0
    for l in range(n_layers + 1):
        width = max(width, sizes[l])
    h_t = np.empty((width, batch), dtype=np.float32)
    z_t = np.empty((width, batch), dtype=np.float32)
    for i in range(sizes[0]):            # transpose the input once
        for b in range(batch):
            h_t[i, b] = x[b, i]
    for l in range(n_layers):
        n_out = sizes[l + 1]
        s = scales[l]
        for j in range(n_out):
            acc = z_t[j]
            acc[:] = 0
            q = out_ptr[l] + j
            _add_rows(acc, h_t, plus_index, plus_ptr[q], plus_ptr[q + 1], 1)
            _add_rows(acc, h_t, minus_index, minus_ptr[q], minus_ptr[q + 1], -1)
            bj = bias[bias_ptr[l] + j]
            act = acts[l]
            for b in range(batch):          # the epilogue while acc is in L1 (one pass)
                acc[b] = _affine_activate(acc[b], s, bj, act)
        h_t, z_t = z_t, h_t
    for b in range(batch):
        for j in range(sizes[n_layers]):
            out[b, j] = h_t[j, b]


# -- the gemm path: codes expanded per layer, one BLAS product, a fused epilogue -------------

@numba.njit(cache=True)
def nonzero_columns_kernel(h, keep):
    """Write into ``keep`` the indices of the columns of h (batch ≥ 1, n) that hold
    any nonzero (NaN counts as nonzero); return (how many, the number of nonzero
    entries of h). Row by row (contiguous, the OR vectorises; a column-by-column scan
    with an early exit was 4× slower on MNIST), and when the first row has no zero (a
    sigmoid layer's output) that row decides: no column is dropped, and the entry
    count returned is then batch·n without a look at the other rows."""
    batch, n = h.shape
    nonzero = np.empty(n, dtype=np.bool_)
    count = 0
    first = h[0]
    for i in range(n):
        nonzero[i] = first[i] != 0
        count += nonzero[i]
    entries = batch * n
    if count < n:
        entries = count
        for b in range(1, batch):
            row = h[b]
            for i in range(n):
                nz = row[i] != 0
                nonzero[i] |= nz
                entries += nz
    count = 0
    for i in range(n):
        if nonzero[i]:
            keep[count] = i
            count += 1
    return count, entries


def nonzero_columns_numpy(h: np.ndarray):
    """Twin of ``nonzero_columns_kernel``: (the columns of h with any nonzero, the
    number of nonzero entries, or batch·n when the first row has no zero)."""
    nonzero = h != 0
    entries = h.size if nonzero[0].all() else int(nonzero.sum())
    return np.flatnonzero(nonzero.any(axis=0)), entries


@numba.njit(cache=True)
def gather_expand_kernel(h, codes, keep, h_kept, w):
    """h_kept[:, r] = h[:, keep[r]] and w[r, :] = float32(codes[keep[r], :]) for
    r < len(keep): the kept input columns and their code rows, expanded exactly."""
    n_keep = keep.shape[0]
    n_out = codes.shape[1]
    for r in range(n_keep):
        row = codes[keep[r]]
        dst = w[r]
        for j in range(n_out):
            dst[j] = np.float32(row[j])
    for b in range(h.shape[0]):
        src = h[b]
        dst = h_kept[b]
        for r in range(n_keep):
            dst[r] = src[keep[r]]


@numba.njit(cache=True)
def expand_codes_kernel(codes, w):
    """w[k] = float32(codes[k]) (flat): the int8 → float32 expansion, exact."""
    for k in range(codes.shape[0]):
        w[k] = np.float32(codes[k])


def gather_expand_numpy(h, codes, keep):
    """Twin of ``gather_expand_kernel``: (h[:, keep], codes[keep] as float32)."""
    return h[:, keep], codes[keep].astype(np.float32)


@numba.njit(cache=True, error_model="numpy")
def scale_bias_activate_kernel(z, s, bias, act):
    """In place on z (batch, n_out) C-contiguous: z ← f(z·s + b) in one pass that
    vectorises (``_affine_activate``: the affine step and the one-pass poly sigmoid
    fused; ~35 against ~52 µs for the two passes it replaced on a (100, 300) batch,
    one thread, interleaved, under load). The same operations as the twin, bit for bit."""
    batch, n_out = z.shape
    for b in range(batch):
        row = z[b]
        for j in range(n_out):
            row[j] = _affine_activate(row[j], s, bias[j], act)


def scale_bias_activate_numpy(z, s, bias, act):
    """Twin of ``scale_bias_activate_kernel`` (the twin forward's own steps)."""
    z = z * np.float32(s)
    z += bias
    return _activate_numpy(z, act)


# fastmath "contract" lets LLVM fuse acc + h·c into an FMA: h·c with c ∈ {−1, 0, 1} is
# exact in float32, so the fused and the separate forms round the same sum and give
# the same bits (the test holds the kernel to its twin bit for bit on any input)
@numba.njit(cache=True, error_model="numpy", fastmath={"contract"})
def sparse_input_product_kernel(h, codes, z, index):
    """z[b, :] = Σ_{i: h[b, i] ≠ 0} h[b, i]·c[i, :] for h (batch, n_in) float32 and int8
    codes c (n_in, n_out), summed in ascending i: per sample, only its nonzero inputs
    (``index``: int64 scratch of n_in), their code rows converted to float32 in
    registers (no expanded copy, no gather), four inputs a pass over the accumulator
    row (one load and store of it per four; 304 against 326 µs for ((t₀ + t₁) + (t₂ +
    t₃)) and 347 for eight a pass, MNIST batch 100, 784-300, under load). NaN and ±inf
    inputs are nonzero and reach every output, as in BLAS. Twin:
    ``sparse_input_product_numpy``."""
    batch, n_in = h.shape
    n_out = codes.shape[1]
    zero = np.float32(0)
    for b in range(batch):
        acc = z[b]
        for j in range(n_out):
            acc[j] = zero
        hb = h[b]
        m = 0
        for i in range(n_in):
            if hb[i] != zero:
                index[m] = i
                m += 1
        p = 0
        while p + 4 <= m:
            i0, i1, i2, i3 = index[p], index[p + 1], index[p + 2], index[p + 3]
            h0, h1, h2, h3 = hb[i0], hb[i1], hb[i2], hb[i3]
            r0, r1, r2, r3 = codes[i0], codes[i1], codes[i2], codes[i3]
            for j in range(n_out):
                a = acc[j] + h0 * np.float32(r0[j])
                a = a + h1 * np.float32(r1[j])
                a = a + h2 * np.float32(r2[j])
                acc[j] = a + h3 * np.float32(r3[j])
            p += 4
        while p < m:
            i0 = index[p]
            h0, r0 = hb[i0], codes[i0]
            for j in range(n_out):
                acc[j] += h0 * np.float32(r0[j])
            p += 1


def sparse_input_product_numpy(h: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Twin of ``sparse_input_product_kernel``: the same sums in the same order, the
    nonzero inputs of each sample added one by one in ascending i (vectorised over the
    outputs)."""
    h = np.asarray(h, dtype=np.float32)
    c = codes.astype(np.float32)
    z = np.zeros((h.shape[0], c.shape[1]), dtype=np.float32)
    with np.errstate(invalid="ignore"):               # inf·0 = NaN, as in the kernel
        for b in range(h.shape[0]):
            for i in np.flatnonzero(h[b] != 0):
                z[b] += h[b, i] * c[i]                # h_i·c_i is exact
    return z


def ternary_net_gemm_forward(x: np.ndarray, plan: TernaryNetPlan) -> np.ndarray:
    """The net's output for x (batch, n_0) float32 C-contiguous, layer by layer: find
    the all-zero input columns; if some are and the input is sparse (at most
    ``SPARSE_INPUT_DENSITY`` of the kept entries nonzero: MNIST pixels), z from the
    codes directly (``sparse_input_product_kernel``); otherwise drop those columns,
    expand the kept code rows into a float32 scratch of one layer, z = h @ c (BLAS).
    Then z ← f(s·z + b) in one pass."""
    h = x
    batch = x.shape[0]
    if batch == 0:
        return np.empty((0, int(plan.sizes[-1])), dtype=np.float32)
    scratch = None
    keep = np.empty(plan.width, dtype=np.int64)
    for l in range(plan.n_layers):
        n_in, n_out = int(plan.sizes[l]), int(plan.sizes[l + 1])
        codes = plan.layer_codes(l)
        n_keep, entries = nonzero_columns_kernel(h, keep)
        z = np.empty((batch, n_out), dtype=np.float32)
        if n_keep < n_in and entries <= SPARSE_INPUT_DENSITY * batch * n_keep:
            sparse_input_product_kernel(h, codes, z, keep)      # keep: free as scratch now
        else:
            if scratch is None:      # the largest of this and the later layers only
                scratch = np.empty(max(int(plan.sizes[k] * plan.sizes[k + 1])
                                       for k in range(l, plan.n_layers)), dtype=np.float32)
            w = scratch[:n_keep * n_out].reshape(n_keep, n_out)
            if n_keep == n_in:
                h_kept = h
                expand_codes_kernel(plan.codes[plan.code_ptr[l]:plan.code_ptr[l + 1]], scratch)
            else:
                h_kept = np.empty((batch, n_keep), dtype=np.float32)
                gather_expand_kernel(h, codes, keep[:n_keep], h_kept, w)
            np.matmul(h_kept, w, out=z)
        scale_bias_activate_kernel(z, plan.scales[l], plan.layer_bias(l), plan.acts[l])
        h = z
    return h


# -- public ------------------------------------------------------------------------------------

def choose_path(batch: int, plan: TernaryNetPlan) -> str:
    """The path ``ternary_net_forward(path="auto")`` takes: lut below
    ``ternary_lut.LUT_BELOW_BATCH`` where the CPU has AVX2, else rows below
    ``GEMM_FROM_BATCH``; then gemm, except for sparse codes (nonzero fraction
    ≤ ``GEMM_ABOVE_DENSITY``) from ``COLUMNS_FROM_BATCH`` on, which take columns."""
    if batch < ternary_lut.LUT_BELOW_BATCH and ternary_lut.LUT_AVAILABLE:
        return "lut"
    if batch < GEMM_FROM_BATCH:
        return "rows"
    if batch >= COLUMNS_FROM_BATCH and plan.nonzero_fraction <= GEMM_ABOVE_DENSITY:
        return "columns"
    return "gemm"


def ternary_net_forward(x: np.ndarray, plan: TernaryNetPlan, path: str = "auto") -> np.ndarray:
    """The net's output for x (batch, n_0) → (batch, n_L) float32. ``path``: "auto"
    (``choose_path``), or force "rows", "columns", "lut" (one kernel call each) or "gemm"."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    x = np.asarray(x)
    n0 = int(plan.sizes[0])
    if x.ndim != 2 or x.shape[1] != n0:
        raise ValueError(f"ternary_net_forward expects x of shape (batch, {n0}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[0] == 0:
        return np.empty((0, int(plan.sizes[-1])), dtype=np.float32)
    if path == "auto":
        path = choose_path(x.shape[0], plan)
    if path == "gemm":
        return ternary_net_gemm_forward(x, plan)
    if path == "lut":
        if not ternary_lut.LUT_AVAILABLE:
            return ternary_lut.lut_net_forward(x, plan)         # raises: no AVX2
        return ternary_lut.lut_net_forward_checked(x, ternary_lut.lut_plan_for(plan))
    out = np.empty((x.shape[0], int(plan.sizes[-1])), dtype=np.float32)
    if path == "rows":
        ternary_net_rows_kernel(x, plan.sizes, plan.codes, plan.code_ptr, plan.scales,
                                plan.bias, plan.bias_ptr, plan.acts, out)
    else:
        ternary_net_columns_kernel(x, plan.sizes, plan.scales, plan.bias, plan.bias_ptr,
                                   plan.acts, plan.out_ptr, plan.plus_ptr, plan.plus_index,
                                   plan.minus_ptr, plan.minus_index, out)
    return out


# at the end: ternary_lut imports this module's activations (either may be imported first)
from . import ternary_lut  # noqa: E402
