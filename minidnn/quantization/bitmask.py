"""Fixed-point formats with masked bits (technique 2; Doi & Mitsuyama, SPEC.md "Technique 2").

A trained layer's weights are rounded to a fixed-point word a few bits wider
than the hardware budget, and the extra bits are masked (forced to 0): the
circuit costs the narrow width, but the representable values sit where the
weights are.

Notation ``B_M_p1_…_pM_S`` (the paper's):

* ``B``: bits of the word including the sign, 2 ≤ B ≤ 16;
* ``M``: number of masked magnitude bits, 0 ≤ M < B − 1 (one bit stays free);
* ``p1 … pM``: positions of the masked bits, counted from the first bit after
  the sign, 0 ≤ p ≤ B − 2, distinct (0 is the integer bit when S = 0);
* ``S``: binary-point shift, −16 ≤ S ≤ 16. The magnitude bit at position p
  is worth 2^(S − p): S = 0 is the paper's format (one integer bit, B − 2
  fractional bits), S = 1 moves the point one place right (two integer bits),
  S = −1 one place left (all bits fractional, the first worth 1/2).

Readable form: ``X`` a free bit, ``0`` a masked bit, the sign first, the point
after the 1 + S-th magnitude bit: ``6_2_0_1_0`` = ``X0.0XXX`` (the readable
form exists for −1 ≤ S ≤ B − 2, i.e. when the point falls inside the word).

The format is **sign-magnitude and symmetric**: value = (−1)^s · Σ_{free p}
b_p · 2^(S − p), so the value set is {−v : v ∈ V} ∪ V with V the magnitudes;
zero appears once (−0 is not a separate code). Effective bits = B − M (the
sign and the free magnitude bits), the width the hardware pays for.

Codes: a weight is stored as the signed integer ``code = value / step``, with
``step`` the weight of the lowest free bit, so |code| ≤ 2^(B−1) − 1 fits int8
for B ≤ 8 and int16 up to B = 16.
"""
from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np

MAX_BITS = 16
MAX_SHIFT = 16

_NOTATION = re.compile(r"^-?\d+(_-?\d+)*$")


