"""Rounding onto a grid of step Δ: randomized rounding and round-to-nearest.

Randomized rounding (Golovin, Sculley, McMahan & Young, 2013, "Large-scale
learning with less RAM via randomization", ICML; technique 1 of SPEC.md):
a value x between grid points a < x < a + Δ becomes

    a + Δ  with probability (x − a)/Δ,     a  otherwise,

so E[RR(x)] = x: rounding adds noise but no bias. Values outside [−1, 1]
are clipped to the ends first. A value already on the grid never moves
((x − a)/Δ = 0). Round-to-nearest (half to even, ``np.rint``) is the
deterministic control.

Everything works in *code units*: s = x/Δ, grid points are the integers
−n … n (n = 2^k), and the result is an int8 code. The arithmetic is float64
whatever the input dtype, so a code plus a float32 step rounds the same way
in the kernel and its twin.

The uniforms u ∈ [0, 1) are a counter-based stream keyed by one 64-bit
draw from the caller's ``numpy.random.Generator`` per call: u_i =
⌊splitmix64(key + (i + 1)·φ) / 2⁴⁰⌋ / 2²⁴ (φ = 0x9E3779B97F4A7C15; SplitMix64
as in Steele, Lea & Flood, 2014, "Fast splittable pseudorandom number
generators"). So a seed reproduces every rounding, the kernel draws its
uniforms in registers (no array of draws per step: this is the training step
of every weight), and the NumPy twin computes the same stream vectorised.
With 24-bit uniforms P(up) = ⌈f·2²⁴⌉/2²⁴ for a fraction f: a bias below
6·10⁻⁸. "Up" is the event u < f.

Kernels (Numba, ``cache=True``) and their NumPy twins, which define them:

* ``uniforms_numpy(key, size)``: the stream itself;
* ``randomized_round_kernel`` / ``randomized_round_numpy``(scaled, key, n) → codes
* ``nearest_round_kernel`` / ``nearest_round_numpy``(scaled, n) → codes
* ``randomized_update_kernel`` / ``randomized_update_numpy``(codes, delta,
  inv_step, key, n): codes ← RR(codes + delta/Δ) in place, the training step
  of the memory-saving mode, fused so that no float copy of the weights is
  ever formed (only the float step the optimizer hands over).
* ``nearest_update_kernel`` / ``nearest_update_numpy``: the same with
  round-to-nearest.

Public functions (validated, value units): ``randomized_round(values, grid,
rng)``, ``round_to_nearest(values, grid)``, ``randomized_update(codes, delta,
grid, rng)``, ``nearest_update(codes, delta, grid)``.
"""
from __future__ import annotations

import math

import numba
import numpy as np


GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


# -- the NumPy twins (the definition) ---------------------------------------------

def uniforms_numpy(key: int, size: int) -> np.ndarray:
    """The stream u_0 … u_{size−1} ∈ [0, 1) of ``key`` (float64 holding 24-bit values)."""
    z = np.uint64(key) + np.arange(1, size + 1, dtype=np.uint64) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def randomized_round_numpy(scaled: np.ndarray, key: int, max_code: int) -> np.ndarray:
    """int8 codes: clip(s, −n, n), then ⌊s⌋ + 1[u < s − ⌊s⌋], u the stream of ``key``."""
    s = np.clip(np.asarray(scaled, dtype=np.float64), -max_code, max_code)
    low = np.floor(s)
    up = uniforms_numpy(key, s.size).reshape(s.shape) < (s - low)
    return (low + up).astype(np.int8)


def nearest_round_numpy(scaled: np.ndarray, max_code: int) -> np.ndarray:
    """int8 codes: rint(clip(s, −n, n)) (ties to even)."""
    s = np.clip(np.asarray(scaled, dtype=np.float64), -max_code, max_code)
    return np.rint(s).astype(np.int8)


def randomized_update_numpy(codes, delta, inv_step, key, max_code) -> None:
    """codes ← RR(codes + delta·(1/Δ)) in place (codes int8, delta float)."""
    s = codes.astype(np.float64) + np.asarray(delta, dtype=np.float64) * float(inv_step)
    codes[...] = randomized_round_numpy(s, key, max_code)


def nearest_update_numpy(codes, delta, inv_step, max_code) -> None:
    """codes ← rint(codes + delta·(1/Δ)) in place."""
    s = codes.astype(np.float64) + np.asarray(delta, dtype=np.float64) * float(inv_step)
    codes[...] = nearest_round_numpy(s, max_code)


