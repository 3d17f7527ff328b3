"""Training kernels of max and average pooling (NCHW).

Geometry is that of ``layers.pooling``: window (a, b) of kernel (kh, kw), stride
(sh, sw), padding (ph, pw) covers input rows [a·sh - ph, a·sh - ph + kh) and
columns [b·sw - pw, b·sw - pw + kw), clipped to the input; ``geometry`` is the
tuple (kh, kw, sh, sw, ph, pw, OH, OW).

**Max pooling, separable.** The max over a kh×kw window is the max down kh row
maxima, each over kw columns: a pass along each input row (the kw-wide maxima of
every window's column range and their column offsets, per plane in an L1
scratch) then a pass down the rows of that scratch. For Cifar10_quick's 3×3/2
pool each input row's maxima serve two output rows, so a window costs ~5
comparisons instead of 8. The compares are strict >, so ties go to the first
maximum in row-major window order (the row pass keeps the first in each row, the
column pass the first row), ``np.argmax``'s rule; a NaN flag is ORed over every
value read, and where it is set the layer reruns ``layers.pooling``'s exact
first-NaN-wins kernel (see the comment above the kernels for why).

The 2×2/2 pool without padding whose windows are whole (LeNet's, VGG's) skips the
passes: ``_maxpool2x2_plane`` compares each window's four values in row-major order
with the same strict > (the same values, offsets and NaN flag) and writes them once
(sitting 22: LeNet's pool1 kernel 1.6 → 0.34 ms, pool2 1.06 → 0.25 ms, one thread,
under load, ``python bench/conv_pool2x2_ab.py``).

The argmax is kept as the window offset i·kw + j (uint8, 4× less memory than a
flat int32 index; windows of at most ``MAX_WINDOW`` elements):

    y[a, b] = max over window (a, b)
    dx[h, w] = Σ over windows whose offset points at (h, w) of dy[a, b]

The backward zeroes each dx plane just before its gradients go in (in L1 then;
no whole-buffer ``np.zeros``) and adds them in (a, b) order, the order of the
twin's ``np.add.at``: the same bits.

**Average pooling, separable, forward**: row sums, then sums down the rows, / the
window size clipped to the padded input. ``AvgPool2D``'s backward is the per-window
scatter of ``layers.pooling`` (the separable backward was slower under load: 4.2 vs
3.3 ms on Cifar10_quick's pool2), except for 3×3/2 without padding on even widths
(Cifar10_quick's), where a gather adds the same shares in the same order.

**3×3/2 without padding on even widths** (sitting 24) runs as flat loops over each
plane (``_maxpool3x3s2_plane``, ``_avgpool3x3s2_plane``): Numba vectorises a loop only
when its indices are provably non-negative (else each load is a gather) and pays run-time
alias checks each time a loop starts, which on 16-wide rows cost more than the work.

(Until sitting 23 these kernels also took a ``relu`` flag, for the ReLU fused into
the pool beside it, ``layers.fusion.FUSE_PAIRS``; that pair fusion tied its quiet
A/Bs and was deleted with the flag and the separable backward only it used.)

Each kernel has its NumPy twin here (``*_numpy``), which defines it; the twins
are ``layers.pooling``'s twins in the kernels' form.
"""
from __future__ import annotations

import numba
import numpy as np

#: largest kh·kw whose offsets (0 .. kh·kw - 1) fit a uint8 (255 itself was reserved
#: for the deleted fused ReLU's "route nothing"); larger windows keep the flat int32
#: argmax of ``layers.pooling``
MAX_WINDOW = 255


# -- NumPy twins: the definition ------------------------------------------------------
def maxpool_offsets_numpy(x, geometry):
    """(y, offsets): the max over each window and the window offset i·kw + j of its
    first maximum (first NaN), uint8."""
    from ..layers.pooling import maxpool_forward_numpy
    out, argmax = maxpool_forward_numpy(x, geometry)
    return out, offsets_from_argmax(argmax, geometry, x.shape[3])


