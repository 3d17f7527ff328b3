"""Every registered layer passes the same contract (tests/contract.py).

A new layer class adds one entry to ``EXAMPLES``: a factory building a small
instance and the shape of one input batch. A registered minidnn layer
without an example fails ``test_every_registered_layer_has_a_contract_example``.
"""
import numpy as np
import pytest

import minidnn as md
from minidnn.layers import LAYER_TYPES
from minidnn.quantization import DiscreteDense, ShadowDiscreteDense
from minidnn.quantization import QuantizedConv2D, QuantizedDense

from . import contract

EXAMPLES = {
    "Dense": (lambda: md.Dense(5, 4, name="l"), (3, 5)),
    "ReLU": (lambda: md.ReLU(name="l"), (3, 5)),
    "Sigmoid": (lambda: md.Sigmoid(name="l"), (3, 5)),
    "Tanh": (lambda: md.Tanh(name="l"), (3, 5)),
    "Identity": (lambda: md.Identity(name="l"), (3, 5)),
    "Flatten": (lambda: md.Flatten(name="l"), (2, 2, 3, 3)),
    "Dropout": (lambda: md.Dropout(0.3, rng=1, name="l"), (3, 6)),
    "BatchNorm": (lambda: md.BatchNorm(4, name="l"), (5, 4)),
    "Conv2D": (lambda: md.Conv2D(2, 3, 3, padding=1, name="l"), (2, 2, 5, 5)),
    "MaxPool2D": (lambda: md.MaxPool2D(2, name="l"), (2, 2, 4, 4)),
    "AvgPool2D": (lambda: md.AvgPool2D(2, name="l"), (2, 2, 4, 4)),
    "DiscreteDense": (lambda: DiscreteDense(5, 4, grid="2^-2", name="l"), (3, 5)),
    "ShadowDiscreteDense": (lambda: ShadowDiscreteDense(5, 4, grid="2^-1", name="l"), (3, 5)),
    "QuantizedDense": (lambda: QuantizedDense(5, 4, pattern="6_2_0_1_0", name="l"), (3, 5)),
    "QuantizedConv2D": (lambda: QuantizedConv2D(2, 3, 3, padding=1, name="l",
                                                pattern=["5_1_0_0", "6_2_0_1_0", "4_0_0"]),
                        (2, 2, 5, 5)),
    # per_unit 0.6: every input is connected (an unconnected input cannot reach the
    # output of a sparse layer, by design: tests/test_sparse.py)
    "SparseDense": (lambda: md.SparseDense(6, 5, density=0.6, pattern="per_unit", name="l"),
                    (3, 6)),
}


def _example(name, seed=0):
    factory, shape = EXAMPLES[name]
    rng = np.random.default_rng(seed)
    layer = factory()
    layer.initialize(rng)
    layer.cast(np.float32)
    x = rng.standard_normal(shape)
    if name in ("ReLU", "MaxPool2D"):
        x += np.sign(x) * 0.05          # away from the kinks, where finite differences lie
    return layer, x, rng


def test_every_registered_layer_has_a_contract_example():
    ours = sorted(n for n, cls in LAYER_TYPES.items() if cls.__module__.startswith("minidnn"))
    missing = [n for n in ours if n not in EXAMPLES]
    assert not missing, f"add these layers to EXAMPLES in tests/test_layer_contract.py: {missing}"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_gradients_match_finite_differences(name):
    layer, x, rng = _example(name)
    contract.check_gradients(layer, x, rng)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_round_trip_computes_the_same(name):
    layer, x, _ = _example(name)
    contract.check_config_round_trip(layer, x)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_model_file_round_trip_is_exact(name, tmp_path):
    layer, x, _ = _example(name)
    contract.check_file_round_trip(layer, x, tmp_path)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_cast_changes_floating_arrays_only(name):
    layer, _, _ = _example(name)
    contract.check_cast(layer)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_sgd_steps_keep_every_array_dtype_and_shape(name):
    layer, x, rng = _example(name)
    contract.check_sgd_step_keeps_dtypes(layer, x, rng)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_nan_in_the_input_or_any_weight_reaches_the_output(name):
    layer, x, _ = _example(name)
    contract.check_nan_propagates(layer, x)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_backward_before_forward_and_wrong_gradient_shapes_are_named(name):
    factory, shape = EXAMPLES[name]
    contract.check_call_order_errors(factory(), np.random.default_rng(0).standard_normal(shape))
