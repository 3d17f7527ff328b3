"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from their standard archives.

>>> from minidnn.data import load
>>> train, val, test = load("cifar10")            # 45,000 / 5,000 / 10,000
>>> train.x.shape, train.x.dtype, train.y.dtype
((45000, 3, 32, 32), dtype('float32'), dtype('int64'))
>>> coarse = load("cifar100-coarse")              # the 20 superclasses

x = pixel / 255 in float32, channels R, G, B; y int64.

Validation split: the LAST 5,000 images of the 50,000 training images (in file
order: data_batch_1 ... data_batch_5 for CIFAR-10, train for CIFAR-100), so
train is 45,000, validation 5,000 and the official 10,000 test set is kept
apart. The official files are already shuffled, so the last 5,000 are close to
class-balanced (CIFAR-10: 470-530 per class). `val_size=` changes the size.

Formats read (`tarfile` detects gzip and xz itself):

- binary: `cifar-10-batches-bin/data_batch_{1..5}.bin`, `test_batch.bin`;
  a record is 1 label byte then 3,072 pixel bytes (1,024 R, 1,024 G, 1,024 B,
  each 32x32 row-major). CIFAR-100 `cifar-100-binary/train.bin`, `test.bin`:
  2 label bytes (coarse, then fine) then the 3,072 pixels.
- python: `cifar-10-batches-py/data_batch_{1..5}`, `test_batch` and
  `cifar-100-python/train`, `test`: pickled dicts with `data` (N, 3072) uint8
  and `labels` (CIFAR-10) or `fine_labels` / `coarse_labels` (CIFAR-100).
  They are read ONLY through a restricted unpickler that admits plain
  containers and NumPy arrays and nothing else (no code can run), after the
  archive's md5 has been compared with the publisher's.

Sources, tried in order:

1. a directory: `data_dir`, else $MINIDNN_DATA: the extracted folder or an
   archive (`cifar-10-binary.tar.gz`, `cifar-10-binary.tar.xz`,
   `cifar-10-python.tar.gz`; the same names with 100), in it or in `<dir>/<name>`;
2. the cache npz ($MINIDNN_CACHE, else ~/.cache/minidnn), checked on read;
3. the publisher's site, md5 verified (download=True only);
4. last, `shared/data/` beside the project root or one level above it
   (../shared/data/cifar-10-binary.tar.xz on the development machines: a
   JPEG-derived copy in the official binary layout, see shared/DATA.md).

Decoding an archive takes ~10 s, so verified data is cached as an npz of
uint8 arrays plus the sha256 of each split's official binary encoding; the
cache is re-hashed on every read and ignored (with a warning) if it differs.
Data is cached only when verified: the archive's md5 is the publisher's, or
the decoded content matches a pinned content set (`KNOWN_CONTENT`).
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .dataset import Splits, split_train_pool

PIXELS = 3 * 32 * 32
IMAGE_SHAPE = (3, 32, 32)
DEFAULT_VAL_SIZE = 5_000
MIRROR = "https://www.cs.toronto.edu/~kriz/"


class CifarFormatError(ValueError):
    """A CIFAR file is malformed (truncated record, bad label, wrong size)."""


@dataclass(frozen=True)
class CifarArchive:
    filename: str            # "cifar-10-binary.tar.gz"
    folder: str              # the folder inside the tar: "cifar-10-batches-bin"
    kind: str                # "binary" or "python"
    train_members: tuple     # in pool order
    test_member: str
    md5: str | None = None   # of the .tar.gz as the publisher serves it
    sha256: str | None = None


@dataclass(frozen=True)
class CifarInfo:
    name: str                # "cifar10", "cifar100"
    title: str
    label_names: tuple       # ("labels",) or ("coarse_labels", "fine_labels"): file order
    label_classes: tuple     # classes per label, same order
    archives: tuple          # CifarArchive, tried in this order within a directory

    @property
    def parts(self) -> tuple:
        return (("train_images",) + tuple(f"train_{n}" for n in self.label_names)
                + ("test_images",) + tuple(f"test_{n}" for n in self.label_names))


