#!/bin/bash
# Sitting 24 first quiet run (nothing else running): where main (ddc853c) stands on this
# machine (AMD EPYC, family 25 model 17 Zen 4, AVX-512, 2 cores). From /work/main.
cd /work/main
set -x
uptime; date; lscpu | grep -E "Model name|CPU family|Model:|L2|L3"
python bench/speed_vs_torch.py --repeats 2 --only mlp lenet rbm inference --out bench/results/speed_vs_torch_s24a.json
uptime
python bench/sparse_speed.py --epoch-repeats 4 --epoch-bare --epoch-workqueue --out bench/results/sparse_speed_s24a.json
uptime
python bench/sparse_epoch_parts.py --threads 2 --clock wall --images 50000 --out bench/results/sparse_epoch_parts_s24a.json
python bench/rbm_step_trace.py --threads 2 --rounds 5 --steps 100 --out bench/results/rbm_step_trace_s24a.json
python bench/profile_layers.py --arch both --threads 2 --clock wall --out bench/results/profile_layers_s24a.json
python bench/profile_layers_torch.py --arch cifar10-quick --threads 2 --clock wall --out bench/results/profile_layers_torch_cifar_s24a.json
python bench/profile_layers_torch.py --arch lenet --threads 2 --clock wall --out bench/results/profile_layers_torch_lenet_s24a.json
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick_s24a.json
uptime; date
echo QUIET_DONE
