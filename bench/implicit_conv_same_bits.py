"""Do two trees' implicit-GEMM convolutions give the same bits? Passes hashed, compared.

    python bench/implicit_conv_same_bits.py --against 38dbec6 [--threads 1 2]

Each tree runs in its own clean process per thread count (``git archive`` of the
commit for ``--against``; this checkout for the other side): for seven shapes
(channels 8 to 64, kernels 3 and 5, paddings 0 to 2, planes of 16 to 256 outputs so
the bias sum takes both branches of NumPy's pairwise order), the fused passes
``conv_nchw`` (y) and ``backward_nchw`` (dW, db, dx; and without the input gradient),
and the separate ``weight_grad_rows`` at the thread count and serial. Printed: SAME or
DIFFERENT per array, then the verdict; exit status 1 if anything differs. Sitting 21
used it for the weight-gradient helper and the shared pairwise sum (``--against
38dbec6``, 1 and 2 threads: all 56 arrays the same). Needs AVX2 + FMA.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import same_bits_against  # noqa: E402

WORKER = r"""
import hashlib, json, sys
import numpy as np
import minidnn
minidnn.configure_threads(int(sys.argv[1]))
from minidnn.kernels import implicit_conv as ic
from minidnn.kernels.layout import pad_channels_last_numpy
rng = np.random.default_rng(3)
out = {}
for (N, C, O, H, k, p) in [(7, 8, 16, 9, 3, 1), (5, 16, 8, 8, 5, 2), (3, 32, 64, 8, 5, 2),
                           (9, 8, 24, 6, 3, 0), (1, 8, 16, 5, 3, 1), (4, 8, 16, 16, 3, 1),
                           (3, 16, 8, 13, 3, 1)]:
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    W = rng.standard_normal((O, C, k, k)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32)
    x_pad = np.zeros((N, H + 2 * p, H + 2 * p, C), np.float32)
    y = ic.conv_nchw(x, W, b, (p, p), x_pad)
    OH = H + 2 * p - k + 1
    g = rng.standard_normal((N, O, OH, OH)).astype(np.float32)
    q = k - 1 - p
    g_pad = np.zeros((N, OH + 2 * q, OH + 2 * q, O), np.float32)
    dW, db, dx = ic.backward_nchw(g, x_pad, W, (p, p), g_pad)
    dW2, db2, _ = ic.backward_nchw(g, x_pad, W, (p, p), np.zeros_like(g_pad), input_grad=False)
    gp = pad_channels_last_numpy(g, q, q)
    arrays = dict(y=y, dW=dW, db=db, dx=dx, dW_no_dx=dW2, db_no_dx=db2,
                  dW_separate=ic.weight_grad_rows(x_pad, gp, (k, k), offset=(q, q)),
                  dW_separate_serial=ic.weight_grad_rows(x_pad, gp, (k, k), offset=(q, q),
                                                         parallel=False))
    for name, value in arrays.items():
        out[f"N{N} C{C} O{O} H{H} k{k} p{p} {name}"] = hashlib.sha256(
            np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
print(json.dumps(out))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the commit to compare with")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    differ = same_bits_against(WORKER, args.against, args.threads, key_width=40)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