def maxpool_offsets_backward_numpy(grad, offsets, geometry, x_shape):
    """dx: each dy[a, b] added at its window's offset."""
    from ..layers.pooling import maxpool_backward_numpy
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    W = x_shape[3]
    k = offsets.astype(np.int64)
    rows = (np.arange(OH) * sh - ph).reshape(-1, 1) + k // kw
    cols = np.arange(OW) * sw - pw + k % kw
    return maxpool_backward_numpy(grad, (rows * W + cols).astype(np.int32), x_shape)


def avgpool_forward_numpy(x, geometry):
    """The average pool of ``layers.pooling`` (the twin of the separable forward)."""
    from ..layers.pooling import avgpool_forward_numpy as plain
    return plain(x, geometry)


def avgpool_backward_numpy(grad, geometry, x_shape):
    """The average pool's backward of ``layers.pooling`` (the twin of the 3×3/2 gather, to
    rounding: the kernels add float64 shares, the twin float32 ones)."""
    from ..layers.pooling import avgpool_backward_numpy as plain
    return plain(grad, geometry, x_shape)


# -- Numba kernels ------------------------------------------------------------------------
# What made these fast (one thread, under load; Cifar10_quick's layers):
# * no array views inside the loops, only 4-D indexing: Numba builds a view's
#   struct and counts its reference each time, which on 16- and 8-wide rows cost
#   more than the arithmetic (the average pool 2.4x faster without them);
# * plain strict > on scalars, which the compiler turns into selects; any NaN-aware
#   test (v != v ...) made it keep branches, which random data mispredicts (5-6x
#   slower). So the max kernel ORs a NaN flag over every value it reads (nearly
#   free) and the layer reruns the exact first-NaN-wins kernel when it is set.
#   Without NaN, strict > in row-major window order is np.argmax's rule;
# * the offsets carried as floats of x's dtype until the store: an int32 offset
#   beside float32 values kept the column pass scalar (6.1 vs 1.8 ms);
# * literal strides where the geometry allows (3x3/2 and 2x2/2 without padding).
@numba.njit(cache=True, inline="always")
def _maxpool2x2_plane(x, n, c, out, offsets):
    # The 2×2/2 pool without padding where every window is whole (LeNet's, VGG's), in
    # one pass: the four values of window (a, b) compared in row-major order with
    # strict > (the separable passes' rule, np.argmax's: the same values and offsets),
    # written once; returns the NaN flag. (The separable passes cost 2.7 ms on LeNet's
    # pool1, one thread: the row maxima and their offsets went through a float scratch.)
    t = x.dtype.type
    bad = False
    for a in range(out.shape[2]):
        for b in range(out.shape[3]):
            v0, v1 = x[n, c, 2 * a, 2 * b], x[n, c, 2 * a, 2 * b + 1]
            v2, v3 = x[n, c, 2 * a + 1, 2 * b], x[n, c, 2 * a + 1, 2 * b + 1]
            bad |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
            best, k = v0, t(0)
            if v1 > best:
                best, k = v1, t(1)
            if v2 > best:
                best, k = v2, t(2)
            if v3 > best:
                best, k = v3, t(3)
            out[n, c, a, b], offsets[n, c, a, b] = best, k
    return bad


@numba.njit(cache=True)
def takes_flat_3x3s2(kh, kw, sh, sw, ph, pw, W):
    """Whether a pool runs the flat 3×3/2 plane loops (``_maxpool3x3s2_plane``,
    ``_avgpool3x3s2_plane``, ``_avgpool3x3s2_backward_kernel``): a 3×3 window, stride 2,
    no padding, an even input width."""
    return kh == 3 and kw == 3 and sh == 2 and sw == 2 and ph == 0 and pw == 0 and W % 2 == 0


