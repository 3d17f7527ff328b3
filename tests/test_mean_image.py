"""MeanImage: Caffe's mean_file input transform, and its round trip through a model
file's training info (what `minidnn eval` re-applies)."""
import json

import numpy as np
import pytest

from minidnn.data.transforms import MeanImage, transform_from_config


def test_mean_image_subtracts_the_per_pixel_training_mean_in_pixel_units():
    rng = np.random.default_rng(0)
    x = rng.random((11, 3, 4, 5)).astype(np.float32)
    t = MeanImage.fit(x, scale=255.0, chunk=4)          # chunks of 4: the sum over chunks
    np.testing.assert_allclose(t.mean, x.astype(np.float64).mean(axis=0), atol=1e-7)
    out = t(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, (x - t.mean) * 255.0, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-3)


def test_mean_image_config_survives_json_and_rebuilds_the_same_transform():
    x = np.random.default_rng(1).random((6, 3, 2, 2))
    t = MeanImage.fit(x, scale=255.0)
    again = transform_from_config(json.loads(json.dumps(t.get_config())))
    assert isinstance(again, MeanImage)
    assert np.array_equal(again(x.astype(np.float32)), t(x.astype(np.float32)))


def test_mean_image_refuses_other_shapes():
    t = MeanImage(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"expects \(N, 3, 2, 2\)"):
        t(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match="positive scale"):
        MeanImage(np.zeros((3, 2, 2)), scale=0)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        MeanImage.fit(np.zeros((3, 4)))
