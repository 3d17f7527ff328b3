#!/bin/bash
# The Δ = 2^-2 comparison under the long-mse protocol, like for like with the 2^0
# controls of run_controls.sh: RR (memory-saving mode), the shadow-copy (BinaryConnect)
# control and the round-to-nearest control, depths 3 6 8, seeds 0-2 (resumable: run it
# again to continue; a finished point is never recomputed). Same schedule as long-mse:
# gain minimising the expected RR error (--gain mse), lr 8.0 (the lr run_long.sh chose
# for long-mse RR and run_controls.sh kept for the controls after ctl_pilot/), 12 epochs
# of fine-tuning of the same 10-epoch-per-RBM DBNs, SGD without momentum, minibatch 100,
# test error at the epoch of lowest validation error. Until this sitting the 2^-2
# controls existed only under the first protocol (2 epochs, lr 0.5, gain max).
# Order: a complete seed-0 row (rr, shadow, nearest at depths 6 3 8) first, then seed 1, then seed 2.
# One thread (the machine is shared).
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
S="python bench/discrete_depth_study.py --variants rr shadow nearest --steps 2^-2
   --finetune-epochs 12 --gain mse --lr 8.0 --protocol long-mse"
$S --seeds 0 --depths 6 3 8
$S --seeds 1 --depths 6 3 8
$S --seeds 2 --depths 6 3 8
