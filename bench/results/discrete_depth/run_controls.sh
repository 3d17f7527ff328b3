#!/bin/bash
# The shadow-copy (BinaryConnect) and round-to-nearest controls under the long-mse
# protocol, Δ = 2^0, depths 3 6 8, seeds 0-2 (resumable: run it again to continue;
# a finished point is never recomputed). Same schedule as long-mse: gain minimising
# the expected RR error, 12 epochs, SGD without momentum, minibatch 100, test error at
# the epoch of lowest validation error. lr: see ctl_pilot/ (run.sh, pilot.log).
LR=${LR:-8.0}
S="python bench/discrete_depth_study.py --variants shadow nearest --steps 2^0 --finetune-epochs 12
   --gain mse --lr $LR --protocol long-mse"
$S --seeds 0 --depths 6 3 8
$S --seeds 1 2 --depths 6 3 8
