"""Per-channel normalisation and the standard CIFAR augmentation.

* ``ChannelNormalize(mean, std)``: x' = (x − mean[c]) / std[c] per channel c,
  statistics from the TRAINING images only (``ChannelNormalize.fit``).
  Caffe's Cifar10_quick feeds raw pixels minus the mean, i.e. std = 1/255 on
  our x = pixel/255 (``ChannelNormalize.fit(x, scale_only=1/255)``).
* ``RandomCropFlip(padding=4, flip=True)``: each image is zero-padded by 4
  pixels and a random 32×32 crop is taken, then flipped left-right with
  probability 1/2 (He et al., 2016, "Deep residual learning", §4.2, after
  Lee et al., 2015). It is applied to each training minibatch by ``fit``
  (``transform=``), its Generator seeded from ``seed`` and saved in every
  checkpoint, so a resumed run draws the same crops bit for bit.

Both are small objects with ``get_config()`` so a model file can say how its
inputs were prepared.
"""
from __future__ import annotations

import numpy as np


class ChannelNormalize:
    """x' = (x − mean[c]) / std[c] for x (N, C, H, W); mean, std of shape (C,)."""

    def __init__(self, mean, std):
        self.mean = np.asarray(mean, dtype=np.float64).reshape(-1)
        self.std = np.asarray(std, dtype=np.float64).reshape(-1)
        if self.mean.shape != self.std.shape or np.any(self.std <= 0):
            raise ValueError(f"ChannelNormalize needs mean and positive std of the same "
                             f"length, got mean {self.mean.tolist()} and std {self.std.tolist()}")

    @classmethod
    def fit(cls, x: np.ndarray, scale_only: float | None = None,
            chunk: int = 5000) -> "ChannelNormalize":
        """Mean and std per channel of x (N, C, H, W) (float64 sums, in chunks).

        ``scale_only``: use this std for every channel instead of the measured one
        (1/255 gives Caffe's "pixel minus mean" inputs)."""
        if np.ndim(x) != 4:
            raise ValueError(f"ChannelNormalize.fit expects (N, C, H, W), got {np.shape(x)}")
        C = x.shape[1]
        total, squares, count = np.zeros(C), np.zeros(C), 0
        for start in range(0, len(x), chunk):
            part = np.asarray(x[start:start + chunk], dtype=np.float64)
            total += part.sum(axis=(0, 2, 3))
            squares += (part * part).sum(axis=(0, 2, 3))
            count += part.shape[0] * part.shape[2] * part.shape[3]
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
        if scale_only is not None:
            std = np.full(C, float(scale_only))
        return cls(mean, std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.ndim(x) != 4 or x.shape[1] != len(self.mean):
            raise ValueError(f"{self!r} expects (N, {len(self.mean)}, H, W), got {np.shape(x)}")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32
        mean = self.mean.astype(dtype).reshape(1, -1, 1, 1)
        scale = (1.0 / self.std).astype(dtype).reshape(1, -1, 1, 1)
        return (x - mean) * scale

    def get_config(self) -> dict:
        return {"type": "channel_normalize", "mean": self.mean.tolist(), "std": self.std.tolist()}

    def __repr__(self) -> str:
        return (f"ChannelNormalize(mean={np.round(self.mean, 4).tolist()}, "
                f"std={np.round(self.std, 4).tolist()})")


class MeanImage:
    """x' = (x − mean[c, h, w]) · scale for x (N, C, H, W): Caffe's ``mean_file``
    (the training set's mean image, ``compute_image_mean``), then its ``scale``.

    With x = pixel/255 (minidnn.data.load) and ``scale=255`` this is Caffe's
    cifar10_quick input, "pixel minus the mean image" in pixel units."""

    def __init__(self, mean, scale: float = 1.0):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = float(scale)
        if self.mean.ndim != 3 or not self.scale > 0:
            raise ValueError(f"MeanImage needs a (C, H, W) mean and a positive scale, got mean "
                             f"of shape {self.mean.shape} and scale {scale!r}")

    @classmethod
    def fit(cls, x: np.ndarray, scale: float = 1.0, chunk: int = 5000,
            decimals: int | None = 7) -> "MeanImage":
        """The mean of x (N, C, H, W) over N (float64 sums, in chunks), rounded to
        ``decimals`` so that the value stored in a model file is the one used."""
        if np.ndim(x) != 4:
            raise ValueError(f"MeanImage.fit expects (N, C, H, W), got {np.shape(x)}")
        total = np.zeros(x.shape[1:])
        for start in range(0, len(x), chunk):
            total += np.asarray(x[start:start + chunk], dtype=np.float64).sum(axis=0)
        mean = total / len(x)
        return cls(np.round(mean, decimals) if decimals is not None else mean, scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.ndim(x) != 4 or x.shape[1:] != self.mean.shape:
            raise ValueError(f"MeanImage expects (N, {', '.join(map(str, self.mean.shape))}), "
                             f"got {np.shape(x)}")
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)
        return (x - self.mean.astype(dtype)[None]) * dtype.type(self.scale)

    def get_config(self) -> dict:
        return {"type": "mean_image", "mean": self.mean.tolist(), "scale": self.scale}

    def __repr__(self) -> str:
        return f"MeanImage(shape={self.mean.shape}, scale={self.scale})"


# -- augmentation: NumPy twin and the batch version ------------------------------------

def random_crop_flip_numpy(x: np.ndarray, offsets: np.ndarray, flips: np.ndarray,
                           padding: int) -> np.ndarray:
    """The definition, one image at a time: pad with zeros, crop at offsets[n] =
    (dy, dx) in [0, 2·padding], flip left-right where flips[n]."""
    N, C, H, W = x.shape
    out = np.empty_like(x)
    for n in range(N):
        padded = np.pad(x[n], ((0, 0), (padding, padding), (padding, padding)))
        dy, dx = offsets[n]
        crop = padded[:, dy:dy + H, dx:dx + W]
        out[n] = crop[:, :, ::-1] if flips[n] else crop
    return out


def random_crop_flip(x: np.ndarray, offsets: np.ndarray, flips: np.ndarray,
                     padding: int) -> np.ndarray:
    """Same as ``random_crop_flip_numpy`` without the per-image pad: one zeroed
    padded batch, then a crop view per image (vectorised copy)."""
    N, C, H, W = x.shape
    padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    padded[:, :, padding:padding + H, padding:padding + W] = x
    out = np.empty_like(x)
    for n in range(N):
        dy, dx = offsets[n]
        crop = padded[n, :, dy:dy + H, dx:dx + W]
        out[n] = crop[:, :, ::-1] if flips[n] else crop
    return out


class RandomCropFlip:
    """Random crop after zero padding (``padding`` pixels each side) and a
    left-right flip with probability 1/2, drawn per image from ``rng``.

    ``fit`` calls ``transform(xb, rng)`` with its own seeded Generator (saved
    in checkpoints), so the crops of a resumed run are the same as those of an
    uninterrupted one."""

    def __init__(self, padding: int = 4, flip: bool = True):
        if int(padding) < 0:
            raise ValueError(f"RandomCropFlip padding must be >= 0, got {padding}")
        self.padding = int(padding)
        self.flip = bool(flip)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if np.ndim(x) != 4:
            raise ValueError(f"RandomCropFlip expects (N, C, H, W), got {np.shape(x)}")
        N = len(x)
        offsets = rng.integers(0, 2 * self.padding + 1, size=(N, 2))
        flips = rng.random(N) < 0.5 if self.flip else np.zeros(N, bool)
        return random_crop_flip(x, offsets, flips, self.padding)

    def get_config(self) -> dict:
        return {"type": "random_crop_flip", "padding": self.padding, "flip": self.flip}

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip})"


