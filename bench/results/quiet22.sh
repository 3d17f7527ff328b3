#!/bin/bash
# Sitting 22's quiet-machine runs (nothing else running). From /work/main.
cd /work/main
set -x
uptime; date
# headline: MLP, LeNet, RBM, inference vs PyTorch / scikit-learn (~6 min)
python bench/speed_vs_torch.py --repeats 2 --only mlp lenet rbm inference --out bench/results/speed_vs_torch.json
uptime
# #11 step: s22-kern's 16-lane kernels in one process, and against the sitting's start
python bench/sparse_speed.py --peers minidnn,dense --densities 0.04,0.01 --repeats 5 --no-epoch --out bench/results/sparse_speed_step_s22_quiet.json
python bench/sparse_kernel_ab.py --lanes --threads 2 --clock wall --rounds 300 --out bench/results/sparse_kernel_ab_lanes_2threads_quiet.json
python bench/sparse_step_ab.py --base 5c0a50c --threads 2 --clock wall --densities 0.04,0.01 --out bench/results/sparse_step_ab_s22_vs_5c0a50c_2t_quiet.json
uptime
# #11 full table + epoch (6 epoch repeats a side)
python bench/sparse_speed.py --epoch-repeats 6 --epoch-bare --epoch-workqueue
uptime
# #11 epoch: fit_epoch_ab bias self-check, the gain against 5c0a50c, the gather switch, the parts
python bench/fit_epoch_ab.py --base HEAD --threads 2 --clock wall --images 50000 --rounds 5 --out bench/results/fit_epoch_ab_selfcheck_s22_quiet.json
python bench/fit_epoch_ab.py --base 5c0a50c --threads 2 --clock wall --images 50000 --rounds 7 --out bench/results/fit_epoch_ab_s22_vs_5c0a50c_quiet.json
python bench/fuse_epoch_ab.py --switches gather --threads 2 --clock wall --images 50000 --rounds 9 --out bench/results/fuse_epoch_ab_gather_s22_quiet.json
python bench/sparse_epoch_parts.py --threads 2 --clock wall --images 50000 --out bench/results/sparse_epoch_parts_s22_2t_quiet.json
uptime
# #8 RBM (s22-rbm)
python bench/rbm_fused_update_ab.py --threads 2 --rounds 9 --steps 100 --out bench/results/rbm_fused_update_ab_2t_quiet.json
python bench/rbm_step20_ab.py --threads 2 --repeats 5 --out bench/results/rbm_step20_ab_s22_2t_quiet.json
python bench/rbm_subnormal_ab.py --threads 2 --rounds 7 --out bench/results/rbm_subnormal_ab_2t_quiet.json
python bench/rbm_step_trace.py --threads 2 --rounds 7 --steps 100 --out bench/results/rbm_step_trace_s22_2t_quiet.json
uptime
# inference after s22-clean's deletions, against the sitting's start
rm -rf /tmp/base5c && mkdir -p /tmp/base5c && git archive 5c0a50c | tar -x -C /tmp/base5c
python bench/inference_ab.py --base /tmp/base5c --threads 2 --rounds 5 --out bench/results/inference_ab_s22_vs_5c0a50c_2t_quiet.json
# Cifar10_quick epoch vs PyTorch (~5 min)
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick.json
uptime; date
