"""CIFAR-10/100 loaders on small synthetic archives in the official layouts.

Each test writes its own archive (a few dozen records) in tmp_path, so the
suite needs no download; one test reads the first records of the real
CIFAR-10 copy in ../shared/data when it is there, and skips otherwise.
"""
import io
import pickle
import tarfile
import warnings

import numpy as np
import pytest

from minidnn.data import CifarFormatError, DataUnavailableError, load
from minidnn.data import cifar


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIDNN_DATA", raising=False)
    # no real shared copy and no network in these tests
    monkeypatch.setattr(cifar, "shared_data_dirs", lambda: [])
    monkeypatch.setattr(cifar, "MIRROR", "http://127.0.0.1:9/")


def synthetic(info, n_per_train_member=8, n_test=6, seed=0):
    """Random images and labels, split into the binary layout's members."""
    rng = np.random.default_rng(seed)
    archive = info.archives[0]
    sizes = [n_per_train_member] * len(archive.train_members) + [n_test]
    members = {}
    for name, n in zip(archive.train_members + (archive.test_member,), sizes):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = [rng.integers(0, c, n).astype(np.uint8) for c in info.label_classes]
        members[name] = (images, labels)
    return members


def write_tar(path, folder, files, mode="w:gz"):
    with tarfile.open(path, mode) as tar:
        for name, payload in files.items():
            entry = tarfile.TarInfo(f"{folder}/{name}")
            entry.size = len(payload)
            tar.addfile(entry, io.BytesIO(payload))
    return path


def binary_files(members):
    return {name: cifar.encode_binary(images, labels)
            for name, (images, labels) in members.items()}


def python_files(info, members):
    """The python layout: a protocol-2 pickled dict per member, as the publisher's."""
    python = info.archives[2]
    binary = info.archives[0]
    files = {}
    for bin_name, py_name in zip(binary.train_members + (binary.test_member,),
                                 python.train_members + (python.test_member,)):
        images, labels = members[bin_name]
        batch = {b"data": images.reshape(len(images), -1)}
        for label_name, values in zip(info.label_names, labels):
            batch[label_name.encode()] = [int(v) for v in values]
        files[py_name] = pickle.dumps(batch, protocol=2)
    return files


def expected_pool(info, members, label="labels"):
    archive = info.archives[0]
    k = info.label_names.index(label)
    images = np.concatenate([members[m][0] for m in archive.train_members])
    labels = np.concatenate([members[m][1][k] for m in archive.train_members])
    return images, labels


@pytest.mark.parametrize("layout", ["binary.tar.gz", "binary.tar.xz", "python.tar.gz",
                                    "binary folder"])
def test_cifar10_layouts_all_give_pixel_over_255_with_the_last_images_as_validation(
        tmp_path, layout):
    members = synthetic(cifar.CIFAR10)
    if layout == "python.tar.gz":
        write_tar(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                  python_files(cifar.CIFAR10, members))
    elif layout == "binary folder":
        folder = tmp_path / "cifar-10-batches-bin"
        folder.mkdir()
        for name, payload in binary_files(members).items():
            (folder / name).write_bytes(payload)
    else:
        mode = "w:xz" if layout.endswith("xz") else "w:gz"
        write_tar(tmp_path / f"cifar-10-{layout}", "cifar-10-batches-bin",
                  binary_files(members), mode)
    with pytest.warns(UserWarning, match="not a known CIFAR-10 release"):
        train, val, test = load("cifar10", data_dir=tmp_path, val_size=10, progress=False)
    pool_images, pool_labels = expected_pool(cifar.CIFAR10, members)
    assert train.x.shape == (30, 3, 32, 32) and val.x.shape == (10, 3, 32, 32)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    np.testing.assert_array_equal(val.x, pool_images[-10:] / np.float32(255))
    np.testing.assert_array_equal(np.concatenate([train.y, val.y]), pool_labels)
    images, labels = members["test_batch.bin"]
    np.testing.assert_array_equal(test.x * 255, images.astype(np.float32))
    np.testing.assert_array_equal(test.y, labels[0])


def test_binary_record_is_label_then_red_green_blue_planes_row_major():
    record = bytearray(1 + 3072)
    record[0] = 7
    record[1 + 0 * 1024 + 2 * 32 + 5] = 11     # red, row 2, column 5
    record[1 + 2 * 1024 + 31 * 32 + 0] = 22    # blue, row 31, column 0
    images, (labels,) = cifar.parse_binary(bytes(record), cifar.CIFAR10, "one")
    assert labels.tolist() == [7]
    assert images[0, 0, 2, 5] == 11 and images[0, 2, 31, 0] == 22
    assert images.sum() == 33


