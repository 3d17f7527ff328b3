#!/bin/bash
# lr pilot for the controls under the long-mse protocol (validation only; L6, seed 0,
# 4 epochs, gain mse): the long-mse lr 8.0 against 2.0, for shadow and nearest.
# Results land here (not in the study's table). Resumable like the study.
S="python bench/discrete_depth_study.py --variants shadow nearest --steps 2^0 --depths 6 --seeds 0
   --finetune-epochs 4 --gain mse --out bench/results/discrete_depth/ctl_pilot"
$S --lr 8.0 --protocol pilot-lr8
$S --lr 2.0 --protocol pilot-lr2
