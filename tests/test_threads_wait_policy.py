"""configure_threads' threading-layer and libgomp wait options (issue #11, sitting 21):
each sets what it says and nothing else, bad values are refused, a second call is
harmless, a setting that can no longer take effect is refused with a clear message, and
importing minidnn still changes nothing. No timings."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minidnn.threads import configure_threads

ROOT = Path(__file__).resolve().parents[1]
OPENMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def _run(code: str) -> dict:
    """``code`` in a fresh Python whose environment has no libgomp wait setting."""
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARS}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_PARALLEL_KERNEL = (
    "import numba, numpy as np\n"
    "@numba.njit(parallel=True)\n"
    "def fill(a):\n"
    "    for i in numba.prange(a.size):\n"
    "        a[i] = i\n"
    "fill(np.zeros(8))\n")


def _libgomp_code():
    return "any('libgomp' in line for line in open('/proc/self/maps'))"


def test_importing_minidnn_sets_no_openmp_variable_and_loads_no_libgomp():
    result = _run(
        "import os, json; before = dict(os.environ)\n"
        "import minidnn, minidnn.cli, minidnn.threads, minidnn.sparse\n"
        f"print(json.dumps({{'same_env': dict(os.environ) == before,\n"
        f"                  'libgomp': {_libgomp_code()}}}))")
    assert result == {"same_env": True, "libgomp": False}


def test_omp_layer_with_active_policy_and_spin_count_sets_exactly_those():
    result = _run(
        "import os, json, minidnn; before = dict(os.environ)\n"
        "report = minidnn.configure_threads(1, numba_layer='omp', wait_policy='active',\n"
        "                                   spin_count=1000)\n"
        + _PARALLEL_KERNEL +
        # Numba's omp layer itself sets KMP_DUPLICATE_LIB_OK when it loads: not ours
        "added = {k: os.environ[k] for k in set(os.environ) - set(before)\n"
        "         if k != 'KMP_DUPLICATE_LIB_OK'}\n"
        "print(json.dumps({'layer': numba.threading_layer(), 'added': added,\n"
        "                  'report': [report[k] for k in ('numba_layer', 'wait_policy',\n"
        "                                                 'spin_count')]}))")
    assert result == {"layer": "omp",
                      "added": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "1000"},
                      "report": ["omp", "active", 1000]}


@pytest.mark.parametrize("layer", ["workqueue", "omp"])
def test_no_wait_option_leaves_the_environment_alone(layer):
    result = _run(
        "import os, json, minidnn; before = dict(os.environ)\n"
        f"report = minidnn.configure_threads(1, numba_layer={layer!r})\n"
        + _PARALLEL_KERNEL +
        "same = all(os.environ.get(k) == before.get(k) for k in set(os.environ) | set(before)\n"
        "           if k != 'KMP_DUPLICATE_LIB_OK')   # set by Numba's omp layer itself\n"
        "print(json.dumps({'layer': numba.threading_layer(), 'same_env': same,\n"
        "                  'keys': sorted(report)}))")
    assert result == {"layer": layer, "same_env": True,
                      "keys": ["blas", "numba_layer", "numba_threads", "threads"]}


def test_a_second_call_is_harmless_and_a_changed_policy_after_libgomp_loaded_is_refused():
    result = _run(
        "import json, minidnn, numba\n"
        "minidnn.configure_threads(1, numba_layer='omp', wait_policy='passive')\n"
        + _PARALLEL_KERNEL +
        "again = minidnn.configure_threads(1, numba_layer='omp', wait_policy='passive')\n"
        "other_layer = minidnn.configure_threads(1, numba_layer='workqueue')\n"
        "try:\n"
        "    minidnn.configure_threads(1, numba_layer='omp', wait_policy='active')\n"
        "    error = None\n"
        "except RuntimeError as err:\n"
        "    error = str(err)\n"
        "import os\n"
        "print(json.dumps({'again': again['numba_layer'], 'kept': other_layer['numba_layer'],\n"
        "                  'error': error, 'env': os.environ['OMP_WAIT_POLICY']}))")
    assert result["again"] == "omp"
    assert result["kept"] == "omp"          # the layer is fixed once the pool runs: kept, reported
    assert result["env"] == "PASSIVE"       # the refused call changed nothing
    assert "OMP_WAIT_POLICY=ACTIVE" in result["error"]
    assert "already loaded" in result["error"]


@pytest.mark.parametrize("kwargs, message", [
    ({"numba_layer": "fast"}, "numba_layer must be one of"),
    ({"numba_layer": "omp", "wait_policy": "spin"}, "wait_policy must be one of"),
    ({"numba_layer": "omp", "wait_policy": "ACTIVE"}, "wait_policy must be one of"),
    ({"numba_layer": "omp", "spin_count": -1}, "spin_count must be an int >= 0"),
    ({"numba_layer": "omp", "spin_count": 1.5}, "spin_count must be an int >= 0"),
    ({"numba_layer": "omp", "spin_count": True}, "spin_count must be an int >= 0"),
    ({"numba_layer": "workqueue", "wait_policy": "active"}, "need numba_layer='omp'"),
    ({"wait_policy": "passive"}, "need numba_layer='omp'"),      # the default layer is workqueue
])
def test_bad_values_are_refused_before_anything_is_set(kwargs, message, monkeypatch):
    for var in OPENMP_VARS:
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)
    with pytest.raises(ValueError, match=message):
        configure_threads(1, **kwargs)
    assert dict(os.environ) == before


# -- what the minidnn command picks, by model, before the model is built ---------------------

def _args(argv):
    from minidnn.cli import build_parser
    return build_parser().parse_args(argv)


def _small_models(tmp_path):
    import minidnn as md
    sparse = md.Sequential([md.Flatten(), md.SparseDense(20, 8, density=0.3, rng=0),
                            md.Sigmoid(), md.Dense(8, 3, rng=0)], seed=None, input_shape=(20,))
    dense = md.Sequential([md.Flatten(), md.Dense(20, 8, rng=0), md.Sigmoid(),
                           md.Dense(8, 3, rng=0)], seed=None, input_shape=(20,))
    paths = {}
    for name, model in (("sparse", sparse), ("dense", dense)):
        paths[name] = str(tmp_path / f"{name}.h5")
        md.save(model, paths[name])
    return sparse, dense, paths


def test_the_command_picks_omp_for_sparse_nets_and_workqueue_for_the_others(tmp_path):
    from minidnn.architectures import lenet
    from minidnn.threads import cli_thread_options, numba_layer_for
    sparse, dense, paths = _small_models(tmp_path)
    assert numba_layer_for(sparse) == "omp"
    assert numba_layer_for(dense) == numba_layer_for(lenet(seed=0)) == "workqueue"
    assert cli_thread_options(_args(["train", "--density", "0.04"])) == {"numba_layer": "omp"}
    assert cli_thread_options(_args(["train", "--arch", "lenet"])) == {"numba_layer": "workqueue"}
    assert cli_thread_options(_args(["eval", paths["sparse"]])) == {"numba_layer": "omp"}
    assert cli_thread_options(_args(["info", paths["dense"]])) == {"numba_layer": "workqueue"}
    assert cli_thread_options(_args(["train", "--init-from", paths["sparse"]]))["numba_layer"] == "omp"
    assert cli_thread_options(_args(["eval", str(tmp_path / "missing.h5")])) == {
        "numba_layer": "workqueue"}          # the command itself reports the missing file
    # explicit choices win; a wait policy asks for libgomp
    assert cli_thread_options(_args(["train", "--density", "0.04", "--numba-layer",
                                     "workqueue"])) == {"numba_layer": "workqueue"}
    assert cli_thread_options(_args(["train", "--omp-wait-policy", "active"])) == {
        "numba_layer": "omp", "wait_policy": "active"}
    assert cli_thread_options(_args(["train", "--omp-spin-count", "3000"])) == {
        "numba_layer": "omp", "spin_count": 3000}
    with pytest.raises(SystemExit):
        _args(["train", "--numba-layer", "fastest"])


def test_sparse_training_from_the_command_runs_on_omp_and_sets_no_wait_policy(tmp_path):
    result = _run(
        "import json, os, numba\n"
        "from minidnn.cli import main\n"
        "before = {k: os.environ.get(k) for k in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT')}\n"
        f"rc = main(['train', '--arch', 'mlp:784-16-10:sigmoid', '--density', '0.1',\n"
        f"           '--epochs', '1', '--threads', '1', '--quiet', '--out', {str(tmp_path / 'm.h5')!r}])\n"
        "after = {k: os.environ.get(k) for k in before}\n"
        "print(json.dumps({'rc': rc, 'layer': numba.threading_layer(), 'env': before == after}))")
    assert result == {"rc": 0, "layer": "omp", "env": True}


def test_the_sparse_layer_switch_turns_the_command_back_to_workqueue(monkeypatch, tmp_path):
    from minidnn import threads
    sparse, _, _ = _small_models(tmp_path)
    monkeypatch.setattr(threads, "SPARSE_NUMBA_LAYER", "workqueue")
    assert threads.numba_layer_for(sparse) == "workqueue"
    assert threads.cli_thread_options(_args(["train", "--density", "0.04"])) == {
        "numba_layer": "workqueue"}