_C10_BIN_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_C10_PY_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

CIFAR10 = CifarInfo(
    name="cifar10", title="CIFAR-10", label_names=("labels",), label_classes=(10,),
    archives=(
        CifarArchive("cifar-10-binary.tar.gz", "cifar-10-batches-bin", "binary",
                     _C10_BIN_TRAIN, "test_batch.bin", "c32a1d4ab5d03f1284b67883e8d87530",
                     "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
        CifarArchive("cifar-10-binary.tar.xz", "cifar-10-batches-bin", "binary",
                     _C10_BIN_TRAIN, "test_batch.bin", None,
                     "3eaa2aa3351f577c451aa2346d01560297cef900a6516521d4254ce018f67c6e"),
        CifarArchive("cifar-10-python.tar.gz", "cifar-10-batches-py", "python",
                     _C10_PY_TRAIN, "test_batch", "c58f30108f718f92721af3b95e74349a"),
    ))

CIFAR100 = CifarInfo(
    name="cifar100", title="CIFAR-100", label_names=("coarse_labels", "fine_labels"),
    label_classes=(20, 100),
    archives=(
        CifarArchive("cifar-100-binary.tar.gz", "cifar-100-binary", "binary",
                     ("train.bin",), "test.bin", "03b5dce01913d631647c71ecec9e9cb8"),
        CifarArchive("cifar-100-binary.tar.xz", "cifar-100-binary", "binary",
                     ("train.bin",), "test.bin"),
        CifarArchive("cifar-100-python.tar.gz", "cifar-100-python", "python",
                     ("train",), "test", "eb9058c3a382ffc7106e4002c42a8d85"),
    ))

CIFAR_DATASETS = {info.name: info for info in (CIFAR10, CIFAR100)}
# Public dataset name -> (CifarInfo, which label becomes y).
DATASET_NAMES = {"cifar10": (CIFAR10, "labels"), "cifar100": (CIFAR100, "fine_labels"),
                 "cifar100-coarse": (CIFAR100, "coarse_labels")}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                   "horse", "ship", "truck")

# Content sets whose per-split sha256 (of the official binary encoding, one
# digest per binary member) we know; decoded data matching one is cached.
KNOWN_CONTENT = {
    "cifar10": {
        "CIFAR-10 (JPEG-derived copy, shared/DATA.md)": {
            "data_batch_1.bin": "00e164725b193c142736337971f031acecee24eee6954ab110f412aa32c872a0",
            "data_batch_2.bin": "8d88e84adfe486b41fc23333a277d185851395d3470dba6e39b53e73480733c1",
            "data_batch_3.bin": "a856f5b5cd218d9cd706a782359f9df950535168f5f924cfc4d862da899cce5a",
            "data_batch_4.bin": "a63da54567e6cf909c234791ab0686c5fe19f3188b61b94a9510755ce0f2a641",
            "data_batch_5.bin": "f7e6fc59c58a27113e69f6953dc0771d49199459c2f16b70f2da82e56136dd97",
            "test_batch.bin": "e5a0991030bab9817df34389a38dc00c3be289a9a8da425a0241a8ceaf4e1b08",
        },
    },
    "cifar100": {},
}


# --------------------------------------------------------------------------
# decoding one file

def parse_binary(payload: bytes, info: CifarInfo, name: str) -> tuple[np.ndarray, list]:
    """Records of the binary format -> (images (N, 3, 32, 32) uint8, [labels (N,) uint8]).

    A record is len(info.label_names) label bytes followed by 3,072 pixels.
    """
    n_labels = len(info.label_names)
    record = n_labels + PIXELS
    if len(payload) == 0:
        raise CifarFormatError(f"{name}: empty file, expected {record}-byte records")
    if len(payload) % record:
        raise CifarFormatError(
            f"{name}: {len(payload):,} bytes is not a whole number of {record}-byte "
            f"{info.title} records ({len(payload) // record:,} records and a truncated "
            f"record of {len(payload) % record} bytes)")
    table = np.frombuffer(payload, np.uint8).reshape(-1, record)
    labels = [table[:, i].copy() for i in range(n_labels)]
    images = table[:, n_labels:].reshape((-1,) + IMAGE_SHAPE).copy()
    _check_labels(labels, info, name)
    return images, labels