@numba.njit(cache=True, inline="always")
def _flat_3x3s2_scratch(H, W):
    # the length of each per-thread scratch of the flat plane loops: the pair maxima or
    # sums of every row the windows read, a row of -inf / -0.0 below them, one past
    return (H + 1) * (W // 2) + 1


@numba.njit(cache=True, inline="always")
def _maxpool3x3s2_plane(xf, n, c, H, W, out, offsets, hm, hj, ev, vm, vk):
    # The 3×3/2 pool without padding on planes of even width (Cifar10_quick's pool1,
    # AlexNet's), as flat loops over the whole plane that the compiler vectorises
    # (sitting 24: the row-by-row passes were 4.8 ms on Cifar10_quick's pool1, one
    # thread, against 0.46 ms for a copy of its input; their 16-wide inner loops
    # each paid the vector loop's run-time alias checks, and an index the compiler
    # could not prove non-negative turned its loads into gathers). Same compares in
    # the same order as the row-by-row passes: the same values, offsets and flag.
    # Returns the NaN flag, ORed over every value of the rows the windows read.
    t = xf.dtype.type
    OH, OW = out.shape[2], out.shape[3]
    half = max(W // 2, 0)                  # (max: a known non-negative index step)
    rows = min(H, 2 * OH + 1)              # the rows the windows read
    P = rows * half
    bad = False
    # rows: the pair maxima at every even flat position (stride-2 pairs, which the
    # compiler loads as whole vectors and deinterleaves) ...
    for q in range(P):
        v0, v1 = xf[n, c, 2 * q], xf[n, c, 2 * q + 1]
        bad |= (v0 != v0) | (v1 != v1)
        best = v0
        j = t(0)
        if v1 > best:
            best = v1
            j = t(1)
        hm[q] = best
        hj[q] = j
        ev[q] = v0
    # ... then the third column, the next pair's first, read from a contiguous copy (a
    # third stride-2 load at an offset became a gather). In ceil mode each row's last
    # window has two columns: -inf there, which strict > never takes.
    ev[P] = -np.inf
    if OW == half:
        for h in range(1, rows):
            ev[h * half] = -np.inf
    for q in range(P):
        v2, best, j = ev[q + 1], hm[q], hj[q]
        if v2 > best:
            best = v2
            j = t(2)
        hm[q] = best
        hj[q] = j
    for q in range(P, P + half):           # a row of -inf under the last (a window of
        hm[q] = -np.inf                    # two rows at the bottom edge in ceil mode)
    # columns: the windows starting at every row, flat (those at odd rows unused), so
    # that the alias checks are paid once a plane; then the even rows go out
    for q in range((rows - 1) * half):
        best, k = hm[q], hj[q]
        v, kv = hm[q + half], hj[q + half] + t(3)
        if v > best:
            best, k = v, kv
        v, kv = hm[q + 2 * half], hj[q + 2 * half] + t(6)
        if v > best:
            best, k = v, kv
        vm[q] = best
        vk[q] = k
    for a in range(OH):
        r = max(2 * a * half, 0)
        for b in range(OW):
            out[n, c, a, b] = vm[r + b]
            offsets[n, c, a, b] = vk[r + b]
    return bad


@numba.njit(cache=True, parallel=True)
def _maxpool_offsets_kernel(x, kh, kw, sh, sw, ph, pw, out, offsets, nan_seen):
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    if (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
            and 2 * OH <= H and 2 * OW <= W):
        for n in numba.prange(N):
            bad = False
            for c in range(C):
                bad |= _maxpool2x2_plane(x, n, c, out, offsets)
            nan_seen[n] = bad
        return
    if takes_flat_3x3s2(kh, kw, sh, sw, ph, pw, W):
        xf = x.reshape(N, C, H * W)
        size = _flat_3x3s2_scratch(H, W)
        for n in numba.prange(N):
            hm, hj = np.empty(size, x.dtype), np.empty(size, x.dtype)
            ev, vm = np.empty(size, x.dtype), np.empty(size, x.dtype)
            vk = np.empty(size, np.uint8)
            bad = False
            for c in range(C):
                bad |= _maxpool3x3s2_plane(xf, n, c, H, W, out, offsets, hm, hj, ev, vm, vk)
            nan_seen[n] = bad
        return
    b_lo = min(-(-pw // sw), OW)                          # first b with b·sw - pw >= 0
    b_hi = max(min((W + pw - kw) // sw + 1, OW), b_lo)    # past the last full window
    fast3 = kw == 3 and sw == 2 and pw == 0               # (odd widths, row padding)
    fast2 = kw == 2 and sw == 2 and pw == 0               # LeNet, VGG
    t = x.dtype.type
    for n in numba.prange(N):
        hm = np.empty((H, OW), x.dtype)         # one plane's row maxima (L1)
        hj = np.empty((H, OW), x.dtype)         # and their column offsets, as floats
        bad = False
        for c in range(C):
            # rows: the kw-wide maxima of every window's columns
            for h in range(H):
                if fast3:
                    for b in range(b_hi):
                        v0, v1, v2 = x[n, c, h, 2 * b], x[n, c, h, 2 * b + 1], x[n, c, h, 2 * b + 2]
                        bad |= (v0 != v0) | (v1 != v1) | (v2 != v2)
                        best, j = v0, t(0)
                        if v1 > best:
                            best, j = v1, t(1)
                        if v2 > best:
                            best, j = v2, t(2)
                        hm[h, b], hj[h, b] = best, j
                elif fast2:
                    for b in range(b_hi):
                        v0, v1 = x[n, c, h, 2 * b], x[n, c, h, 2 * b + 1]
                        bad |= (v0 != v0) | (v1 != v1)
                        best, j = v0, t(0)
                        if v1 > best:
                            best, j = v1, t(1)
                        hm[h, b], hj[h, b] = best, j
                else:
                    for b in range(b_lo, b_hi):
                        start = b * sw - pw
                        best, j = x[n, c, h, start], t(0)
                        bad |= best != best
                        for i in range(1, kw):
                            v = x[n, c, h, start + i]
                            bad |= v != v
                            if v > best:
                                best, j = v, t(i)
                        hm[h, b], hj[h, b] = best, j
                for b in range(OW):                     # windows over an edge, clipped
                    if b_lo <= b < b_hi:
                        continue
                    start = b * sw - pw
                    lo, hi = max(start, 0), min(start + kw, W)
                    best, j = x[n, c, h, lo], t(lo - start)
                    bad |= best != best
                    for w in range(lo + 1, hi):
                        v = x[n, c, h, w]
                        bad |= v != v
                        if v > best:
                            best, j = v, t(w - start)
                    hm[h, b], hj[h, b] = best, j
            # columns: the max down the window's row maxima, first row first
            for a in range(OH):
                start = a * sh - ph
                i0, i1 = max(0, -start), min(kh, H - start)
                h0 = start + i0
                k0 = t(i0 * kw)
                if i1 - i0 == 3 or i1 - i0 == 2:
                    # (two rows: the second repeated, which strict > never takes)
                    last = i1 - i0 - 1
                    k1, k2 = k0 + t(kw), k0 + t(last * kw)
                    for b in range(OW):
                        best, k = hm[h0, b], hj[h0, b] + k0
                        v, kv = hm[h0 + 1, b], hj[h0 + 1, b] + k1
                        if v > best:
                            best, k = v, kv
                        v, kv = hm[h0 + last, b], hj[h0 + last, b] + k2
                        if v > best:
                            best, k = v, kv
                        out[n, c, a, b], offsets[n, c, a, b] = best, k
                else:
                    for b in range(OW):
                        best, k = hm[h0, b], hj[h0, b] + k0
                        for i in range(i0 + 1, i1):
                            v, kv = hm[start + i, b], hj[start + i, b] + t(i * kw)
                            if v > best:
                                best, k = v, kv
                        out[n, c, a, b], offsets[n, c, a, b] = best, k
        nan_seen[n] = bad


@numba.njit(cache=True, parallel=True)
def _maxpool_offsets_backward_kernel(grad, offsets, offset_rows, offset_cols, sh, sw, ph, pw,
                                     dx):
    # The in-plane step of every offset is looked up (an integer division by kw per
    # output cost more than the rest of the kernel); an offset always points into the
    # plane, and max(·, 0) tells the compiler so (no negative-index wrap-around test).
    # Each dx plane is zeroed just before its gradients go in (in L1 then; no
    # whole-buffer fill), and they go in in (a, b) order, the order of the twin's
    # np.add.at: the same bits.
    N, C, OH, OW = grad.shape
    H, W = dx.shape[2], dx.shape[3]
    zero = dx.dtype.type(0)
    step = np.empty(offset_rows.shape[0], np.int64)
    for k in range(offset_rows.shape[0]):
        step[k] = offset_rows[k] * W + offset_cols[k]
    for n in numba.prange(N):
        for c in range(C):
            plane = dx[n, c].reshape(H * W)
            for i in range(H * W):
                plane[i] = zero
            for a in range(OH):
                base = (a * sh - ph) * W - pw
                for b in range(OW):
                    k, g = offsets[n, c, a, b], grad[n, c, a, b]
                    plane[max(base + b * sw + step[k], 0)] += g


# -- average pooling -----------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _avgpool3x3s2_plane(xf, n, c, H, W, divisor, out, rs, ev, vs):
    # The 3×3/2 average without padding on planes of even width (Cifar10_quick's pool2
    # and pool3) as flat loops, as ``_maxpool3x3s2_plane`` (why: there), with the sums
    # of the row-by-row passes in their order: (x0 + x1) + x2 along a row, a clipped
    # last window (0 + x0) + x1, then (r0 + r1) + r2 down the rows. A window of two
    # rows at the bottom edge adds a row of -0.0, which leaves every sum as it was.
    OH, OW = out.shape[2], out.shape[3]
    half = max(W // 2, 0)
    rows = min(H, 2 * OH + 1)
    P = rows * half
    zero = xf.dtype.type(0)
    for q in range(P):
        v0 = xf[n, c, 2 * q]
        rs[q] = v0 + xf[n, c, 2 * q + 1]
        ev[q] = v0
    ev[P] = zero
    for q in range(P):
        rs[q] = rs[q] + ev[q + 1]
    if OW == half:                          # ceil mode: each row's last window clipped
        for h in range(rows):
            q = h * half + half - 1
            rs[q] = (zero + xf[n, c, 2 * q]) + xf[n, c, 2 * q + 1]
    for q in range(P, P + half):
        rs[q] = -zero
    for q in range((rows - 1) * half):
        vs[q] = (rs[q] + rs[q + half]) + rs[q + 2 * half]
    for a in range(OH):
        r = max(2 * a * half, 0)
        for b in range(OW):
            out[n, c, a, b] = vs[r + b] / divisor[a, b]


@numba.njit(cache=True, parallel=True)
def _avgpool_sep_forward_kernel(x, kh, kw, sh, sw, ph, pw, divisor, out):
    # rows: the kw-wide sums of each window's columns, then down the window's rows of those sums, / divisor[a, b] (the window
    # clipped to the padded input). Padding adds zeros: it is left out of the sums.
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    if takes_flat_3x3s2(kh, kw, sh, sw, ph, pw, W):
        xf = x.reshape(N, C, H * W)
        size = _flat_3x3s2_scratch(H, W)
        for n in numba.prange(N):
            rs, ev, vs = np.empty(size, x.dtype), np.empty(size, x.dtype), np.empty(size, x.dtype)
            for c in range(C):
                _avgpool3x3s2_plane(xf, n, c, H, W, divisor, out, rs, ev, vs)
        return
    b_lo = min(-(-pw // sw), OW)
    b_hi = max(min((W + pw - kw) // sw + 1, OW), b_lo)
    fast3 = kw == 3 and sw == 2 and pw == 0
    zero = x.dtype.type(0)
    for n in numba.prange(N):
        rs = np.empty((H, OW), x.dtype)
        for c in range(C):
            for h in range(H):
                if fast3:
                    for b in range(b_hi):
                        rs[h, b] = x[n, c, h, 2 * b] + x[n, c, h, 2 * b + 1] + x[n, c, h, 2 * b + 2]
                else:
                    for b in range(b_lo, b_hi):
                        total = zero
                        for j in range(kw):
                            total += x[n, c, h, b * sw - pw + j]
                        rs[h, b] = total
                for b in range(OW):                     # windows over an edge, clipped
                    if b_lo <= b < b_hi:
                        continue
                    start = b * sw - pw
                    total = zero
                    for w in range(max(start, 0), min(start + kw, W)):
                        total += x[n, c, h, w]
                    rs[h, b] = total
            for a in range(OH):
                start = a * sh - ph
                h0, h1 = max(start, 0), min(start + kh, H)
                if h1 - h0 == 3:
                    for b in range(OW):
                        out[n, c, a, b] = (rs[h0, b] + rs[h0 + 1, b] + rs[h0 + 2, b]) / divisor[a, b]
                else:
                    for b in range(OW):
                        total = rs[h0, b]
                        for h in range(h0 + 1, h1):
                            total += rs[h, b]
                        out[n, c, a, b] = total / divisor[a, b]


@numba.njit(cache=True, parallel=True)
def _avgpool3x3s2_backward_kernel(grad, divisor, dx):
    # The 3×3/2 average's backward without padding on even widths as a gather: each dx
    # pixel sums the shares of the (up to four) windows over it, in (a, b) order from
    # 0, each added in float64 and rounded to dx's dtype: the per-window scatter of
    # ``layers.pooling._avgpool_backward_kernel`` (its share is grad / an int64 window
    # size: float64) bit for bit, without its zeroed dx and its 9 read-modify-writes a
    # window (sitting 24: 1.70 → 0.80 ms on Cifar10_quick's pool2, one thread, under
    # load). divisor: the window sizes, float64 (OH, OW). Pixel pair (h, 2b), (h, 2b + 1)
    # of row pair a: windows (a - 1, b - 1), (a - 1, b), (a, b - 1), (a, b).
    N, C, OH, OW = grad.shape
    H, W = dx.shape[2], dx.shape[3]
    t = dx.dtype.type
    for n in numba.prange(N):
        # the shares in a frame of zeros (row -1, columns -1 and OW), which adds nothing:
        # a sum from +0.0 is never -0.0
        share = np.zeros((OH + 1, OW + 2))
        for c in range(C):
            for a in range(OH):
                for b in range(OW):
                    share[a + 1, b + 1] = grad[n, c, a, b] / divisor[a, b]
            for a in range((H + 1) // 2):
                cur = a + 1 if a < OH else 0                  # window row a, or zeros
                for b in range(W // 2):
                    here = b + 1 if b < OW else OW + 1
                    s_ul, s_u = share[a, b], share[a, here]
                    s_l, s_c = share[cur, b], share[cur, here]
                    dx[n, c, 2 * a, 2 * b] = t(t(t(t(t(0) + s_ul) + s_u) + s_l) + s_c)
                    dx[n, c, 2 * a, 2 * b + 1] = t(t(t(0) + s_u) + s_c)
                    if 2 * a + 1 < H:
                        dx[n, c, 2 * a + 1, 2 * b] = t(t(t(0) + s_l) + s_c)
                        dx[n, c, 2 * a + 1, 2 * b + 1] = t(t(0) + s_c)


def offset_tables(kw):
    """(rows, cols): the window row and column of every uint8 offset."""
    k = np.arange(256)
    return (k // kw).astype(np.int64), (k % kw).astype(np.int64)


def offsets_from_argmax(argmax, geometry, W):
    """Window offsets i·kw + j (uint8) of flat in-plane argmax indices h·W + w."""
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    i = argmax // W - (np.arange(OH) * sh - ph).reshape(-1, 1)
    j = argmax % W - (np.arange(OW) * sw - pw)
    return (i * kw + j).astype(np.uint8)


def avg_divisors(x_shape, geometry, dtype):
    """divisor[a, b]: the size of window (a, b) clipped to the padded input."""
    from ..layers.pooling import _avg_divisors
    kh, kw, sh, sw, ph, pw, OH, OW = geometry
    H, W = x_shape[2:]
    return np.outer(_avg_divisors(H, kh, sh, ph, OH),
                    _avg_divisors(W, kw, sw, pw, OW)).astype(dtype)
