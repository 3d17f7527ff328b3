"""The real MNIST subset kept in the repository: data/mnist_subset.npz.

10,000 train (the first 10,000 of the 50,000 train), 2,000 validation (the
first 2,000 of the 10,000 validation) and 2,000 test (the first 2,000 of the
test set), uint8, built by bench/make_embedded_subset.py. Its sha256 is
pinned here, so a corrupt or edited file is refused; rebuilding the file
changes the zip timestamps, so the script prints the new value to pin.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .dataset import Dataset, Splits

SUBSET_FILE = "mnist_subset.npz"
SUBSET_SHA256 = "378e57cae9a3efbb87b06a69df2aff76629f691c1f1f5d20c03cd0ce8cbdf38d"
SUBSET_SIZES = {"train": 10_000, "val": 2_000, "test": 2_000}
SUBSET_KEYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


def candidate_paths() -> list[Path]:
    """Where the subset may be: <repo>/data/ beside the minidnn package."""
    package_parent = Path(__file__).resolve().parents[2]
    return [package_parent / "data" / SUBSET_FILE]


def locate_subset() -> Path:
    candidates = candidate_paths()
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(f"the embedded MNIST subset {SUBSET_FILE} is missing; looked "
                            f"in {looked}. Run from a source checkout (or `pip install -e .`), "
                            f"or rebuild it with bench/make_embedded_subset.py")


def verify_subset(path: Path, expected_sha256: str = SUBSET_SHA256) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected_sha256:
        raise ValueError(f"{path}: sha256 {digest} does not match the pinned "
                         f"{expected_sha256}; the embedded subset is corrupt or was "
                         f"rebuilt without updating SUBSET_SHA256 in {__file__}")
    return digest


def load_embedded(path: Path | None = None, expected_sha256: str = SUBSET_SHA256) -> Splits:
    path = locate_subset() if path is None else Path(path)
    verify_subset(path, expected_sha256)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in SUBSET_KEYS}
    return Splits(*(Dataset.from_uint8(arrays[f"{split}_x"], arrays[f"{split}_y"])
                    for split in ("train", "val", "test")))


def subset_arrays(splits_uint8: dict) -> dict:
    """The subset cut from full-MNIST uint8 split arrays {train_x, train_y, ...}."""
    return {f"{split}_{kind}": np.ascontiguousarray(splits_uint8[f"{split}_{kind}"][:size])
            for split, size in SUBSET_SIZES.items() for kind in ("x", "y")}
