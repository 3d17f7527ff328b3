"""A/B of the two evaluation paths of ``training.evaluate`` on Cifar10_quick:
``forward(x, training=False)`` (the layers' own evaluation forward, what
evaluate used until sitting 20) against ``Sequential.infer`` (the fused,
cache-free inference plan), in ONE process, interleaved, medians.

    python bench/eval_path_ab.py [--model /work/artifacts/cifar10_quick_caffe50k.h5]
        [--images 2000] [--repeats 7] [--threads 1] [--out bench/results/eval_path_ab.json]

The model is a trained Cifar10_quick file (its stored input transform is
applied to the CIFAR-10 test images), so the agreement of the two paths is
checked where it matters: test accuracy and loss on all 10,000 test images,
and the largest logit difference. Times are per pass over ``--images`` test
images at batch 1000 (process CPU time and wall time); at 1 thread under load
they are a relative guide (CPU time), not a speed figure. At 2 threads the
inference plan splits each batch over threads (one whole-net pass per
thread), which only a quiet machine can judge.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/artifacts/cifar10_quick_caffe50k.h5")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    import minidnn
    from minidnn import io
    from minidnn.data import load
    from minidnn.data.transforms import transform_from_config
    from minidnn.losses import SoftmaxCrossEntropy
    minidnn.configure_threads(args.threads)
    model = io.load(args.model)
    info = io.read_training_info(args.model)
    normalize = transform_from_config(info.get("input_transform"))
    _, _, test = load("cifar10", progress=False)
    xt = test.x if normalize is None else normalize(test.x).astype(np.float32)
    yt = test.y
    loss = SoftmaxCrossEntropy()

    def run(path, x, y, batch=1000):
        total, correct, outs = 0.0, 0, []
        for i in range(0, len(x), batch):
            out = (model.forward(x[i:i + batch], training=False) if path == "forward"
                   else model.infer(x[i:i + batch]))
            value, _ = loss(out, y[i:i + batch])
            total += value * len(out)
            correct += int((out.argmax(1) == y[i:i + batch]).sum())
            outs.append(out)
        return total / len(x), correct / len(x), np.concatenate(outs)

    full = {p: run(p, xt, yt) for p in ("forward", "infer")}
    agreement = {
        "test_accuracy": {p: full[p][1] for p in full},
        "test_loss": {p: full[p][0] for p in full},
        "max_abs_logit_difference": float(np.abs(full["forward"][2] - full["infer"][2]).max()),
        "argmax_disagreements": int((full["forward"][2].argmax(1)
                                     != full["infer"][2].argmax(1)).sum())}
    xs, ys = xt[:args.images], yt[:args.images]
    times = {p: {"cpu": [], "wall": []} for p in ("forward", "infer")}
    for _ in range(args.repeats):
        for p in ("forward", "infer"):
            c0, w0 = time.process_time(), time.perf_counter()
            run(p, xs, ys)
            times[p]["cpu"].append(time.process_time() - c0)
            times[p]["wall"].append(time.perf_counter() - w0)
    medians = {p: {k: statistics.median(v) for k, v in t.items()} for p, t in times.items()}
    result = {"model": args.model, "threads": args.threads, "images": args.images,
              "repeats": args.repeats, "agreement": agreement, "median_seconds": medians,
              "cpu_ratio_infer_over_forward": medians["infer"]["cpu"] / medians["forward"]["cpu"],
              "note": "one process, interleaved, medians; loaded machine: a relative guide"}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
