#!/bin/bash
# Sitting 22's second quiet run (after s22-lenet's merge). From /work/main.
cd /work/main
set -x
uptime; date
python bench/speed_vs_torch.py --repeats 2 --only lenet --out bench/results/speed_vs_torch_lenet_s22b.json
python bench/conv_pool2x2_ab.py --threads 2 --repeats 100
python bench/conv_wide_ab.py --threads 2 --repeats 100
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick_s22b.json
uptime; date
