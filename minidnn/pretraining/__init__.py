"""Unsupervised pretraining: RBMs, deep belief nets and stacked autoencoders.

* ``BernoulliRBM``: CD-k / persistent CD, Bernoulli or Gaussian visible units,
  sampling, free energy, exact and pseudo log-likelihood.
* ``DBN``: RBMs stacked greedily; ``to_mlp(n_classes)`` gives the Sequential
  to fine-tune with backprop.
* ``Autoencoder`` / ``StackedAutoencoder``: tied (or untied) weights, same
  greedy recipe, same ``to_mlp``; ``density=γ`` makes W a fixed random sparse
  matrix in CSR (``minidnn.sparse.SparseDense``, SPEC technique 3), trained
  and handed to the MLP without a dense copy.
* ``PretrainConfig``: the hyperparameters (defaults: the seed-000 recipe).
* HDF5 files: ``stack.save(path)``, ``load_pretrained(path)``,
  ``mlp_from_pretrained(path, n_classes)``; per-epoch checkpoints and resume
  through ``pretrain(..., checkpoint=path, resume=True)``.
"""
from .autoencoder import Autoencoder, StackedAutoencoder
from .dbn import (DBN, GreedyStack, PretrainConfig, load_pretrained, mlp_from_pretrained,
                  parse_layer_sizes, read_pretrained, train_unit)
from .rbm import BernoulliRBM

__all__ = ["BernoulliRBM", "DBN", "Autoencoder", "StackedAutoencoder", "GreedyStack",
           "PretrainConfig", "load_pretrained", "read_pretrained", "mlp_from_pretrained",
           "parse_layer_sizes", "train_unit"]