def test_cifar100_binary_and_python_agree_on_fine_and_coarse_labels(tmp_path):
    members = synthetic(cifar.CIFAR100, n_per_train_member=30, n_test=5)
    binary_dir, python_dir = tmp_path / "b", tmp_path / "p"
    binary_dir.mkdir(), python_dir.mkdir()
    write_tar(binary_dir / "cifar-100-binary.tar.gz", "cifar-100-binary", binary_files(members))
    write_tar(python_dir / "cifar-100-python.tar.gz", "cifar-100-python",
              python_files(cifar.CIFAR100, members))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label in ("fine_labels", "coarse_labels"):
            name = "cifar100" if label == "fine_labels" else "cifar100-coarse"
            from_binary = load(name, data_dir=binary_dir, val_size=5, progress=False)
            from_python = load(name, data_dir=python_dir, val_size=5, progress=False)
            _, pool_labels = expected_pool(cifar.CIFAR100, members, label)
            for a, b in zip(from_binary, from_python):
                np.testing.assert_array_equal(a.x, b.x)
                np.testing.assert_array_equal(a.y, b.y)
            np.testing.assert_array_equal(
                np.concatenate([from_binary.train.y, from_binary.val.y]), pool_labels)
    # binary order is (coarse, fine): a coarse byte of 19 with a fine byte of 99 is valid
    record = bytes([19, 99]) + bytes(3072)
    _, (coarse, fine) = cifar.parse_binary(record, cifar.CIFAR100, "r")
    assert (coarse[0], fine[0]) == (19, 99)


@pytest.mark.parametrize("payload, message", [
    (bytes(3073 * 2 + 100), "truncated record of 100 bytes"),
    (bytes([10]) + bytes(3072), "labels must be in 0..9, got 10 at record 0"),
    (b"", "empty file"),
])
def test_malformed_binary_batches_raise_naming_the_defect(payload, message):
    with pytest.raises(CifarFormatError, match=message):
        cifar.parse_binary(payload, cifar.CIFAR10, "data_batch_1.bin")


def test_cifar100_labels_are_checked_against_20_coarse_and_100_fine_classes():
    with pytest.raises(CifarFormatError, match="coarse_labels must be in 0..19, got 20"):
        cifar.parse_binary(bytes([20, 5]) + bytes(3072), cifar.CIFAR100, "train.bin")
    with pytest.raises(CifarFormatError, match="fine_labels must be in 0..99, got 100"):
        cifar.parse_binary(bytes([2, 100]) + bytes(3072), cifar.CIFAR100, "train.bin")


@pytest.mark.parametrize("batch, message", [
    ({b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]},
     r"data must be uint8 of shape \(N, 3072\), got uint8 \(2, 3000\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"labels must be \(2,\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "got 12 at record 1"),
    ({b"data": np.zeros((2, 3072), np.uint8)}, "missing labels"),
])
def test_malformed_python_batches_raise_naming_the_defect(batch, message):
    with pytest.raises(CifarFormatError, match=message):
        cifar.parse_python(pickle.dumps(batch, protocol=2), cifar.CIFAR10, "data_batch_1")


class _RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("echo owned > /dev/null",))


def test_python_batch_that_would_run_code_is_refused():
    payload = pickle.dumps({b"data": _RunsCode(), b"labels": []}, protocol=2)
    with pytest.raises(CifarFormatError, match="refusing to load posix.system"):
        cifar.parse_python(payload, cifar.CIFAR10, "data_batch_1")


def test_archive_missing_a_member_names_it(tmp_path):
    files = binary_files(synthetic(cifar.CIFAR10))
    del files["data_batch_3.bin"]
    write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin", files)
    with pytest.raises(CifarFormatError, match="missing data_batch_3.bin"):
        load("cifar10", data_dir=tmp_path, progress=False)


def test_a_named_directory_without_the_files_stops_the_load(tmp_path):
    # the user's directory is used or the load stops: no silent fallback to the cache
    with pytest.raises(DataUnavailableError) as caught:
        load("cifar100", data_dir=tmp_path, download=False, progress=False)
    text = str(caught.value)
    assert str(tmp_path) in text and "cifar-100" in text


