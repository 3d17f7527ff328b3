#!/bin/bash
# Longer fine-tuning of the ternary (Δ = 2^0) points, beside the first protocol's results
# (resumable: run it again to continue). Both protocols: 12 epochs (first protocol: 2; the
# paper: 100), SGD without momentum, minibatch 100, test error at the epoch of lowest
# validation error. The lr of each was chosen on depth-6 seed-0 validation error
# (lr_pilot/p2.log, p3.log; pilot.py):
#   long-max: the paper's gain max|W|, lr 0.1 (best of 0.1 / 0.5 / 2.0: val 17.33 / 19.96 / 25.00)
#   long-mse: gain minimising the expected RR error (rounding_error_gain), lr 8.0
#             (best of 2.0 / 8.0 over 8 epochs: val 10.97 / 10.25)
S="python bench/discrete_depth_study.py --variants rr --steps 2^0 --finetune-epochs 12 --save-models"
MSE="$S --gain mse --lr 8.0 --protocol long-mse"
MAX="$S --gain max --lr 0.1 --protocol long-max"
$MSE --seeds 0 --depths 3 6 8
$MAX --seeds 0 --depths 3 6 8
$MSE --seeds 1 2 --depths 3 6 8
$MSE --seeds 0 1 2 --depths 5
$MAX --seeds 1 2 --depths 3 6 8
$MAX --seeds 0 1 2 --depths 5
