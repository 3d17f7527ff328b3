"""The Bernoulli kernel makes its Philox words a block of rows at a time
(``WORDS_PER_PASS``); across pass boundaries, rows longer than a pass and row
lengths that are not multiples of 4, its draws are the twin's, bit for bit."""
import numpy as np
import pytest

from minidnn.kernels import rbm_kernels
from minidnn.kernels.rbm_kernels import (draw_key, philox_bits_numpy, sigmoid_bernoulli,
                                         sigmoid_sample, uniforms_from_bits_numpy)


@pytest.mark.parametrize("shape", [(120, 785), (3, rbm_kernels.WORDS_PER_PASS + 3), (7, 3),
                                   (1, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bernoulli_kernel_equals_sampling_with_the_twins_uniforms(shape, dtype):
    rng = np.random.default_rng(shape[1])
    pre = (3 * rng.standard_normal(shape)).astype(dtype)
    bias = rng.standard_normal(shape[1]).astype(dtype)
    key = draw_key(rng)
    u = uniforms_from_bits_numpy(philox_bits_numpy(pre.size, key), dtype).reshape(shape)
    p_ref, s_ref = sigmoid_sample(pre.copy(), bias, u)
    p, s = sigmoid_bernoulli(pre.copy(), bias, key)
    assert np.array_equal(p, p_ref) and np.array_equal(s, s_ref)
