"""The local cache: one npz of uint8 arrays per dataset, verified on read.

Location: $MINIDNN_CACHE, else ~/.cache/minidnn. The npz holds the IDX
layout (`registry.PARTS`), so its arrays re-encode to the official IDX bytes
and are checked against the pinned content sha256 every time they are read.
Only verified official data is ever written here.
"""
from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import registry
from .sources import content_matches, validate_arrays


def cache_dir() -> Path:
    return Path(os.environ.get("MINIDNN_CACHE") or Path.home() / ".cache" / "minidnn")


def cache_path(name: str) -> Path:
    return cache_dir() / f"{name}.npz"


def read_cache(info: registry.DatasetInfo) -> dict | None:
    """The cached arrays, or None when absent; a corrupt cache is warned about."""
    path = cache_path(info.name)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = validate_arrays({part: archive[part] for part in registry.PARTS},
                                     str(path))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        # garbage, truncated and empty files: np.load raises each of these
        warnings.warn(f"ignoring unreadable cache {path}: {type(error).__name__}: {error}",
                      stacklevel=3)
        return None
    bad = [part for part, ok in content_matches(info, arrays).items() if not ok]
    if bad:
        warnings.warn(f"ignoring corrupt cache {path}: {', '.join(bad)} fail the "
                      f"content sha256 check", stacklevel=3)
        return None
    return arrays


def write_cache(info: registry.DatasetInfo, arrays: dict) -> Path:
    """Write atomically (temp file, then rename) so a crash leaves no half file."""
    path = cache_path(info.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez_compressed(temporary, **{part: arrays[part] for part in registry.PARTS})
    os.replace(temporary, path)
    return path
