"""Sitting 21's RBM changes: the SGD plan now takes the RBM's one-thread step, and the
pseudo-likelihood monitor comes from one product."""
import numpy as np
import pytest

from minidnn.optimizers import SGD
from minidnn.pretraining import BernoulliRBM


def _data(n=120, d=20, seed=0, grey=False):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    return x if grey else (x > 0.6).astype(np.float32)


def _fit(x, **overrides):
    rbm = BernoulliRBM(x.shape[1], 12, rng=0)
    kw = dict(epochs=2, lr=0.1, batch_size=20, k=1, persistent=True, monitor_size=0,
              momentum=0.5, final_momentum=0.9, weight_decay=1e-3)
    kw.update(overrides)
    rbm.fit(x, seed=3, **kw)
    return rbm


def _same(a, b):
    return all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


@pytest.fixture
def restore_switches():
    saved = SGD.FUSED_PLAN
    yield
    SGD.FUSED_PLAN = saved


def test_one_thread_rbm_step_takes_the_plan(restore_switches):
    """Before sitting 21 ``_StepPlan.build`` refused every RBM (it overrides
    ``update_parts``) and rebuilt-and-failed at every step; now the one-thread step
    (parts 1) is planned, and stepped bit for bit as the per-parameter path."""
    x = _data()
    rbm = BernoulliRBM(20, 12, rng=0)
    for g in rbm.grads.values():
        g[...] = 0.01
    opt = SGD(0.1, momentum=0.9, weight_decay=1e-3)
    holder = type("H", (), {"layers": [rbm]})()
    opt.step(holder)
    assert opt.__dict__.get("_plan") is not None
    planned = _fit(x)
    SGD.FUSED_PLAN = False
    unplanned = _fit(x)
    assert _same(planned, unplanned)


@pytest.mark.parametrize("grey", [False, True])
def test_pseudo_likelihood_one_product_equals_two(restore_switches, grey):
    """ṽW + c = vW + c + (1 − 2v_i)·W_i: the one-product monitor is the two-free-energy
    form up to float64 rounding (grey pixels too: the flip is v_i → 1 − v_i), and it
    draws the same flipped units from the Generator."""
    x = _data(grey=grey)
    rbm = _fit(x)
    rbm.params["hidden_bias"][...] = np.linspace(-1, 1, 12, dtype=np.float32)
    one_rng = np.random.default_rng(7)
    one = rbm.pseudo_log_likelihood(x, one_rng)
    # the two-free-energy form (the package's before sitting 21), from the same draws
    two_rng = np.random.default_rng(7)
    v = x.astype(np.float64)
    idx = two_rng.integers(0, rbm.n_visible, size=len(v))
    flipped = v.copy()
    flipped[np.arange(len(v)), idx] = 1 - flipped[np.arange(len(v)), idx]
    delta = rbm.free_energy(flipped) - rbm.free_energy(v)
    two = float((rbm.n_visible * -np.logaddexp(0, -delta)).mean())
    assert one == pytest.approx(two, rel=1e-10, abs=1e-10)
    assert one_rng.bit_generator.state == two_rng.bit_generator.state


def test_pseudo_likelihood_matches_a_direct_numpy_twin(restore_switches):
    """Against the definition written out: n · log σ(F(ṽ) − F(v)), F from float64."""
    x = _data(n=30)
    rbm = _fit(x)
    idx = np.random.default_rng(5).integers(0, 20, size=30)
    W, b, c = (rbm.params[k].astype(np.float64) for k in ("W", "visible_bias", "hidden_bias"))
    v = x.astype(np.float64)
    flipped = v.copy()
    flipped[np.arange(30), idx] = 1 - flipped[np.arange(30), idx]

    def free(u):
        return -u @ b - np.logaddexp(0, u @ W + c).sum(axis=1)
    want = np.mean(20 * np.log(1 / (1 + np.exp(-(free(flipped) - free(v))))))
    assert rbm.pseudo_log_likelihood(x, np.random.default_rng(5)) == pytest.approx(want, rel=1e-9)
