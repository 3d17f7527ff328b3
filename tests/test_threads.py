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
