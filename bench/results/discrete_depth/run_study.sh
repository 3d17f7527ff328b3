#!/bin/bash
# The order of the study (resumable; run it again to continue; two copies share the queue).
# Scaled protocol: 10 RBM epochs (recipe 50), 2 fine-tuning epochs (recipe 100), no momentum,
# batch 100; lr chosen on depth-5 validation error from 0.1 / 0.5 / 2.0
# (bench/results/discrete_depth/lr_pilot): 0.5 for the discrete variants, 2.0 for float.
S="python bench/discrete_depth_study.py --finetune-epochs 2 --lr 0.5 --lr-float 2.0 --save-models"
$S --seeds 0 --variants rr float
$S --seeds 0 --variants nearest shadow
$S --seeds 1 --variants rr float
$S --seeds 2 --variants rr float
$S --seeds 1 2 --variants nearest shadow