# -- the training data pipeline of the CLI ------------------------------------------

class TrainTransform:
    """What ``fit(transform=...)`` applies to each training minibatch: the
    augmentation (on pixel/255 images, so crops pad with black, as usual), then
    the normalisation."""

    def __init__(self, augment: RandomCropFlip | None, normalize: ChannelNormalize | None):
        self.augment, self.normalize = augment, normalize

    def __call__(self, x, rng):
        if self.augment is not None:
            x = self.augment(x, rng)
        if self.normalize is not None:
            x = self.normalize(x)
        return x


def add_input_options(parser) -> None:
    """``--augment`` and ``--normalize`` for ``minidnn train``."""
    parser.add_argument("--augment", action="store_true",
                        help="random crop after 4-pixel zero padding and random horizontal "
                             "flip of each training image (seeded by --seed, resumable)")
    parser.add_argument("--normalize", choices=("none", "channel"), default="none",
                        help="'channel': subtract each channel's training mean and divide by "
                             "its std (stored in the model file, applied by `minidnn eval`)")


def configure_inputs(args, splits):
    """(splits with val/test normalised, fit's transform or None, info for the model file)."""
    from .dataset import Dataset, Splits
    normalize = ChannelNormalize.fit(splits.train.x) if args.normalize == "channel" else None
    augment = RandomCropFlip(4) if args.augment else None
    info = {"augment": augment.get_config() if augment else None,
            "input_transform": normalize.get_config() if normalize else None}
    if normalize is None and augment is None:
        return splits, None, info
    if normalize is not None:
        splits = Splits(splits.train, Dataset(normalize(splits.val.x), splits.val.y),
                        Dataset(normalize(splits.test.x), splits.test.y))
    return splits, TrainTransform(augment, normalize), info


def transform_from_config(config: dict | None):
    """The input transform a model file names (None: inputs as loaded)."""
    if not config:
        return None
    if config.get("type") == "channel_normalize":
        return ChannelNormalize(config["mean"], config["std"])
    if config.get("type") == "mean_image":
        return MeanImage(config["mean"], config.get("scale", 1.0))
    raise ValueError(f"unknown input transform {config!r}")