@dataclass(frozen=True)
class BitMaskPattern:
    """A sign-magnitude fixed-point word of ``bits`` bits with ``masked`` bits forced to 0.

    ``BitMaskPattern.parse("6_2_0_1_0")`` or ``BitMaskPattern.parse("X0.0XXX")``;
    ``str(p)`` gives the notation, ``p.readable()`` the X/0 form. See the
    module docstring for the notation and the value set."""

    bits: int
    masked: tuple[int, ...] = ()
    shift: int = 0

    def __post_init__(self):
        for label, value in (("bits", self.bits), ("shift", self.shift)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"BitMaskPattern {label} must be an int, got {value!r}")
        masked = tuple(int(p) for p in self.masked)
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "shift", int(self.shift))
        B = self.bits
        if not 2 <= B <= MAX_BITS:
            raise ValueError(f"a bit-mask pattern needs 2 <= B <= {MAX_BITS} bits "
                             f"(sign included), got B={B}")
        if len(masked) >= B - 1:
            raise ValueError(f"pattern with B={B} has {B - 1} magnitude bits; masking "
                             f"M={len(masked)} of them leaves none free (need M < B - 1 = {B - 1})")
        if len(set(masked)) != len(masked):
            raise ValueError(f"masked positions must be distinct, got {list(masked)}")
        bad = [p for p in masked if not 0 <= p <= B - 2]
        if bad:
            raise ValueError(f"masked positions must lie in the magnitude bits 0..{B - 2} "
                             f"(B={B}), got {bad}")
        if not -MAX_SHIFT <= self.shift <= MAX_SHIFT:
            raise ValueError(f"binary-point shift S must be in [-{MAX_SHIFT}, {MAX_SHIFT}], "
                             f"got S={self.shift}")
        object.__setattr__(self, "masked", tuple(sorted(masked)))

    # -- text forms ---------------------------------------------------------------
    @classmethod
    def parse(cls, text: "str | BitMaskPattern") -> "BitMaskPattern":
        """A pattern from ``B_M_p1_…_pM_S`` or the readable ``X0.0XXX`` form."""
        if isinstance(text, BitMaskPattern):
            return text
        if not isinstance(text, str):
            raise TypeError(f"a bit-mask pattern is a string such as '6_2_0_1_0' or "
                            f"'X0.0XXX', got {type(text).__name__}")
        s = text.strip()
        if _NOTATION.match(s):
            fields = [int(f) for f in s.split("_")]
            if len(fields) < 3:
                raise ValueError(f"pattern {text!r}: B_M_p1_…_pM_S needs at least B, M and S "
                                 f"(e.g. '4_0_0'), got {len(fields)} field(s)")
            B, M = fields[0], fields[1]
            if M < 0:
                raise ValueError(f"pattern {text!r}: M (masked bits) must be >= 0, got {M}")
            if len(fields) != M + 3:
                raise ValueError(f"pattern {text!r}: M={M} masked bits needs {M + 3} fields "
                                 f"(B, M, {M} positions, S), got {len(fields)}")
            return cls(B, tuple(fields[2:2 + M]), fields[-1])
        if re.fullmatch(r"[Xx0]+\.[Xx0]*|[Xx0]*\.[Xx0]+|[Xx0]+", s) and s[0] in "Xx":
            if s.count(".") > 1:
                raise ValueError(f"pattern {text!r} has more than one binary point")
            digits = s.replace(".", "")
            point = s.find(".") if "." in s else len(s)      # magnitude bits before the point, + 1
            magnitude = digits[1:]
            masked = tuple(i for i, c in enumerate(magnitude) if c == "0")
            return cls(len(digits), masked, point - 2)
        raise ValueError(f"cannot read {text!r} as a bit-mask pattern: write B_M_p1_…_pM_S "
                         f"(e.g. '6_2_0_1_0') or the X/0 form with the sign first "
                         f"(e.g. 'X0.0XXX')")

    def __str__(self) -> str:
        return "_".join(str(v) for v in (self.bits, len(self.masked), *self.masked, self.shift))

    def readable(self) -> str:
        """The X/0 form: sign first, ``0`` for masked bits, the point after 1 + S magnitude bits."""
        if not -1 <= self.shift <= self.bits - 2:
            raise ValueError(f"pattern {self} puts the binary point outside the word "
                             f"(S={self.shift}); the X/0 form needs -1 <= S <= {self.bits - 2}")
        mag = "".join("0" if p in self.masked else "X" for p in range(self.bits - 1))
        k = self.shift + 1
        return "X" + mag[:k] + "." + mag[k:]

    def __repr__(self) -> str:
        return f"BitMaskPattern('{self}')"

    # -- the value set ----------------------------------------------------------------
    @property
    def effective_bits(self) -> int:
        """B − M: the sign plus the free magnitude bits (what the hardware stores)."""
        return self.bits - len(self.masked)

    @property
    def free_positions(self) -> tuple[int, ...]:
        return tuple(p for p in range(self.bits - 1) if p not in self.masked)

    @property
    def step(self) -> float:
        """Weight of the lowest free bit, 2^(S − max free position): the unit of the codes."""
        return 2.0 ** (self.shift - max(self.free_positions))

    def magnitude_codes(self) -> np.ndarray:
        """Every representable |code| (value / step), ascending, 0 first."""
        return np.array(_magnitude_codes(self.bits, self.masked), dtype=np.int64)

    @property
    def max_code(self) -> int:
        return int(self.magnitude_codes()[-1])

    @property
    def max_value(self) -> float:
        """The largest representable magnitude (the range is [−max_value, max_value])."""
        return self.max_code * self.step

    @property
    def range(self) -> tuple[float, float]:
        return (-self.max_value, self.max_value)

    def values(self) -> np.ndarray:
        """All representable values, ascending, float64 (exact: dyadic rationals)."""
        mags = self.magnitude_codes() * self.step
        return np.concatenate([-mags[:0:-1], mags])

    @property
    def code_dtype(self):
        """The smallest signed integer dtype holding every code (int8 for B ≤ 8)."""
        return np.int8 if self.max_code <= 127 else np.int16


@functools.lru_cache(maxsize=4096)
def _magnitude_codes(bits: int, masked: tuple[int, ...]) -> tuple[int, ...]:
    free = [p for p in range(bits - 1) if p not in masked]
    low = max(free)
    weights = [1 << (low - p) for p in free]
    return tuple(sorted({sum(c) for r in range(len(weights) + 1)
                         for c in itertools.combinations(weights, r)}))


def enumerate_patterns(effective_bits: int, max_bits: int = 8, shifts=(0,)) -> list[BitMaskPattern]:
    """Every pattern with B − M = ``effective_bits``, B ≤ ``max_bits``, S in ``shifts``.

    The candidates of the automatic search: for each B from effective_bits to
    max_bits, every choice of M = B − effective_bits masked positions. Plain
    formats (M = 0) come first, then ascending B."""
    e = int(effective_bits)
    if not 2 <= e <= int(max_bits) <= MAX_BITS:
        raise ValueError(f"need 2 <= effective_bits <= max_bits <= {MAX_BITS}, got "
                         f"effective_bits={effective_bits}, max_bits={max_bits}")
    found = []
    for S in shifts:
        for B in range(e, int(max_bits) + 1):
            for masked in itertools.combinations(range(B - 1), B - e):
                found.append(BitMaskPattern(B, masked, int(S)))
    return found


__all__ = ["BitMaskPattern", "enumerate_patterns", "MAX_BITS", "MAX_SHIFT"]
