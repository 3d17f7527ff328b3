#!/bin/bash
# Sitting 24's second quiet run (nothing else running), after the s24 merges: the figures
# of the README's speed table on this machine (AMD EPYC Zen 4, family 25 model 17, AVX-512,
# 2 cores), with the machine's mode (cross-CPU round trip, bench/rbm_mode_watch.py) read
# before and after. From /work/main.
cd /work/main
set -x
uptime; date; lscpu | grep -E "Model name|CPU family|Model:|L2|L3"
python bench/rbm_mode_watch.py --seconds 45
python bench/speed_vs_torch.py --only mlp lenet rbm inference --out bench/results/speed_vs_torch_s24b.json
uptime
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick_s24b.json
uptime
python bench/rbm_step_trace.py --threads 2 --rounds 9 --steps 100 --out bench/results/rbm_step_trace_s24b.json
python bench/profile_layers.py --arch cifar10-quick --threads 2 --clock wall --out bench/results/profile_layers_s24b.json
python bench/sparse_speed.py --epoch-repeats 4 --epoch-bare --epoch-workqueue --out bench/results/sparse_speed_s24b.json
python bench/rbm_mode_watch.py --seconds 45
uptime; date
echo QUIET_DONE