def test_nothing_found_lists_every_place_tried(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDNN_DATA", raising=False)
    monkeypatch.setenv("MINIDNN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cifar, "shared_data_dirs", lambda: [])
    with pytest.raises(DataUnavailableError) as caught:
        load("cifar100", download=False, progress=False)
    text = str(caught.value)
    assert "cifar-100-binary.tar.gz" in text and "cache" in text and "download=False" in text


def test_verified_content_is_cached_and_a_corrupt_cache_is_ignored(tmp_path, monkeypatch):
    members = synthetic(cifar.CIFAR10)
    write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
              binary_files(members))
    digests = {name: __import__("hashlib").sha256(payload).hexdigest()
               for name, payload in binary_files(members).items()}
    monkeypatch.setitem(cifar.KNOWN_CONTENT, "cifar10", {"synthetic release": digests})
    first = load("cifar10", data_dir=tmp_path, val_size=10, progress=False)
    cached = tmp_path / "cache" / "cifar10.npz"
    assert cached.is_file()
    (tmp_path / "cifar-10-binary.tar.gz").unlink()
    again = load("cifar10", val_size=10, progress=False, download=False)
    np.testing.assert_array_equal(first.train.x, again.train.x)
    np.testing.assert_array_equal(first.test.y, again.test.y)
    # flip one pixel: the stored sha256 no longer matches, so the cache is refused
    with np.load(cached) as archive:
        arrays = dict(archive)
    arrays["train_images"][0, 0, 0, 0] ^= 1
    np.savez(cached, **arrays)
    with pytest.warns(UserWarning, match="ignoring corrupt cache"):
        with pytest.raises(DataUnavailableError):
            load("cifar10", val_size=10, progress=False, download=False)


def test_content_digests_of_the_split_pool_equal_those_of_the_binary_members():
    members = synthetic(cifar.CIFAR10)
    arrays = cifar.arrays_from_members(binary_files(members), cifar.CIFAR10,
                                       cifar.CIFAR10.archives[0], "synthetic")
    import hashlib
    assert cifar.content_digests(cifar.CIFAR10, arrays) == {
        name: hashlib.sha256(payload).hexdigest()
        for name, payload in binary_files(members).items()}


def test_real_cifar10_copy_first_records_are_valid_images():
    """Cut 300 records from the shared JPEG-derived copy (skips when absent)."""
    from pathlib import Path
    root = Path(cifar.__file__).resolve().parents[2]
    paths = [d / "cifar-10-binary.tar.xz" for d in
             (root.parent / "shared" / "data", root.parent.parent / "shared" / "data")]
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        pytest.skip("shared/data/cifar-10-binary.tar.xz is not on this machine")
    with tarfile.open(path) as tar:
        member = next(m for m in tar if m.isfile() and m.name.endswith(".bin"))
        payload = tar.extractfile(member).read(300 * 3073)
    images, (labels,) = cifar.parse_binary(payload, cifar.CIFAR10, member.name)
    assert images.shape == (300, 3, 32, 32)
    assert len(np.unique(labels)) == 10
    # the documented train means are 125.3 / 122.9 / 113.9: red brightest, blue darkest
    means = images.reshape(300, 3, -1).mean(axis=(0, 2))
    assert 100 < means[2] < means[0] < 150


def test_cli_data_fetch_cifar10_reports_the_split(tmp_path, monkeypatch, capsys):
    from minidnn.cli import main
    members = synthetic(cifar.CIFAR10, n_per_train_member=20)
    write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
              binary_files(members))
    with pytest.warns(UserWarning):
        assert main(["data", "fetch", "cifar10", "--data-dir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "100 training images (split 90 train / 10 validation" in out


# -- what a user sees when the data is damaged or missing (sitting 20) ---------------

def test_a_truncated_archive_says_so_with_its_checksum(tmp_path):
    good = write_tar(tmp_path / "full.tar.xz", "cifar-10-batches-bin",
                     binary_files(synthetic(cifar.CIFAR10)), mode="w:xz")
    folder = tmp_path / "data"
    folder.mkdir()
    payload = good.read_bytes()
    (folder / "cifar-10-binary.tar.xz").write_bytes(payload[:len(payload) // 2])
    with pytest.raises(CifarFormatError) as caught:
        load("cifar10", data_dir=folder, progress=False)
    text = str(caught.value)
    assert "truncated or corrupt" in text and "cifar-10-binary.tar.xz" in text
    # the pinned sha256 of the expected archive is named, so the user knows to fetch again
    assert cifar.CIFAR10.archives[1].sha256 in text and "fetch it again" in text


def test_minidnn_data_that_is_missing_or_a_file_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDNN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataUnavailableError, match=r"\$MINIDNN_DATA.*does not exist"):
        load("cifar10", progress=False)
    archive = write_tar(tmp_path / "cifar-10-binary.tar.gz", "cifar-10-batches-bin",
                        binary_files(synthetic(cifar.CIFAR10)))
    monkeypatch.setenv("MINIDNN_DATA", str(archive))
    with pytest.raises(DataUnavailableError, match="it is a file: name the directory"):
        load("cifar10", progress=False)
    monkeypatch.setenv("MINIDNN_DATA", str(tmp_path))      # the directory: it loads
    with pytest.warns(UserWarning, match="not a known"):
        assert len(load("cifar10", val_size=4, progress=False).test) == 6


def test_download_errors_are_said_in_words():
    import socket
    import urllib.error
    no_name = urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    assert cifar._network_error(no_name).startswith("no network: the host name did not resolve")
    assert cifar._network_error(urllib.error.URLError(TimeoutError("timed out"))).startswith(
        "no network: the connection timed out")
    assert cifar._network_error(urllib.error.URLError(ConnectionRefusedError(111, "refused"))
                                ).startswith("could not connect")


def test_nothing_found_tells_the_command_line_user_about_data_dir(tmp_path, capsys):
    from minidnn.cli import main
    try:
        code = main(["data", "fetch", "cifar100", "--quiet"])
    except SystemExit as exit:
        code = exit.code
    assert code not in (0, None)
    err = capsys.readouterr().err
    assert "--data-dir DIR" in err and "MINIDNN_DATA" in err
    assert "could not connect" in err or "no network" in err     # the mirror, in words
