#!/bin/bash
# The shadow-copy (BinaryConnect) and round-to-nearest controls under the long-mse
# protocol, Δ = 2^0, depths 3 6 8, seeds 0-2 (resumable: run it again to continue;
# a finished point is never recomputed). Same schedule as long-mse: gain minimising
# the expected RR error, 12 epochs, SGD without momentum, minibatch 100, test error at
# the epoch of lowest validation error. lr 8.0 as long-mse: the pilot (ctl_pilot/run.sh,
# pilot.log; L6 seed 0, 4 epochs, best validation error) gave shadow 9.70 % at lr 8.0 vs
# 15.49 % at 2.0, nearest 59.69 % vs 62.74 %: no reason to leave long-mse's lr.
LR=8.0
S="python bench/discrete_depth_study.py --variants shadow nearest --steps 2^0 --finetune-epochs 12
   --gain mse --lr $LR --protocol long-mse"
$S --seeds 0 --depths 6 3 8
$S --seeds 1 2 --depths 6 3 8
