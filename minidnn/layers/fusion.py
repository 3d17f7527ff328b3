"""Pairs of neighbouring layers that ``Sequential`` runs as one step, for every model
whose layers line up so: a fully connected layer and the activation after it
(``layers.fusion_dense``: SparseDense → Sigmoid, Dense → Sigmoid, Dense → ReLU; since
sitting 20).

The layers keep their configs, names and file format; a pair holds no state of its own,
leaves each layer's state as its own forward would (so each layer's backward can be
called by hand), and has a ``backward_params`` where its first layer has parameters (the
net's first trainable layer skips its input gradient). ``Sequential`` keeps the list of
steps (``plan``) and rebuilds it when its layers or the switch below change. A pair
applies to exactly its classes, not subclasses, and falls back to the two layers one by
one where its kernels do not apply.

(Sittings 19-22 also had pool pairs, MaxPool2D → ReLU and ReLU → AvgPool2D with the ReLU
inside the pool's kernels, under ``FUSE_PAIRS``, off: quietly no faster than the pooling
kernels one layer at a time, 102.0 vs 100.7 ms in sitting 19 and 130.7 vs 133.1 ms in
sitting 20, a Cifar10_quick step, ``results/pool_fusion_ab_2threads_wall_quiet.json``;
deleted in sitting 23.)
"""
from __future__ import annotations

#: run SparseDense → Sigmoid, Dense → Sigmoid and Dense → ReLU as one step each
#: (``layers.fusion_dense``; the same bits as the layers one by one). False runs every
#: layer on its own (for the A/B: ``bench/fuse_epoch_ab.py``). At two threads the fused
#: sparse forward splits the sigmoid between the threads with the product's rows; kept on
#: after sitting 20's quiet run (sparse step 739.7 vs 1059.0 µs, dense within noise)
FUSE_DENSE_ACTIVATION = True

_DENSE_PAIRS = None     # layers.fusion_dense's, found on first use (it imports minidnn.sparse)


def _pair(first, second):
    global _DENSE_PAIRS
    if not FUSE_DENSE_ACTIVATION:
        return None
    if _DENSE_PAIRS is None:
        from .fusion_dense import pairs
        _DENSE_PAIRS = pairs()
    return _DENSE_PAIRS.get((type(first), type(second)))


def switches() -> tuple:
    """The switches a list of steps depends on (``Sequential`` rebuilds it when they change)."""
    return (FUSE_DENSE_ACTIVATION,)


def fused_steps(layers) -> list:
    """[(index of the step's first layer, step)]: each layer itself, or a fused pair
    (an object with forward / backward) where two neighbours form one."""
    steps, i = [], 0
    while i < len(layers):
        pair = _pair(layers[i], layers[i + 1]) if i + 1 < len(layers) else None
        if pair is not None:
            steps.append((i, pair(layers[i], layers[i + 1])))
            i += 2
        else:
            steps.append((i, layers[i]))
            i += 1
    return steps
