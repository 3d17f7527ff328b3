"""Small-batch forward of a net on power-of-two grids by subset-sum tables (technique 1).

Each layer computes z_j = s · Σ_i c_ij h_i + b_j, h' = f(z), with integer codes c
(ternary: c ∈ {−1, 0, 1}; Δ = 2^−k: |c| ≤ 2^k) and s = g·Δ. At batch 1 a float32
forward is a matrix–vector product that streams every float32 weight; the rows
kernel of ``ternary_net`` streams the int8 codes but spends about one vector
instruction per weight on the select. Here the work per weight is cut by a table
of partial sums, with additions only:

* **tables** (per sample and layer): the inputs are taken three at a time,
  (h_3g, h_3g+1, h_3g+2), and the 8 subset sums T_g[m] = Σ_{k: bit k of m} h_3g+k
  are formed (T_g[0] = 0, T_g[7] = (h_3g + h_3g+1) + h_3g+2): 4 additions a group.
* **codes as bytes** (built once, when the plan is made): for output j and group g
  one byte holds two 3-bit masks, p (the inputs of the group whose code is +1) in
  bits 0–2 and m (code −1) in bits 3–5, so that Σ_{k<3} c_3g+k,j h_3g+k = T_g[p] − T_g[m].
  For |c| > 1 (Δ = 2^−k) the codes are split into bit planes, c = Σ_q 2^q c^(q) with
  c^(q) ∈ {−1, 0, 1} (the q-th bit of |c|, signed), one byte array per plane, and the
  planes are combined by Horner's rule with doublings, z ← (z + z) + acc_q (exact).
* **the kernel** (``lut_net_kernel``): acc_j = Σ_g (T_g[p_gj] − T_g[m_gj]), 8 outputs
  at a time: the 8 bytes of a group are widened to 32 bits, and AVX2's ``vpermps``
  (one instruction) looks up T_g for 8 outputs at once (its index is the low three
  bits, so the byte itself indexes p and the byte >> 3 indexes m). Per 3 inputs and
  8 outputs: one load, a shift, two lookups, a subtraction and an addition, where the
  select takes ~27 instructions for the same 24 weights. ``vpermps`` is not reachable
  from Numba's Python, so ``_lut3_layer`` emits the loop as LLVM IR (``numba.extending.intrinsic``).
  Groups whose three inputs are all zero (MNIST's background) are skipped: their
  T_g is all zeros, and acc + (0 − 0) = acc, so skipping changes no bit.
* the epilogue z·s + b and f (the ``ternary_net`` sigmoid, ``sigmoid_poly``) as in
  the other paths; batch > 1 runs sample by sample (``choose_path`` takes it below
  ``LUT_BELOW_BATCH`` = 16, where it beats the gemm path).

Memory the plan holds beyond the model's stored weights: one byte per (group of 3
inputs, output padded to a multiple of 16, bit plane), ≈ 2.7 bits per weight and
plane. For 784-300-300-300-300-10 that is 172,448 B (the 2-bit packed codes the file
stores: 127,050 B; float32: 2,032,800 B). The plan references the biases and scales of
the ``TernaryNetPlan`` it is built from and copies nothing else.

Needs AVX2 (``LUT_AVAILABLE``; checked against Numba's target: the host CPU, or
``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when set); without it ``choose_path``
keeps the rows kernel. The NumPy twin, ``lut_net_forward_numpy``, does the same
additions in the same order and is equal to the kernel bit for bit.

Tolerance against the float simulation s·(h @ c) + b (``float_simulation_numpy``):
the same terms are added in another order. In the kernel each term 2^q h_i passes
through at most N = 2 (table) + 1 (T[p] − T[m]) + G (groups) + (Q − 1) (planes)
roundings, in the simulation through at most n_in (+1 for the product when |c| is
not a power of two), so per output, before the scale,
|Δacc| ≤ (γ_N + γ_{n_in+1})·Σ_i |h_i||c_i| (ε = 2⁻²⁴, γ_n = nε/(1 − nε),
G = ⌈n_in/3⌉), which is ≤ 2·n_in·ε·Σ_i |h_i||c_i| once n_in ≥ 3(Q + 3), and bit for bit when every partial sum is exact
(dyadic inputs and biases, identity activations). The tests check both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import avx2_target
from .ternary_net import ACTIVATIONS, _activate, _activate_numpy

GROUP = 3           # inputs per table: 2^3 = 8 entries, one AVX2 register of float32
BLOCK = 16          # outputs padded to a multiple of this (passes of 32, the last one 16)


_avx2_target = avx2_target   # kept under its old name (tests, callers)


#: ``choose_path`` takes the lut path below this batch size. Its cost grows with the batch
#: (one pass a sample) where BLAS's does not: in one-process paired A/Bs at 1 thread, under
#: load (``bench/discrete_inference_speed.py --ab --paths lut gemm rows``), float32 time
#: over lut / over gemm on the two study models was 2.4–2.5× / 1.4× at batch 8, 1.6–1.7× /
#: 1.3× at 16 and 1.3–1.4× / 1.3× at 24
LUT_BELOW_BATCH = 16

#: the lut path runs only where this is True (otherwise ``choose_path`` keeps "rows")
LUT_AVAILABLE = _avx2_target()


# -- the plan -------------------------------------------------------------------------------------

@dataclass
class LutPlan:
    """A net on power-of-two grids as subset-sum code bytes for ``lut_net_kernel``.

    ``sizes`` = [n_0, …, n_L]; layer l has G_l = ⌈n_l/3⌉ groups, n_{l+1} outputs padded
    to P_l (a multiple of 16) and planes ``plane_ptr[l] … plane_ptr[l+1] − 1`` (most
    significant first); plane q's bytes, (G_l, P_l) row-major, start at ``idx[idx_ptr[q]]``.
    ``scales`` (g·Δ), ``bias``/``bias_ptr`` and ``acts`` as in ``TernaryNetPlan``."""

    sizes: np.ndarray
    plane_ptr: np.ndarray
    idx_ptr: np.ndarray
    idx: np.ndarray
    scales: np.ndarray
    bias: np.ndarray
    bias_ptr: np.ndarray
    acts: np.ndarray

    @property
    def n_layers(self) -> int:
        return len(self.scales)

    @property
    def nbytes(self) -> int:
        """Bytes of the code tables the plan adds to the model's own arrays."""
        return int(self.idx.nbytes + self.idx_ptr.nbytes + self.plane_ptr.nbytes)


