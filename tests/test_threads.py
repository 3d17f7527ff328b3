"""Importing minidnn leaves its host alone; configure_threads is the explicit set-up."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMP_WAIT")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_minidnn_leaves_the_environment_and_numba_untouched():
    result = _run(
        "import os, json; before = dict(os.environ)\n"
        "import minidnn, minidnn.data, minidnn.cli\n"
        "from numba.np.ufunc import parallel\n"
        "print(json.dumps({'same_env': dict(os.environ) == before,\n"
        "                  'added': sorted(set(os.environ) - set(before)),\n"
        "                  'numba_started': bool(parallel._is_initialized)}))")
    assert result == {"same_env": True, "added": [], "numba_started": False}


def test_configure_threads_caps_blas_and_numba_and_picks_a_non_spinning_layer():
    result = _run(
        "import json, minidnn\n"
        "report = minidnn.configure_threads(1)\n"
        "import numba, numpy as np\n"
        "from minidnn.kernels.im2col import im2row\n"
        "im2row(np.zeros((2, 3, 8, 8)), 3)\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps({'layer': numba.threading_layer(), 'numba': numba.get_num_threads(),\n"
        "                  'blas': sorted({p['num_threads'] for p in threadpool_info()}),\n"
        "                  'report_layer': report['numba_layer']}))")
    assert result == {"layer": "workqueue", "numba": 1, "blas": [1], "report_layer": "workqueue"}


def test_small_kernels_run_on_one_thread_and_restore_the_thread_count():
    import numba

    from minidnn.kernels.im2col import SERIAL_BELOW, serial_if_small
    before = numba.get_num_threads()
    with serial_if_small(SERIAL_BELOW - 1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with serial_if_small(SERIAL_BELOW):
        assert numba.get_num_threads() == before


def test_numba_thread_count_follows_set_num_threads():
    """threads.numba_thread_count answers what numba.get_num_threads does, per thread."""
    import numba
    from minidnn.threads import numba_thread_count
    before = numba.get_num_threads()
    try:
        for n in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(n)
            assert numba_thread_count() == numba.get_num_threads() == n
    finally:
        numba.set_num_threads(before)


def test_numba_thread_count_set_up_under_a_patched_get_num_threads_still_follows_numba(
        monkeypatch):
    """A first call while a test has replaced numba.get_num_threads neither skips the
    threading layer's launch nor keeps the replacement after the test."""
    import numba
    from minidnn import threads
    monkeypatch.setattr(threads, "_numba_thread_count", None)
    with monkeypatch.context() as patch:
        patch.setattr(numba, "get_num_threads", lambda: 99)
        assert threads.numba_thread_count() != 99
    assert threads.numba_thread_count() == numba.get_num_threads()


# -- OpenBLAS's idle workers (sitting 24: configure_threads' blas_wait) --------------------------

_BLAS_WAIT_CODE = (
    "import ctypes, json, os, threading, time, sys\n"
    "sys.path.insert(0, {root!r})\n"
    "import numpy as np, minidnn\n"
    "from minidnn.threads import set_blas_wait\n"
    "from threadpoolctl import threadpool_info\n"
    "from bench._common import thread_cpu_ns\n"
    "libs = [p for p in threadpool_info() if p['internal_api'] == 'openblas'\n"
    "        and p.get('threading_layer') == 'pthreads']\n"
    "def timeouts():\n"
    "    out = []\n"
    "    for p in libs:\n"
    "        f = ctypes.CDLL(p['filepath']).openblas_thread_timeout\n"
    "        f.restype = ctypes.c_int\n"
    "        out.append(f())\n"
    "    return out\n"
    "{body}\n")


def _blas_wait_run(body: str, env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(ROOT)
    code = _BLAS_WAIT_CODE.format(root=str(ROOT), body=body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_configure_threads_puts_openblas_workers_to_sleep_between_calls():
    """The default blas_wait="passive": every pthreads OpenBLAS reports the shortest
    timeout, the host environment is left as it was, products still come out right at
    two threads, and the workers use no CPU while the calling thread works on its own
    after a product (they spun ~0.1 s before, beside the RBM step's σ and SGD passes)."""
    result = _blas_wait_run(
        "report = minidnn.configure_threads(2)\n"
        "a = np.arange(200 * 784, dtype=np.float32).reshape(200, 784) % 7\n"
        "b = np.arange(784 * 500, dtype=np.float32).reshape(784, 500) % 5\n"
        "c = a @ b\n"
        "me = str(threading.get_native_id())\n"
        "c0 = thread_cpu_ns(); t0 = time.perf_counter()\n"
        "while time.perf_counter() - t0 < 0.1: pass\n"
        "c1 = thread_cpu_ns()\n"
        "others = sum(v - c0.get(t, 0) for t, v in c1.items() if t != me) / 1e6\n"
        "print(json.dumps({'n_libs': len(libs), 'timeouts': timeouts(),\n"
        "                  'report': report['blas_thread_timeout'],\n"
        "                  'env': os.environ.get('OPENBLAS_THREAD_TIMEOUT'),\n"
        "                  'right': bool(np.array_equal(c, a.astype(np.float64) @ b)),\n"
        "                  'threads': sorted({p['num_threads'] for p in threadpool_info()}),\n"
        "                  'others_ms': others}))")
    assert result["n_libs"] >= 1
    assert result["timeouts"] == [4] * result["n_libs"]
    assert 4 in result["report"]
    assert result["env"] is None
    assert result["right"] and result["threads"] == [2]
    # a spinning worker took 13-24 ms of a 50 ms window even under load (sitting 24)
    assert result["others_ms"] < 5.0


def test_set_blas_wait_switches_back_and_keeps_the_host_variable():
    result = _blas_wait_run(
        "minidnn.configure_threads(2, blas_wait=None)\n"
        "untouched = timeouts()\n"
        "active = [t for _, t in set_blas_wait('active') if t is not None]\n"
        "a = np.ones((300, 300), np.float32); ok1 = bool((a @ a == 300).all())\n"
        "passive = [t for _, t in set_blas_wait('passive') if t is not None]\n"
        "ok2 = bool((a @ a == 300).all())\n"
        "try:\n"
        "    set_blas_wait('spin'); bad = None\n"
        "except ValueError as e:\n"
        "    bad = str(e)\n"
        "print(json.dumps({'untouched': untouched, 'active': active, 'passive': passive,\n"
        "                  'ok': ok1 and ok2, 'env': os.environ.get('OPENBLAS_THREAD_TIMEOUT'),\n"
        "                  'bad': bad}))", env_extra={"OPENBLAS_THREAD_TIMEOUT": "9"})
    assert result["untouched"] == [9] * len(result["untouched"])   # blas_wait=None: the host's
    assert set(result["active"]) == {28} and set(result["passive"]) == {4}
    assert result["ok"] and result["env"] == "9"
    assert "passive" in result["bad"] and "'spin'" in result["bad"]


def test_configure_threads_rejects_an_unknown_blas_wait():
    import pytest

    import minidnn
    with pytest.raises(ValueError, match="blas_wait must be one of"):
        minidnn.configure_threads(1, blas_wait="sleep")
