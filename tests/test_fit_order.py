"""fit(shuffle=False): Caffe's data-layer order (the training set read in its given
order every epoch), stored in checkpoints and checked on resume."""
import numpy as np
import pytest

from minidnn import architectures
from minidnn.optimizers import SGD
from minidnn.training import fit


def _data(n=50):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 0] = np.arange(n)            # column 0 names the sample
    return x, rng.integers(0, 2, n)


class Recorder:
    """A transform that records which samples each minibatch holds."""

    def __init__(self):
        self.batches = []

    def __call__(self, xb, rng):
        self.batches.append(xb[:, 0].astype(int).tolist())
        return xb

    @property
    def training_batches(self):
        """The batches after fit's first call, which maps the samples of the divergence
        rule's starting loss (the first 10 batches' worth, before any step)."""
        assert self.batches[0] == list(range(len(self.batches[0])))
        return self.batches[1:]


def _fit(model, x, y, **kw):
    return fit(model, (x, y), epochs=kw.pop("epochs", 2), batch_size=10,
               optimizer=SGD(0.01, 0.9), seed=kw.pop("seed", 0), progress=False, log=None, **kw)


def test_no_shuffle_reads_the_training_set_in_order_every_epoch():
    x, y = _data()
    recorder = Recorder()
    _fit(architectures.mlp([4, 3, 2]), x, y, shuffle=False, transform=recorder, epochs=2)
    in_order = [list(range(b, b + 10)) for b in range(0, 50, 10)]
    assert recorder.training_batches == in_order + in_order


def test_default_still_shuffles_each_epoch_differently():
    x, y = _data()
    recorder = Recorder()
    _fit(architectures.mlp([4, 3, 2]), x, y, transform=recorder, epochs=2)
    batches = recorder.training_batches
    first, second = sum(batches[:5], []), sum(batches[5:], [])
    assert sorted(first) == sorted(second) == list(range(50))
    assert first != list(range(50)) and first != second


def test_no_shuffle_resume_is_bit_identical_and_a_changed_order_is_refused(tmp_path):
    x, y = _data()
    straight = architectures.mlp([4, 3, 2])
    _fit(straight, x, y, shuffle=False, epochs=3)
    ckpt = tmp_path / "run.ckpt.h5"
    resumed = architectures.mlp([4, 3, 2])
    _fit(resumed, x, y, shuffle=False, epochs=1, checkpoint=str(ckpt), resume=True)
    again = architectures.mlp([4, 3, 2], seed=7)        # weights come from the checkpoint
    _fit(again, x, y, shuffle=False, epochs=3, checkpoint=str(ckpt), resume=True)
    for a, b in zip(straight.layers, again.layers):
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])
    with pytest.raises(ValueError, match="shuffle False -> True"):
        _fit(architectures.mlp([4, 3, 2]), x, y, epochs=4, checkpoint=str(ckpt), resume=True)