def _check_labels(labels: list, info: CifarInfo, name: str) -> None:
    for values, label_name, n_classes in zip(labels, info.label_names, info.label_classes):
        bad = np.flatnonzero(values >= n_classes)
        if bad.size:
            raise CifarFormatError(
                f"{name}: {label_name} must be in 0..{n_classes - 1}, got "
                f"{int(values[bad[0]])} at record {int(bad[0])} ({bad.size} bad labels)")




from .sources import _NumpyOnlyUnpickler  # noqa: E402  (dicts, lists, bytes are opcodes: only NumPy's globals are admitted)


def parse_python(payload: bytes, info: CifarInfo, name: str) -> tuple[np.ndarray, list]:
    """One pickled python-format batch -> (images (N, 3, 32, 32) uint8, [labels])."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    except pickle.UnpicklingError as error:
        raise CifarFormatError(f"{name}: {error}") from error
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise CifarFormatError(f"{name}: not a readable pickle ({error})") from error
    if not isinstance(batch, dict):
        raise CifarFormatError(f"{name}: expected a pickled dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    missing = [k for k in ("data",) + info.label_names if k not in batch]
    if missing:
        raise CifarFormatError(f"{name}: missing {', '.join(missing)} (keys present: "
                               f"{', '.join(sorted(map(str, batch)))})")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise CifarFormatError(f"{name}: data must be uint8 of shape (N, {PIXELS}), got "
                               f"{data.dtype} {data.shape}")
    labels = []
    for label_name, n_classes in zip(info.label_names, info.label_classes):
        values = np.asarray(batch[label_name])
        if values.shape != (len(data),):
            raise CifarFormatError(f"{name}: {label_name} must be ({len(data)},) like the "
                                   f"images, got shape {values.shape}")
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            bad = int(np.flatnonzero((values < 0) | (values >= n_classes))[0])
            raise CifarFormatError(f"{name}: {label_name} must be in 0..{n_classes - 1}, "
                                   f"got {int(values[bad])} at record {bad}")
        labels.append(values.astype(np.uint8))
    return data.reshape((-1,) + IMAGE_SHAPE).copy(), labels


def encode_binary(images: np.ndarray, labels: list) -> bytes:
    """The inverse of parse_binary: the official binary records of these arrays."""
    columns = [np.asarray(v, np.uint8)[:, None] for v in labels]
    return np.concatenate(columns + [images.reshape(len(images), PIXELS)], axis=1).tobytes()


# --------------------------------------------------------------------------
# members -> arrays

def arrays_from_members(members: dict, info: CifarInfo, archive: CifarArchive,
                        origin: str) -> dict:
    """{member basename: bytes} of one archive layout -> the uint8 arrays by part."""
    parse = parse_binary if archive.kind == "binary" else parse_python
    needed = archive.train_members + (archive.test_member,)
    missing = [m for m in needed if m not in members]
    if missing:
        raise CifarFormatError(f"{origin}: missing {', '.join(missing)}")
    arrays = {}
    for split, names in (("train", archive.train_members), ("test", (archive.test_member,))):
        decoded = [parse(members[m], info, f"{origin}/{m}") for m in names]
        arrays[f"{split}_images"] = np.concatenate([d[0] for d in decoded])
        for i, label_name in enumerate(info.label_names):
            arrays[f"{split}_{label_name}"] = np.concatenate([d[1][i] for d in decoded])
    return arrays


def content_digests(info: CifarInfo, arrays: dict) -> dict:
    """sha256 of the official binary encoding of each member, from the arrays.

    CIFAR-10's training pool is cut into the five 10,000-record batches in order
    (so the digests equal those of data_batch_N.bin); CIFAR-100 has one train.bin.
    """
    binary = info.archives[0]
    pools = {"train": np.array_split(np.arange(len(arrays["train_images"])),
                                     len(binary.train_members)),
             "test": [np.arange(len(arrays["test_images"]))]}
    digests = {}
    for split, members in (("train", binary.train_members), ("test", (binary.test_member,))):
        for member, rows in zip(members, pools[split]):
            payload = encode_binary(arrays[f"{split}_images"][rows],
                                    [arrays[f"{split}_{n}"][rows] for n in info.label_names])
            digests[member] = hashlib.sha256(payload).hexdigest()
    return digests


def known_content(info: CifarInfo, digests: dict) -> str | None:
    """The title of the pinned content set these digests match, else None."""
    for title, pinned in KNOWN_CONTENT.get(info.name, {}).items():
        if pinned == digests:
            return title
    return None


def _file_digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def read_archive(path: str | os.PathLike, info: CifarInfo, archive: CifarArchive,
                 progress: bool = False) -> tuple[dict, bool]:
    """(arrays, archive_is_official) from a .tar.gz / .tar.xz of the given layout.

    Only regular members directly inside `archive.folder` with the expected names
    are read; nothing is extracted to disk.
    """
    path = Path(path)
    md5, sha = _file_digests(path)
    official = (archive.md5 is not None and md5 == archive.md5) or \
               (archive.sha256 is not None and sha == archive.sha256)
    wanted = set(archive.train_members + (archive.test_member,))
    members = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if (member.isfile() and len(parts) == 2 and parts[0] == archive.folder
                        and parts[1] in wanted):
                    if progress:
                        print(f"minidnn: decoding {path.name}:{member.name}", flush=True)
                    members[parts[1]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CifarFormatError(
            f"{path}: not a readable tar archive, truncated or corrupt ({error}); "
            f"{_checksum_note(path, archive, md5, sha)}") from error
    return arrays_from_members(members, info, archive, str(path)), official


def _checksum_note(path: Path, archive: CifarArchive, md5: str, sha: str) -> str:
    """What the checksums of an unreadable archive say, for its error message."""
    size = f"{path.stat().st_size:,} bytes"
    if archive.sha256 is not None:
        return (f"its sha256 {sha} ({size}) is not the {archive.filename} expected "
                f"({archive.sha256}); fetch it again")
    if archive.md5 is not None:
        return (f"its md5 {md5} ({size}) is not the publisher's {archive.filename} "
                f"({archive.md5}); download it again")
    return f"{size}, sha256 {sha}"


def read_folder(folder: Path, info: CifarInfo, archive: CifarArchive) -> dict:
    members = {}
    for name in archive.train_members + (archive.test_member,):
        if (folder / name).is_file():
            members[name] = (folder / name).read_bytes()
    return arrays_from_members(members, info, archive, str(folder))


# --------------------------------------------------------------------------
# sources

class CifarUnavailable(Exception):
    pass


def _from_directory(info: CifarInfo, directory: Path, progress: bool) -> tuple[dict, str, bool]:
    """(arrays, provenance, verified) from the first layout found in directory."""
    if not directory.is_dir():
        raise CifarUnavailable(f"{directory} is not a directory"
                               + (" (it is a file: name the directory that holds it)"
                                  if directory.is_file() else " (it does not exist)"))
    for base in (directory / info.name, directory):
        for archive in info.archives:
            folder = base / archive.folder
            if folder.is_dir() and all((folder / m).is_file() for m in
                                       archive.train_members + (archive.test_member,)):
                arrays = read_folder(folder, info, archive)
                return arrays, f"read the {archive.kind} files in {folder}", False
            if (base / archive.filename).is_file():
                arrays, official = read_archive(base / archive.filename, info, archive,
                                                progress)
                checked = ("publisher's checksum verified" if official
                           else "NOT the publisher's checksum")
                return arrays, f"read {base / archive.filename} ({checked})", official
    names = ", ".join(a.filename for a in info.archives)
    raise CifarUnavailable(f"{directory} (and {directory / info.name}) holds none of "
                           f"{names} nor their extracted folders")


def _from_mirror(info: CifarInfo, progress: bool) -> tuple[dict, str]:
    from .sources import download
    errors = []
    for archive in info.archives:
        if archive.md5 is None:
            continue
        with tempfile.TemporaryDirectory(prefix="minidnn-") as tmp:
            path = Path(tmp) / archive.filename
            try:
                download(MIRROR + archive.filename, path, progress)
            except (urllib.error.URLError, OSError, TimeoutError) as error:
                errors.append(f"{MIRROR + archive.filename}: {_network_error(error)}")
                continue
            arrays, official = read_archive(path, info, archive, progress)
            if not official:
                errors.append(f"{MIRROR + archive.filename}: md5 differs from "
                              f"{archive.md5}; not used")
                continue
            return arrays, f"downloaded {MIRROR + archive.filename} (md5 verified)"
    raise CifarUnavailable("; ".join(errors) or "no mirror")


def _network_error(error: Exception) -> str:
    """A download error in words: no network (the name did not resolve, the host is
    unreachable, a timeout) is said as such; HTTP errors are given as they are."""
    reason = getattr(error, "reason", error)
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    import socket
    if isinstance(reason, socket.gaierror):
        return f"no network: the host name did not resolve ({reason.strerror or reason})"
    if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(error, TimeoutError):
        return f"no network: the connection timed out ({reason})"
    if isinstance(reason, ConnectionError):
        return f"could not connect ({reason})"
    return str(error)


def shared_data_dirs() -> list[Path]:
    """shared/data beside the project root, or beside its parent (worktrees)."""
    root = Path(__file__).resolve().parents[2]
    return [root.parent / "shared" / "data", root.parent.parent / "shared" / "data"]


def _cache_path(info: CifarInfo) -> Path:
    from .cache import cache_dir
    return cache_dir() / f"{info.name}.npz"


def read_cache(info: CifarInfo) -> tuple[dict, str] | None:
    """(arrays, what they are) from the cache, re-hashed; None if absent or bad."""
    path = _cache_path(info)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {part: archive[part] for part in info.parts}
            stored = dict(zip(archive["digest_members"].tolist(),
                              archive["digest_values"].tolist()))
            title = str(archive["title"])
        _check_arrays(arrays, info, str(path))
    except (OSError, KeyError, ValueError) as error:
        warnings.warn(f"ignoring unreadable cache {path}: {error}", stacklevel=3)
        return None
    if content_digests(info, arrays) != stored:
        warnings.warn(f"ignoring corrupt cache {path}: its arrays no longer match the "
                      f"sha256 stored with them", stacklevel=3)
        return None
    return arrays, title


def write_cache(info: CifarInfo, arrays: dict, title: str) -> Path:
    path = _cache_path(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    digests = content_digests(info, arrays)
    temporary = path.with_suffix(f".tmp{os.getpid()}.npz")
    # Uncompressed: the pixels barely compress and np.load is then ~0.2 s.
    np.savez(temporary, title=np.array(title), digest_members=np.array(list(digests)),
             digest_values=np.array(list(digests.values())),
             **{part: arrays[part] for part in info.parts})
    os.replace(temporary, path)
    return path


def _check_arrays(arrays: dict, info: CifarInfo, origin: str) -> None:
    for split in ("train", "test"):
        images = arrays[f"{split}_images"]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise ValueError(f"{origin}: {split} images must be uint8 (N, 3, 32, 32), got "
                             f"{images.dtype} {images.shape}")
        for label_name in info.label_names:
            labels = arrays[f"{split}_{label_name}"]
            if labels.shape != (len(images),):
                raise ValueError(f"{origin}: {split} {label_name} must be "
                                 f"({len(images)},), got {labels.shape}")


def obtain(info: CifarInfo, data_dir=None, download: bool = True, progress: bool = True,
           use_cache: bool = True) -> tuple[dict, str]:
    """(uint8 arrays by part, provenance sentence) from the first source that works;
    verified data read from anywhere but the cache is written to the cache."""
    attempts = []
    chosen = data_dir if data_dir is not None else os.environ.get("MINIDNN_DATA")

    def finish(arrays, provenance, verified):
        digests = content_digests(info, arrays)
        title = known_content(info, digests)
        if title is None and verified:
            title = f"{info.title} (publisher's archive)"
        if title is None:
            warnings.warn(f"{provenance}: its content is not a known {info.title} release "
                          f"(no pinned checksum matches); using it as given", stacklevel=4)
            return arrays, provenance + "; content not verified, not cached"
        if use_cache:
            try:
                written = write_cache(info, arrays, title)
                provenance += f"; {title}, cached at {written}"
            except OSError as error:
                warnings.warn(f"could not write the cache {_cache_path(info)}: {error}",
                              stacklevel=4)
        return arrays, provenance

    if chosen:
        try:
            return finish(*_from_directory(info, Path(chosen), progress))
        except CifarUnavailable as error:
            # A directory the user named is used or the load stops: falling back to the
            # cache or a download would hide that their files are missing.
            from .api import DataUnavailableError
            raise DataUnavailableError(
                f"{info.title}: the directory {os.fspath(chosen)!r} given by "
                f"{'data_dir=' if data_dir is not None else '$MINIDNN_DATA'} cannot be used: "
                f"{error}") from None
    if use_cache:
        cached = read_cache(info)
        if cached is not None:
            return cached[0], f"read the cache {_cache_path(info)} ({cached[1]}, sha256 verified)"
        attempts.append(f"cache: no valid {_cache_path(info)}")
    if download:
        try:
            arrays, provenance = _from_mirror(info, progress)
            return finish(arrays, provenance, True)
        except CifarUnavailable as error:
            attempts.append(f"mirror: {error}")
    else:
        attempts.append("download=False, so the publisher's site was not tried")
    for directory in shared_data_dirs():
        if directory.is_dir():
            try:
                return finish(*_from_directory(info, directory, progress))
            except CifarUnavailable as error:
                attempts.append(f"shared data: {error}")
    from .api import DataUnavailableError
    raise DataUnavailableError(
        f"could not get {info.title}. Tried, in order:\n  - " + "\n  - ".join(attempts)
        + f"\nPut {' or '.join(a.filename for a in info.archives)} (or its extracted "
          f"folder) in a directory and name it: data_dir= in Python, --data-dir DIR on the "
          f"command line, or the environment variable MINIDNN_DATA; or run `minidnn data "
          f"fetch {info.name}` on a machine with a network connection.")


def load(name: str, data_dir=None, download: bool = True, progress: bool = True,
         val_size: int | None = None, log=None) -> Splits:
    """Splits(train, val, test) of CIFAR-10, CIFAR-100 (fine) or CIFAR-100 coarse.

    x float32 (N, 3, 32, 32) = pixel / 255; y int64. Validation is the LAST
    val_size (default 5,000) of the 50,000 training images.
    """
    info, label = DATASET_NAMES[name]
    arrays, provenance = obtain(info, data_dir, download, progress)
    if log is not None:
        log(f"data: {info.title}: {provenance}")
    n_pool = len(arrays["train_images"])
    if val_size is None:
        val_size = DEFAULT_VAL_SIZE if n_pool > DEFAULT_VAL_SIZE else n_pool // 10
    return split_train_pool(arrays["train_images"], arrays[f"train_{label}"],
                            arrays["test_images"], arrays[f"test_{label}"], val_size)


def fetch(name: str, data_dir=None, progress: bool = True) -> str:
    """Make `name` available in the cache; return a one-paragraph report."""
    info, _ = DATASET_NAMES[name]
    arrays, provenance = obtain(info, data_dir, True, progress)
    n_pool, n_test = len(arrays["train_images"]), len(arrays["test_images"])
    val = DEFAULT_VAL_SIZE if n_pool > DEFAULT_VAL_SIZE else n_pool // 10
    labels = " and ".join(f"{n.replace('_', ' ')} (0..{c - 1})"
                          for n, c in zip(info.label_names, info.label_classes))
    return (f"{info.title}: {provenance}. Sizes: {n_pool:,} training images (split "
            f"{n_pool - val:,} train / {val:,} validation, the validation being the last "
            f"{val:,}) and {n_test:,} test images of 3x32x32 uint8 pixels with {labels}, "
            f"loaded as pixel/255.")
