"""Technique 2 on Cifar10_quick / CIFAR-10 (JPEG-derived copy): plain, masked, searched patterns.

    python bench/bitmask_cifar.py [--model /work/artifacts/cifar10_quick.h5] [--val-size N] [--top-k K]

The model file is issue 8's Caffe-recipe Cifar10_quick; its training info
holds the input normalisation x' = (x − mean[c]) / std[c] (x = pixel/255),
applied here to every split. Runs (bench/results/bitmask_cifar10/<name>.json,
resumable), in this order (the most informative first, so a cut-short study
still has them): ``float``; ``search_conv_{4,3}_rescale`` (each layer scaled
so max|w| lands on the pattern's largest value, S = 0: a rescale absorbs S);
``uniform`` (one pattern on all three conv layers: plain 4_0_0 and 3_0_0, the
paper's best LeNet masks, raw weights); ``search_conv_{4,3}_shift``
(raw weights, shifts S in −8..0: the binary point moved instead of a scale);
``search_conv_{4,3}_rescale_pc`` (per-channel patterns and scales);
``search_conv_{4,3}`` and ``_pc`` (the paper's S = 0, raw weights);
``uniform_rescale`` (the uniform patterns with rescale "max");
``search_conv_{4,3}_pow2`` (rescale by the nearest power of two).
The model file's training info is copied into every result, so a result from
a partly trained model cannot pass for a final one.
CIFAR-100 is not on this machine (../shared/DATA.md), so its network is not run.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from _common import RESULTS_DIR, load_splits, write_json  # noqa: F401
from bitmask_lenet import accuracy, run_search, weight_stats

import minidnn as md
from minidnn.data.dataset import Dataset, Splits
from minidnn.quantization import BitMaskPattern, quantize_model
from minidnn.quantization.ptq import resolve_layers

OUT = RESULTS_DIR / "bitmask_cifar10"
UNIFORM = ["4_0_0", "5_1_0_0", "6_2_0_1_0", "7_3_0_1_2_0", "8_4_0_1_2_3_0",
           "3_0_0", "4_1_0_0", "5_2_0_1_0", "6_3_0_1_2_0", "7_4_0_1_2_3_0"]
SHORT_UNIFORM = ["4_0_0", "6_2_0_1_0", "8_4_0_1_2_3_0", "3_0_0", "5_2_0_1_0", "7_4_0_1_2_3_0"]


def layer_rounding_stats(q, key):
    """Share of a quantized layer's codes that are 0 and that sit at the pattern's largest value."""
    layer = resolve_layers(q, key)[0]
    codes = np.abs(layer._channel_view(layer.params["W"]).astype(np.int64))
    top = np.array([p.max_code for p in layer.patterns])[:, None]
    return {"zero_fraction": float((codes == 0).mean()),
            "saturated_fraction": float((codes == top).mean())}


def subset(splits, val_size, test_size):
    """The first val_size / test_size images of val and test (None: all)."""
    def cut(d, n):
        return d if n is None else Dataset(d.x[:n], d.y[:n])
    return Splits(splits.train, cut(splits.val, val_size), cut(splits.test, test_size))


def normalised_splits(model_path):
    info = md.io.read_training_info(model_path)
    transform = info.get("input_transform") or {}
    splits = load_splits("cifar10")
    if "mean" not in transform:
        return splits, transform
    mean = np.asarray(transform["mean"], np.float32).reshape(1, -1, 1, 1)
    scale = (1.0 / np.asarray(transform["std"], np.float64)).astype(np.float32).reshape(1, -1, 1, 1)
    fix = [Dataset(((d.x - mean) * scale).astype(np.float32), d.y)
           for d in (splits.train, splits.val, splits.test)]
    return Splits(*fix), transform


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/artifacts/cifar10_quick.h5")
    ap.add_argument("--val-size", type=int, default=None)
    ap.add_argument("--top-k", type=int, default=None)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--test-size", type=int, default=None,
                    help="evaluate on the first N test images only (scaled runs)")
    ap.add_argument("--short", action="store_true", help="six uniform patterns instead of ten")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    out = Path(args.out)
    model = md.load(args.model)
    splits, transform = normalised_splits(args.model)
    splits = subset(splits, args.val_size, args.test_size)

    def uniform(rescale=None):
        rows = []
        for p in (SHORT_UNIFORM if args.short else UNIFORM):
            q = quantize_model(model, {"conv": p}, rescale=rescale)
            rows.append({"pattern": p, "readable": BitMaskPattern.parse(p).readable(),
                         "effective_bits": BitMaskPattern.parse(p).effective_bits,
                         "rescale": rescale, "test_accuracy": accuracy(q, splits.test),
                         "rounding": {k: layer_rounding_stats(q, k)
                                      for k in ("conv1", "conv2", "conv3")}})
            print(f"  {p:>14}: {rows[-1]['test_accuracy']:.4f}", flush=True)
        return {"rows": rows}

    runs = {"float": lambda: {"val_accuracy": accuracy(model, splits.val),
                              "test_accuracy": accuracy(model, splits.test),
                              "weights": weight_stats(model), "input_transform": transform},
            }

    def search(bits, per_channel=False, shifts=(0,), rescale=None):
        return lambda: run_search(model, splits, bits, "conv", per_channel, args.val_size,
                                  args.top_k, shifts=shifts, rescale=rescale)
    for bits in (4, 3):
        runs[f"search_conv_{bits}_rescale"] = search(bits, rescale="max")
    runs["uniform"] = uniform
    for bits in (4, 3):
        runs[f"search_conv_{bits}_shift"] = search(bits, shifts=range(-8, 1))
    for bits in (4, 3):
        runs[f"search_conv_{bits}_rescale_pc"] = search(bits, per_channel=True, rescale="max")
    for bits in (4, 3):
        runs[f"search_conv_{bits}"] = search(bits)
        runs[f"search_conv_{bits}_pc"] = search(bits, per_channel=True)
    runs["uniform_rescale"] = lambda: uniform("max")
    for bits in (4, 3):
        runs[f"search_conv_{bits}_pow2"] = search(bits, rescale="pow2")
    model_info = {k: v for k, v in md.io.read_training_info(args.model).items()
                  if k not in ("history", "input_transform")}
    for name, run in runs.items():
        if args.only and name not in args.only:
            continue
        path = out / f"{name}.json"
        if path.exists():
            print(f"{name}: done ({path})")
            continue
        print(f"{name} ...", flush=True)
        t0 = time.perf_counter()
        payload = run()
        payload.update(run=name, model=args.model, model_training=model_info,
                       dataset="cifar10 (JPEG-derived copy)",
                       val_images=len(splits.val.y), test_images=len(splits.test.y),
                       seconds_total=time.perf_counter() - t0)
        write_json(path, payload)
        summary = {k: payload[k] for k in ("test_accuracy", "val_accuracy", "assignment") if k in payload}
        print(f"{name}: {json.dumps(summary)[:400]}  ({payload['seconds_total']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
