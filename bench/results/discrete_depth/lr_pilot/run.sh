#!/bin/bash
# learning-rate pilot (validation only): depth 5, seed 0, 2 epochs, rr at 2^0 and 2^-2 plus float
for lr in $@; do
  python bench/discrete_depth_study.py --seeds 0 --variants rr float --depths 5 --steps 2^0 2^-2 \
    --finetune-epochs 2 --lr $lr --out bench/results/discrete_depth/lr_pilot/lr$lr
done