# -- the kernels ------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _uniform(key, i):
    z = key + np.uint64(i + 1) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(40)) * (1.0 / 16777216.0)


@numba.njit(cache=True, inline="always")
def _rr_scalar(s, u, max_code):
    if s > max_code:
        s = float(max_code)
    elif s < -max_code:
        s = float(-max_code)
    low = math.floor(s)
    if u < s - low:
        low += 1.0
    return low


@numba.njit(cache=True, inline="always")
def _nearest_scalar(s, max_code):
    if s > max_code:
        s = float(max_code)
    elif s < -max_code:
        s = float(-max_code)
    return np.rint(s)


@numba.njit(cache=True)
def randomized_round_kernel(scaled, key, max_code, out):
    """out[i] = RR(scaled[i]) with u_i of ``key`` (uint64), flat arrays (out int8)."""
    for i in range(scaled.size):
        out[i] = np.int8(_rr_scalar(np.float64(scaled[i]), _uniform(key, i), max_code))


@numba.njit(cache=True)
def nearest_round_kernel(scaled, max_code, out):
    for i in range(scaled.size):
        out[i] = np.int8(_nearest_scalar(np.float64(scaled[i]), max_code))


@numba.njit(cache=True)
def randomized_update_kernel(codes, delta, inv_step, key, max_code):
    """codes[i] ← RR(codes[i] + delta[i]·inv_step) in place, flat arrays."""
    for i in range(codes.size):
        s = np.float64(codes[i]) + np.float64(delta[i]) * inv_step
        codes[i] = np.int8(_rr_scalar(s, _uniform(key, i), max_code))


@numba.njit(cache=True)
def nearest_update_kernel(codes, delta, inv_step, max_code):
    for i in range(codes.size):
        s = np.float64(codes[i]) + np.float64(delta[i]) * inv_step
        codes[i] = np.int8(_nearest_scalar(s, max_code))


# -- public, validated ---------------------------------------------------------------

def _float_array(values, what):
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating):
        values = values.astype(np.float64)
    if values.size and not np.isfinite(values).all():
        raise ValueError(f"{what} contains NaN or Inf; cannot round it onto a grid")
    return np.ascontiguousarray(values)


def draw_key(rng: np.random.Generator) -> np.uint64:
    """The 64-bit key of one rounding's uniform stream, drawn from ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"randomized rounding needs a numpy.random.Generator, got "
                        f"{type(rng).__name__}; use np.random.default_rng(seed)")
    return np.uint64(rng.integers(0, 2**64, dtype=np.uint64))


def randomized_round(values, grid, rng: np.random.Generator) -> np.ndarray:
    """int8 codes of RR(values) on ``grid`` (a PowerOfTwoGrid); values in value units."""
    values = _float_array(values, "values")
    scaled = values.astype(np.float64) / grid.step
    out = np.empty(values.shape, dtype=np.int8)
    randomized_round_kernel(scaled.ravel(), draw_key(rng), grid.max_code, out.reshape(-1))
    return out


def round_to_nearest(values, grid) -> np.ndarray:
    """int8 codes of the grid point nearest each value (clipped to [−1, 1])."""
    values = _float_array(values, "values")
    out = np.empty(values.shape, dtype=np.int8)
    nearest_round_kernel((values.astype(np.float64) / grid.step).ravel(), grid.max_code,
                         out.reshape(-1))
    return out


def _check_update(codes, delta, grid):
    if not (isinstance(codes, np.ndarray) and codes.dtype == np.int8 and codes.flags.c_contiguous):
        raise ValueError(f"codes must be a C-contiguous int8 array, got "
                         f"{type(codes).__name__} {getattr(codes, 'dtype', '')}")
    delta = np.ascontiguousarray(delta)
    if delta.shape != codes.shape:
        raise ValueError(f"the step has shape {delta.shape}, the codes {codes.shape}")
    return delta


def randomized_update(codes: np.ndarray, delta, grid, rng: np.random.Generator) -> None:
    """codes ← RR(codes·Δ + delta) in place, delta in value units."""
    delta = _check_update(codes, delta, grid)
    randomized_update_kernel(codes.reshape(-1), delta.reshape(-1), 1.0 / grid.step,
                             draw_key(rng), grid.max_code)


def nearest_update(codes: np.ndarray, delta, grid) -> None:
    """codes ← nearest(codes·Δ + delta) in place."""
    delta = _check_update(codes, delta, grid)
    nearest_update_kernel(codes.reshape(-1), delta.reshape(-1), 1.0 / grid.step, grid.max_code)