def _padded(n_out: int) -> int:
    return -(-n_out // BLOCK) * BLOCK


def code_bytes(codes: np.ndarray) -> list[np.ndarray]:
    """The byte planes of one layer's integer codes (n_in, n_out), most significant
    plane first: plane q, (⌈n_in/3⌉, P) uint8, byte = p | m << 3 with bit k of p set
    where c_{3g+k, j} > 0 and bit q of |c| is 1 (m likewise for c < 0)."""
    codes = np.asarray(codes)
    n_in, n_out = codes.shape
    n_groups, padded = -(-n_in // GROUP), _padded(n_out)
    c = np.zeros((n_groups * GROUP, padded), dtype=np.int16)
    c[:n_in, :n_out] = codes
    magnitude = np.abs(c)
    n_planes = max(1, int(magnitude.max(initial=0)).bit_length())
    weight = (1 << np.arange(GROUP, dtype=np.uint8))[None, :, None]
    planes = []
    for q in range(n_planes - 1, -1, -1):
        bit = (magnitude >> q) & 1
        p = ((bit * (c > 0)).reshape(n_groups, GROUP, padded) * weight).sum(1)
        m = ((bit * (c < 0)).reshape(n_groups, GROUP, padded) * weight).sum(1)
        planes.append((p | (m << GROUP)).astype(np.uint8))
    return planes


def lut_plan(layers) -> LutPlan:
    """The plan of ``layers``: (integer codes (in, out) with |c| ≤ 127, scale g·Δ,
    bias or None, activation name) each, ``in`` equal to the previous ``out``."""
    if not layers:
        raise ValueError("a net needs at least one layer")
    sizes = [int(np.shape(layers[0][0])[0])]
    planes, plane_ptr, scales, biases, acts = [], [0], [], [], []
    for l, (c, scale, b, act) in enumerate(layers):
        c = np.asarray(c)
        if c.ndim != 2 or c.shape[0] != sizes[-1]:
            raise ValueError(f"layer {l}: codes of shape {c.shape} do not follow a layer of "
                             f"{sizes[-1]} outputs")
        if c.dtype.kind not in "iu" or (c.size and np.abs(c.astype(np.int64)).max() > 127):
            raise ValueError(f"layer {l}: codes must be integers with |c| <= 127, got "
                             f"{c.dtype} in [{c.min() if c.size else 0}, "
                             f"{c.max() if c.size else 0}]")
        if act not in ACTIVATIONS:
            raise ValueError(f"layer {l}: activation must be one of {sorted(ACTIVATIONS)}, "
                             f"got {act!r}")
        if not np.isfinite(scale) or scale <= 0:
            raise ValueError(f"layer {l}: scale g·Δ must be a finite number > 0, got {scale}")
        n_out = c.shape[1]
        b = np.zeros(n_out, np.float32) if b is None else np.asarray(b, np.float32).reshape(-1)
        if b.shape != (n_out,):
            raise ValueError(f"layer {l}: bias of shape {b.shape}, expected ({n_out},)")
        layer_planes = code_bytes(c)
        planes += layer_planes
        plane_ptr.append(plane_ptr[-1] + len(layer_planes))
        sizes.append(n_out)
        scales.append(scale)
        biases.append(b)
        acts.append(ACTIVATIONS[act])
    return _make_plan(sizes, planes, plane_ptr, np.array(scales, np.float32),
                      np.concatenate(biases), np.cumsum([0] + [len(b) for b in biases]),
                      np.array(acts, np.int64))


def _make_plan(sizes, planes, plane_ptr, scales, bias, bias_ptr, acts) -> LutPlan:
    idx_ptr = np.zeros(len(planes), dtype=np.int64)
    np.cumsum([p.size for p in planes[:-1]], out=idx_ptr[1:])
    return LutPlan(sizes=np.array(sizes, np.int64), plane_ptr=np.array(plane_ptr, np.int64),
                   idx_ptr=idx_ptr, idx=np.concatenate([p.ravel() for p in planes]),
                   scales=scales, bias=bias, bias_ptr=np.asarray(bias_ptr, np.int64), acts=acts)


def lut_plan_for(plan) -> LutPlan:
    """The ``LutPlan`` of a ``ternary_net.TernaryNetPlan``, built from its codes on the
    first call and kept on it (it shares the plan's biases, scales and activations)."""
    lut = plan.__dict__.get("_lut_plan")
    if lut is None:
        planes, plane_ptr = [], [0]
        for l in range(plan.n_layers):
            layer_planes = code_bytes(plan.layer_codes(l))
            planes += layer_planes
            plane_ptr.append(plane_ptr[-1] + len(layer_planes))
        lut = _make_plan(plan.sizes, planes, plane_ptr, plan.scales, plan.bias,
                         plan.bias_ptr, plan.acts)
        plan.__dict__["_lut_plan"] = lut
    return lut


# -- the twins ------------------------------------------------------------------------------------

def float_simulation_numpy(x: np.ndarray, layers) -> np.ndarray:
    """The float simulation of ``layers`` (as for ``lut_plan``): f(s·(h @ c) + b) in
    float32, layer by layer (BLAS order): the reference the tolerance is stated against."""
    h = np.asarray(x, dtype=np.float32)
    for c, scale, b, act in layers:
        z = h @ np.asarray(c).astype(np.float32)
        z *= np.float32(scale)
        if b is not None:
            z += np.asarray(b, np.float32)
        h = _activate_numpy(z, ACTIVATIONS[act])
    return h


def subset_sum_tables_numpy(h: np.ndarray) -> np.ndarray:
    """T (batch, ⌈n/3⌉, 8): T[:, g, m] = Σ_{k: bit k of m} h[:, 3g + k], in the kernel's
    order (h0 + h1, h0 + h2, h1 + h2, (h0 + h1) + h2)."""
    batch, n = h.shape
    n_groups = -(-n // GROUP)
    hp = np.zeros((batch, n_groups * GROUP), np.float32)
    hp[:, :n] = h
    h0, h1, h2 = hp[:, 0::3], hp[:, 1::3], hp[:, 2::3]
    t = np.empty((batch, n_groups, 8), np.float32)
    t[..., 0] = 0
    t[..., 1], t[..., 2], t[..., 3] = h0, h1, h0 + h1
    t[..., 4], t[..., 5], t[..., 6], t[..., 7] = h2, h0 + h2, h1 + h2, (h0 + h1) + h2
    return t


def lut_net_forward_numpy(x: np.ndarray, plan: LutPlan) -> np.ndarray:
    """Twin of ``lut_net_kernel``, the same additions in the same order: per layer,
    for each plane acc = Σ_g (T_g[byte & 7] − T_g[byte >> 3]) (groups in order), planes
    combined by z ← (z + z) + acc, then f(z·s + b)."""
    h = np.asarray(x, dtype=np.float32)
    batch = h.shape[0]
    rows = np.arange(batch)[:, None]
    for l in range(plan.n_layers):
        n_in, n_out = int(plan.sizes[l]), int(plan.sizes[l + 1])
        n_groups, padded = -(-n_in // GROUP), _padded(n_out)
        t = subset_sum_tables_numpy(h)
        z = None
        for q in range(plan.plane_ptr[l], plan.plane_ptr[l + 1]):
            start = plan.idx_ptr[q]
            idx = plan.idx[start:start + n_groups * padded].reshape(n_groups, padded)
            acc = np.zeros((batch, padded), np.float32)
            for g in range(n_groups):
                tg = t[:, g, :]
                acc = acc + (tg[rows, idx[g] & 7] - tg[rows, idx[g] >> 3])
            z = acc if z is None else (z + z) + acc
        z = z[:, :n_out] * plan.scales[l]
        z = z + plan.bias[plan.bias_ptr[l]:plan.bias_ptr[l + 1]]
        h = _activate_numpy(z.astype(np.float32), plan.acts[l])
    return h


# -- the kernel -----------------------------------------------------------------------------------

@intrinsic
def _lut3_layer(typingctx, out, idx, tab, groups, start, n_active, padded):
    """out[j] = Σ_{a < n_active} (T_g[p] − T_g[m]) for j < padded (a multiple of 16),
    g = groups[a], T_g = tab[8g : 8g + 8], byte = idx[start + g·padded + j]: 32 outputs
    a pass with four 8-lane accumulators held in registers (the last 16 with two); T_g[·] for 8 outputs is one
    ``vpermps`` (llvm.x86.avx2.permps; it reads the low 3 bits of each index lane)."""
    sig = types.void(out, idx, tab, groups, start, n_active, padded)

    def codegen(context, builder, signature, args):
        out_a, idx_a, tab_a, grp_a, start_v, n_active_v, padded_v = args
        data = [context.make_array(t)(context, builder, v).data
                for t, v in zip(signature.args[:4], (out_a, idx_a, tab_a, grp_a))]
        out_p, idx_p, tab_p, grp_p = data
        f32, i32, i8, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(8), ir.IntType(64)
        v8f, v8i, v8b = ir.VectorType(f32, 8), ir.VectorType(i32, 8), ir.VectorType(i8, 8)
        permps = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(v8f, [v8f, v8i]), "llvm.x86.avx2.permps")
        zero = ir.Constant(v8f, [0.0] * 8)
        shift = ir.Constant(v8i, [GROUP] * 8)

        def vec_ptr(base, offset, ty):
            return builder.bitcast(builder.gep(base, [offset]), ty.as_pointer())

        def passes(n_regs, first, count):
            """``count`` passes of 8·n_regs outputs from output ``first``; each
            output still adds its groups in order (the twin's order)."""
            accs = [cgutils.alloca_once(builder, v8f) for _ in range(n_regs)]  # → registers
            with cgutils.for_range(builder, count) as outer:
                j = builder.add(first, builder.mul(outer.index, ir.Constant(i64, 8 * n_regs)))
                for acc in accs:
                    builder.store(zero, acc)
                with cgutils.for_range(builder, n_active_v) as inner:
                    g = builder.load(builder.gep(grp_p, [inner.index]))
                    t = builder.load(vec_ptr(tab_p, builder.mul(g, ir.Constant(i64, 8)), v8f),
                                     align=4)
                    at = builder.add(builder.add(start_v, builder.mul(g, padded_v)), j)
                    for r, acc in enumerate(accs):
                        byte = builder.load(vec_ptr(idx_p, builder.add(at, ir.Constant(i64, 8 * r)),
                                                    v8b), align=1)
                        wide = builder.zext(byte, v8i)
                        plus = builder.call(permps, [t, wide])
                        minus = builder.call(permps, [t, builder.lshr(wide, shift)])
                        builder.store(builder.fadd(builder.load(acc), builder.fsub(plus, minus)),
                                      acc)
                for r, acc in enumerate(accs):
                    builder.store(builder.load(acc),
                                  vec_ptr(out_p, builder.add(j, ir.Constant(i64, 8 * r)), v8f),
                                  align=4)

        # 32 outputs a pass (four independent accumulator chains hide the add latency),
        # then the last 16 when the padded width is an odd multiple of 16
        n_wide = builder.udiv(padded_v, ir.Constant(i64, 2 * BLOCK))
        passes(4, ir.Constant(i64, 0), n_wide)
        passes(2, builder.mul(n_wide, ir.Constant(i64, 2 * BLOCK)),
               builder.udiv(builder.urem(padded_v, ir.Constant(i64, 2 * BLOCK)),
                            ir.Constant(i64, BLOCK)))
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(cache=True)
def lut_net_kernel(x, sizes, plane_ptr, idx_ptr, idx, scales, bias, bias_ptr, acts, out):
    """out[b] = the net's output for sample x[b] (batch, n_0) float32, one sample at a
    time: per layer the subset-sum tables of the nonzero groups, ``_lut3_layer`` per
    plane, planes by z ← (z + z) + acc, then z·s + b and f in place. AVX2 only."""
    batch = x.shape[0]
    n_layers = scales.shape[0]
    width = 0
    for l in range(n_layers + 1):
        width = max(width, sizes[l])
    max_groups = (width + GROUP - 1) // GROUP
    max_padded = (width + BLOCK - 1) // BLOCK * BLOCK
    h = np.zeros(max_groups * GROUP, dtype=np.float32)
    z = np.empty(max_padded, dtype=np.float32)
    acc = np.empty(max_padded, dtype=np.float32)
    bits = np.empty(width, dtype=np.int32)
    tab = np.empty(max_groups * 8, dtype=np.float32)
    groups = np.empty(max_groups, dtype=np.int64)
    zero = np.float32(0)
    for b in range(batch):
        for i in range(sizes[0]):
            h[i] = x[b, i]
        for l in range(n_layers):
            n_in, n_out = sizes[l], sizes[l + 1]
            n_groups = (n_in + GROUP - 1) // GROUP
            padded = (n_out + BLOCK - 1) // BLOCK * BLOCK
            for i in range(n_in, n_groups * GROUP):
                h[i] = zero
            n_active = 0
            for g in range(n_groups):
                h0, h1, h2 = h[3 * g], h[3 * g + 1], h[3 * g + 2]
                if h0 != zero or h1 != zero or h2 != zero:     # NaN counts as nonzero
                    k = 8 * g
                    tab[k] = zero
                    tab[k + 1] = h0
                    tab[k + 2] = h1
                    tab[k + 3] = h0 + h1
                    tab[k + 4] = h2
                    tab[k + 5] = h0 + h2
                    tab[k + 6] = h1 + h2
                    tab[k + 7] = (h0 + h1) + h2
                    groups[n_active] = g
                    n_active += 1
            first = plane_ptr[l]
            _lut3_layer(z, idx, tab, groups, idx_ptr[first], n_active, padded)
            for q in range(first + 1, plane_ptr[l + 1]):
                _lut3_layer(acc, idx, tab, groups, idx_ptr[q], n_active, padded)
                for j in range(n_out):
                    z[j] = (z[j] + z[j]) + acc[j]
            s = scales[l]
            bb = bias_ptr[l]
            for j in range(n_out):
                z[j] = z[j] * s + bias[bb + j]
            _activate(z[:n_out], bits[:n_out], acts[l])
            for j in range(n_out):
                h[j] = z[j]
        for j in range(sizes[n_layers]):
            out[b, j] = h[j]


def lut_net_forward(x: np.ndarray, plan: LutPlan) -> np.ndarray:
    """The net's output for x (batch, n_0) → (batch, n_L) float32 through ``lut_net_kernel``."""
    if not LUT_AVAILABLE:
        raise RuntimeError("the lut path needs AVX2 (vpermps), which Numba's target CPU "
                           "lacks; use path='rows'")
    x = np.asarray(x)
    n0 = int(plan.sizes[0])
    if x.ndim != 2 or x.shape[1] != n0:
        raise ValueError(f"lut_net_forward expects x of shape (batch, {n0}), got {x.shape}")
    return lut_net_forward_checked(np.ascontiguousarray(x, dtype=np.float32), plan)


def lut_net_forward_checked(x: np.ndarray, plan: LutPlan) -> np.ndarray:
    """``lut_net_forward`` for a caller that has checked x (C-contiguous float32 of the
    plan's input width) and ``LUT_AVAILABLE`` (``ternary_net.ternary_net_forward``):
    at batch 1 the checks are a few µs of a ~20 µs call."""
    out = np.empty((x.shape[0], plan.sizes[-1]), dtype=np.float32)
    if x.shape[0]:
        lut_net_kernel(x, plan.sizes, plan.plane_ptr, plan.idx_ptr, plan.idx, plan.scales,
                       plan.bias, plan.bias_ptr, plan.acts, out)
    return out
