#!/bin/bash
# Figure 1's other grid steps under the long-mse protocol, at depths 3 and 6 only (what
# fitted in sitting 17 after run_controls_2-2.sh): RR (memory-saving mode) at
# Δ = 2^-1, 2^-3, 2^-4, 2^-6, seeds 0-2 (resumable: run it again to continue; a
# finished point is never recomputed). Together with run_long.sh (2^0) and
# run_controls_2-2.sh (2^-2) this gives every step of Figure 1 under one protocol at
# two depths. Protocol as long-mse, unchanged for every step: gain minimising the
# expected RR error (--gain mse), lr 8.0 (chosen on ternary depth-6 seed-0 validation,
# run_long.sh; not re-tuned per step), 12 epochs of fine-tuning of the same
# 10-epoch-per-RBM DBNs, SGD without momentum, minibatch 100, test error at the epoch
# of lowest validation error. Order: seed 0 (every step, depths 3 6), the float baseline
# (below), then seed 1, seed 2.
# One thread (the machine is shared).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
S="python bench/discrete_depth_study.py --variants rr --steps 2^-1 2^-3 2^-4 2^-6
   --finetune-epochs 12 --gain mse --lr 8.0 --protocol long-mse"
$S --seeds 0 --depths 3 6
# Then the float baseline on the same 12-epoch schedule (lr-float 2.0, the first
# protocol's float lr), seed 0, depths 3 6 8, so the long-mse figures have a float curve
# of their own (otherwise they show the first protocol's 2-epoch float curve, labelled so).
python bench/discrete_depth_study.py --variants float --finetune-epochs 12 --protocol long-mse \
    --seeds 0 --depths 3 6 8
$S --seeds 1 --depths 3 6
$S --seeds 2 --depths 3 6
# Last: the float baseline's seeds 1 2 (appended in sitting 17 once the above was on time).
python bench/discrete_depth_study.py --variants float --finetune-epochs 12 --protocol long-mse \
    --seeds 1 2 --depths 3 6 8
