"""Power-of-two weight grids: the value sets of technique 1 (SPEC.md).

A ``PowerOfTwoGrid`` is the set {−1, −1 + Δ, …, 0, …, 1 − Δ, 1} with step
Δ = 2^−k (powers of two, "for hardware", Shinagawa, Hayakawa & Nakajima,
"量子化結合ニューラルネットワークの多層化による認識精度の向上", seed 000).
k = 0 is the ternary set {−1, 0, 1}; k = 1 gives {−1, −½, 0, ½, 1}; and so on.

A weight on the grid is held as a small integer *code* c ∈ [−n, n] with
n = 2^k, and its value is c·Δ. Codes are int8, so k ≤ 6 (n = 64): a grid
with more than 255 points would not fit. In a model file the codes are
packed at ``bits`` bits per weight, bits = ⌈log₂(2n + 1)⌉ (2 for ternary).

The grid is pure: no layers, no randomness (rounding onto it lives in
``minidnn.kernels.rounding``); it is named in a layer's config by
``get_config()`` and rebuilt with ``PowerOfTwoGrid.from_config``.
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

import numpy as np

#: the finest grid whose codes fit in int8 (n = 2^6 = 64 ≤ 127)
MAX_K = 6


def parse_step(text) -> int:
    """The exponent k of a step Δ = 2^−k given as ``"2^-2"``, ``"2**-2"``,
    ``"0.25"``, ``"1/4"``, a float or a PowerOfTwoGrid.

    Raises ValueError when the step is not 2^−k for an integer 0 ≤ k ≤ 6."""
    if isinstance(text, PowerOfTwoGrid):
        return text.k
    original = text
    try:
        if isinstance(text, str):
            s = text.strip().replace(" ", "")
            m = re.fullmatch(r"2(?:\^|\*\*)\(?(-?\d+)\)?", s)
            value = Fraction(2) ** int(m.group(1)) if m else Fraction(s)
        else:
            value = Fraction(float(text))
    except (ValueError, ZeroDivisionError, TypeError):
        raise ValueError(f"grid step must look like 2^-2, 0.25 or 1/4, got {original!r}") from None
    if value <= 0 or value > 1:
        raise ValueError(f"grid step must be a power of two 2^-k with 0 <= k <= {MAX_K} "
                         f"(on [-1, 1]), got {original!r} = {float(value):g}")
    k = -math.log2(value)
    if value.numerator != 1 or value.denominator & (value.denominator - 1) or k != int(k):
        raise ValueError(f"grid step must be a power of two 2^-k (1, 1/2, 1/4, ...), "
                         f"got {original!r} = {float(value):g}")
    k = int(k)
    if k > MAX_K:
        raise ValueError(f"grid step 2^-{k} has {2 * 2 ** k + 1} points, more than int8 codes "
                         f"hold; the finest supported step is 2^-{MAX_K}")
    return k


class PowerOfTwoGrid:
    """Grid of step Δ = 2^−k on [−1, 1]; codes c ∈ [−2^k, 2^k] (int8), value c·Δ.

    ``PowerOfTwoGrid(0)`` is ternary. ``PowerOfTwoGrid.parse("2^-2")`` accepts
    the spellings of ``parse_step``."""

    def __init__(self, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"PowerOfTwoGrid takes the exponent k of the step 2^-k as an "
                             f"integer, got {k!r}; use PowerOfTwoGrid.parse({k!r}) for a step")
        if not 0 <= int(k) <= MAX_K:
            raise ValueError(f"PowerOfTwoGrid exponent k must be in 0..{MAX_K} (step 2^-k on "
                             f"[-1, 1] with int8 codes), got {k}")
        self.k = int(k)

    @classmethod
    def parse(cls, step) -> "PowerOfTwoGrid":
        return cls(parse_step(step))

    # -- the value set ---------------------------------------------------------------
    @property
    def step(self) -> float:
        """Δ = 2^−k (exact in every float dtype)."""
        return 2.0 ** -self.k

    @property
    def max_code(self) -> int:
        """n = 2^k: codes run from −n to n."""
        return 2 ** self.k

    @property
    def n_levels(self) -> int:
        return 2 * self.max_code + 1

    @property
    def bits(self) -> int:
        """Bits per weight in a model file: ⌈log₂(2n + 1)⌉."""
        return int(math.ceil(math.log2(self.n_levels)))

    @property
    def is_ternary(self) -> bool:
        return self.k == 0

    def values(self) -> np.ndarray:
        """All grid points, ascending (float64)."""
        return np.arange(-self.max_code, self.max_code + 1) * self.step

    # -- codes <-> values ----------------------------------------------------------------
    def check_codes(self, codes: np.ndarray, what: str = "codes") -> np.ndarray:
        """``codes`` as int8 after checking they are integers within [−n, n]."""
        codes = np.asarray(codes)
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{what} must be integer codes of {self!r}, got dtype {codes.dtype}")
        if codes.size and (codes.min() < -self.max_code or codes.max() > self.max_code):
            raise ValueError(f"{what} must lie in [-{self.max_code}, {self.max_code}] for "
                             f"{self!r}, got values in [{codes.min()}, {codes.max()}]")
        return codes.astype(np.int8, copy=False)

    def decode(self, codes: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Values c·Δ of the codes (exact: Δ is a power of two)."""
        return self.check_codes(codes).astype(dtype) * dtype(self.step)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Codes of values that lie exactly on the grid; ValueError otherwise.

        Rounding values that are not on the grid is the job of
        ``minidnn.kernels.rounding`` (nearest or randomized)."""
        values = np.asarray(values, dtype=np.float64)
        scaled = values / self.step
        codes = np.rint(scaled)
        off = np.abs(scaled - codes) > 0
        if off.any() or np.abs(values).max(initial=0) > 1:
            bad = values[off | (np.abs(values) > 1)].ravel()[0]
            raise ValueError(f"{self!r}.encode takes values on the grid (multiples of "
                             f"{self.step:g} in [-1, 1]), got {bad!r}; round them first")
        return codes.astype(np.int8)

    # -- file packing --------------------------------------------------------------------
    def pack(self, codes: np.ndarray) -> np.ndarray:
        """Codes packed at ``bits`` bits per weight into uint8 (little-endian bit order).

        Each code is stored as the unsigned number c + n ∈ [0, 2n]."""
        codes = self.check_codes(codes).ravel()
        unsigned = (codes.astype(np.int16) + self.max_code).astype(np.uint8)
        bit_planes = (unsigned[:, None] >> np.arange(self.bits, dtype=np.uint8)) & 1
        return np.packbits(bit_planes.astype(np.uint8).ravel(), bitorder="little")

    def unpack(self, packed: np.ndarray, shape: tuple[int, ...], what: str = "packed codes") -> np.ndarray:
        """The int8 codes of ``shape`` that ``pack`` wrote; ValueError for a wrong
        length or a stored number outside [0, 2n] (a damaged file)."""
        packed = np.asarray(packed)
        count = int(np.prod(shape))
        expected = (count * self.bits + 7) // 8
        if packed.dtype != np.uint8 or packed.shape != (expected,):
            raise ValueError(f"{what} must be {expected} uint8 bytes ({count} weights at "
                             f"{self.bits} bits) for {self!r}, got {packed.dtype}{packed.shape}")
        bits = np.unpackbits(packed, count=count * self.bits, bitorder="little")
        unsigned = bits.reshape(count, self.bits).astype(np.int16) @ \
            (1 << np.arange(self.bits, dtype=np.int16))
        if count and unsigned.max() > 2 * self.max_code:
            bad = int(unsigned.max()) - self.max_code
            raise ValueError(f"{what} hold code {bad}, outside [-{self.max_code}, "
                             f"{self.max_code}] of {self!r}: the file is damaged")
        return (unsigned - self.max_code).astype(np.int8).reshape(shape)

    def packed_bytes(self, count: int) -> int:
        return (int(count) * self.bits + 7) // 8

    # -- config --------------------------------------------------------------------------
    def label(self) -> str:
        """``"2^-2"``: the spelling used in configs, the CLI and tables."""
        return f"2^-{self.k}" if self.k else "2^0"

    def get_config(self) -> dict:
        return {"type": "power_of_two", "step": self.label()}

    @classmethod
    def from_config(cls, config) -> "PowerOfTwoGrid":
        if isinstance(config, PowerOfTwoGrid):
            return config
        if isinstance(config, dict):
            if config.get("type", "power_of_two") != "power_of_two":
                raise ValueError(f"not a power-of-two grid config: {config!r}")
            return cls.parse(config["step"])
        return cls.parse(config)

    def __eq__(self, other):
        return isinstance(other, PowerOfTwoGrid) and other.k == self.k

    def __hash__(self):
        return hash(("PowerOfTwoGrid", self.k))

    def __repr__(self) -> str:
        return f"PowerOfTwoGrid(step={self.label()})"
