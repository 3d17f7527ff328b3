#!/bin/bash
# The order of the study (resumable; run it again to continue; two copies share the queue).
# Scaled protocol: 10 RBM epochs (recipe 50), 2 fine-tuning epochs (recipe 100), no momentum,
# batch 100; lr chosen on depth-5 validation error from 0.1 / 0.5 / 2.0
# (bench/results/discrete_depth/lr_pilot): 0.5 for the discrete variants, 2.0 for float.
# Order: seed 0 grid, seed 0 controls at 2^0, seeds 1-2 at the paper's headline points
# (ternary and float at 3 and 6 layers), seed 0 controls at 2^-2, then everything else.
S="python bench/discrete_depth_study.py --finetune-epochs 2 --lr 0.5 --lr-float 2.0 --save-models"
# optional: wait for a worker of an earlier order to finish its run (no work lost)
for pid in "$@"; do while kill -0 "$pid" 2>/dev/null; do sleep 10; done; done
$S --seeds 0 --variants rr float
$S --seeds 0 --variants nearest shadow --steps 2^0
$S --seeds 1 2 --variants rr float --steps 2^0 --depths 3 6
$S --seeds 0 --variants nearest shadow --steps 2^-2
$S --seeds 1 2 --variants rr float
$S --seeds 1 2 --variants nearest shadow
