"""Is the machine in its slow mode? The RBM 784x500 PCD-1 step beside the two CPUs'
cache-line round trip, block after block, in one process (sitting 24).

    python bench/rbm_mode_watch.py --seconds 240        # needs gcc for the ping-pong

Each block: a cache-line ping-pong between threads pinned to CPUs 0 and 1 (a small C
program compiled here at start: an atomic flag bounced 200,000 times; round trip in ns),
then ``--steps`` steps of the benchmark's RBM step (``train_rows`` + ``SGD.step``; batch
100, lr 0.1, persistent chains, first 10,000 MNIST images), then one 2048^3 sgemm (the
control: whether BLAS itself is slowed, i.e. other load). One line a block; the summary
splits the blocks whose control is quiet (>= --quiet-gflops) by the round trip.
On the 2-vCPU Zen 4 VM (sitting 24) the round trip was 50-85 ns most of the time and
~300-360 ns in stretches; the step took 2.5-2.7 ms in the first and 3.6-5.2 ms in the
second, with the 2048^3 control unchanged (bench/results/rbm_mode_watch_s24r.log).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PINGPONG_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
static _Alignas(64) atomic_int flag = 0;
enum { N = 200000 };
static void pin(int c) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(c, &s);
                         pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static void *other(void *a) {
    pin(1);
    for (int i = 0; i < N; i++) {
        while (atomic_load_explicit(&flag, memory_order_acquire) != 1) ;
        atomic_store_explicit(&flag, 0, memory_order_release);
    }
    return 0;
}
int main(void) {
    pthread_t t; struct timespec a, b;
    pin(0); pthread_create(&t, 0, other, 0);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < N; i++) {
        atomic_store_explicit(&flag, 1, memory_order_release);
        while (atomic_load_explicit(&flag, memory_order_acquire) != 0) ;
    }
    clock_gettime(CLOCK_MONOTONIC, &b); pthread_join(t, 0);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / N);
    return 0;
}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--quiet-gflops", type=float, default=185.0)
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    source, exe = Path(tmp.name) / "pingpong.c", Path(tmp.name) / "pingpong"
    source.write_text(PINGPONG_C)
    subprocess.run(["gcc", "-O2", "-pthread", str(source), "-o", str(exe)], check=True)

    import minidnn
    minidnn.configure_threads(2)
    from minidnn import data
    from minidnn.optimizers import SGD
    from minidnn.pretraining import BernoulliRBM, PretrainConfig
    x = np.ascontiguousarray(data.load("mnist", progress=False).train.x.reshape(-1, 784))[:10000]
    config = PretrainConfig(epochs=1, lr=0.1, momentum=0.0, final_momentum=0.0, weight_decay=0.0,
                            batch_size=100, k=1, persistent=True, monitor_size=0)
    rbm = BernoulliRBM(784, 500, rng=0)
    rbm.init_from_data(x)
    rng = np.random.default_rng(0)
    s = SimpleNamespace(opt=SGD(config.lr), holder=SimpleNamespace(layers=[rbm]),
                        state=rbm.new_train_state(x, config, rng),
                        order=rng.permutation(len(x)), cursor=0)

    def steps(n):
        for _ in range(n):
            b = s.cursor % (len(x) // 100)
            s.cursor += 1
            rbm.train_rows(x, np.sort(s.order[b * 100:(b + 1) * 100]), rng, config, s.state)
            s.opt.step(s.holder)

    steps(30)
    A = np.random.default_rng(1).random((2048, 2048), dtype=np.float32)
    C = np.empty_like(A)
    rows = []
    end = time.time() + args.seconds
    while time.time() < end:
        trip = float(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
        t0 = time.perf_counter()
        steps(args.steps)
        step = (time.perf_counter() - t0) / args.steps
        t0 = time.perf_counter()
        np.matmul(A, A, out=C)
        rate = 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        rows.append((trip, step, rate))
        print(f"{time.strftime('%H:%M:%S')} load {load} round trip {trip:7.1f} ns  "
              f"step {1e3 * step:7.3f} ms  2048^3 {rate:4.0f} GFLOP/s", flush=True)
    quiet = [r for r in rows if r[2] >= args.quiet_gflops]
    for label, part in (("round trip < 150 ns", [r for r in quiet if r[0] < 150]),
                        ("round trip >= 250 ns", [r for r in quiet if r[0] >= 250])):
        if part:
            print(f"{label}: {len(part)} quiet blocks, step median "
                  f"{1e3 * statistics.median(r[1] for r in part):.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
