#!/bin/bash
# Sitting 23's second quiet run (nothing else running), after the sitting's merges. From /work/main.
cd /work/main
set -x
uptime; date
# #11: the layer step in separate processes (the dedicated command), then the epoch, 6 a side
python bench/sparse_speed.py --peers minidnn,dense --densities 0.04,0.01 --repeats 7 --no-epoch --out bench/results/sparse_speed_step_s23b.json
python bench/sparse_speed.py --peers minidnn,dense --densities 0.04 --repeats 3 --epoch-repeats 6 --out bench/results/sparse_speed_epoch_s23b.json
uptime
# #8 headline (MLP, LeNet, RBM, inference) after s23-epoch / s23-rbm / s23-clean
python bench/speed_vs_torch.py --repeats 2 --only mlp lenet rbm inference --out bench/results/speed_vs_torch_s23b.json
uptime
# s23-rbm's step against cfa194e, and the epoch beside its steps; s23-epoch's data path
python bench/rbm_tree_ab.py --base cfa194e --threads 2 --rounds 9 --images 50000 --out bench/results/rbm_tree_ab_s23b_quiet.json
python bench/rbm_epoch_steps.py --threads 2 --repeats 2 --out bench/results/rbm_epoch_steps_s23b_quiet.json
python bench/fit_rows_ab.py --threads 2 --clock wall --rounds 9 --out bench/results/fit_rows_ab_s23b_quiet.json
uptime
# #8 Cifar10_quick: does the step use the second core? (s23-conv's probe), then the epoch against PyTorch
python bench/implicit_conv_peak.py --repeats 9 --out bench/results/implicit_conv_peak_s23b_quiet.json
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick_s23b.json
uptime; date
echo QUIET_DONE
