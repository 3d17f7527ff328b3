#!/bin/bash
# Quiet-machine speed runs of the 2nd sitting (stop 15). Run from /work/main with nothing else running.
cd "$(dirname "$0")/.."
set -x
uptime
python bench/speed_vs_torch.py --repeats 2 --only mlp lenet rbm inference --out bench/results/speed_vs_torch.json
uptime
python bench/sparse_speed.py
uptime
python bench/discrete_inference_speed.py --threads 1 --repeats 5 --model /work/artifacts/issue9/models/rr_L6_20_s0_long-max.h5 --out bench/results/discrete_inference_speed_long-max.json
python bench/discrete_inference_speed.py --threads 1 --repeats 5 --model /work/artifacts/issue9/models/rr_L6_20_s0_long-mse.h5 --out bench/results/discrete_inference_speed_long-mse.json
uptime
python bench/speed_vs_torch.py --repeats 1 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick.json
uptime
python bench/semisync_speed.py --threads 2 --out bench/results/semisync_speed.json
uptime
