#!/bin/bash
# Quiet-machine speed runs of a sitting (the figures of the closing note and the README table).
# Run from the repository root with nothing else running on the machine; about 25 minutes.
# The technique-1 models come from bench/discrete_depth_study.py --save-models (see bench/README.md).
cd "$(dirname "$0")/.."
MODELS=${MODELS:-/work/artifacts/issue9/models}
set -x
uptime
python bench/speed_vs_torch.py --repeats 2 --only mlp lenet rbm inference --out bench/results/speed_vs_torch.json
uptime
python bench/sparse_speed.py --epoch-bare --epoch-workqueue   # headline peer + epoch as the CLI sets threads up (sitting 21); also sitting 20's bare epochs and the sparse epoch on workqueue (threads.SPARSE_NUMBA_LAYER's A/B; +45 s)
# sitting 21 (#11, s21-11threads): one parallel region's wake-up + join per Numba layer / libgomp policy, with the sparse, dense and LeNet steps under each (~2.5 min)
python bench/region_wakeup.py --threads 2 --rounds 3 --out bench/results/region_wakeup_2t_quiet.json
# sitting 21 (#11, s21-11threads): the layer step under the CLI's set-up (omp) against the workqueue / active / spin_count=3000 / bare set-ups, γ = 0.04 and 0.01 (~1.5 min)
python bench/sparse_speed.py --peers minidnn,minidnn_workqueue,minidnn_active,minidnn_spin3k,minidnn_bare,dense --densities 0.04,0.01 --repeats 5 --no-epoch --out bench/results/sparse_speed_threads_quiet.json
python bench/sparse_epoch_parts.py --threads 2 --clock wall --images 50000
python bench/fit_epoch_ab.py --base 2bad77b --threads 2 --clock wall --images 50000 --rounds 7 --out bench/results/fit_epoch_ab_s19_quiet.json   # sitting 19 (#11): the epoch against sitting 18's main, ~2 min
python bench/fuse_epoch_ab.py --threads 2 --clock wall --images 50000 --rounds 5 --out bench/results/fuse_epoch_ab_2threads_quiet.json   # sitting 20 (#11, s20-11epoch): FUSE_DENSE_ACTIVATION (SMALL_TRAINING_THREADS and gather.PARALLEL deleted in sitting 22), ~1.5 min
uptime
python bench/rbm_step20_ab.py --threads 2 --repeats 5 --out bench/results/rbm_step20_ab_s22_1blas_2threads_quiet.json   # sitting 22 (#8 RBM): the epoch with OpenBLAS at 2 threads vs 1 (~1 min)
python bench/rbm_subnormal_ab.py --threads 2 --rounds 7 --out bench/results/rbm_subnormal_ab_2threads_quiet.json   # sitting 22 (#8 RBM): no subnormal statistics vs 5c0a50c's kernels, PCD-1 at momentum 0.9, decay 0.002 (~1.5 min)
python bench/rbm_step_trace.py --threads 2 --rounds 7 --steps 100 --out bench/results/rbm_step_trace_2threads_quiet.json   # sitting 21 (#8 RBM): each op of the real step timed in place vs alone, glue, per-thread CPU (~40 s)
python bench/rbm_epoch_probe.py --threads 2 --against 2bad77b --against-monitor-size 0 --repeats 7 --out bench/results/rbm_epoch_probe_s21_vs_2bad77b_quiet.json   # sitting 21 (#8 RBM): sitting 20's 1.90/2.08 s lead for 2bad77b, with 7 runs each (~1.5 min)
python bench/sparse_kernel_ab.py --threads 2 --clock wall --out bench/results/sparse_kernel_ab_2threads_quiet.json
# sitting 19: the layer step under TrainingKernels' work-split switches against dense, γ = 0.04 (~2 min)
python bench/sparse_speed.py --peers minidnn,minidnn_samples,minidnn_serial,minidnn_products,dense --densities 0.04 --repeats 3 --no-epoch --out bench/results/sparse_speed_splits_quiet.json
# sitting 20 (#11, s20-11step): the layer step against sitting 19's main in one process at 2 threads, and its fixed costs (~2 min)
python bench/sparse_step_ab.py --base 232ab88 --densities 0.04 --epoch-images 0 --threads 2 --clock wall --rounds 60 --iters 40 --out bench/results/sparse_step_ab_s20_2threads_quiet.json; python bench/sparse_fixed_costs.py --threads 2 --clock wall --rounds 150 --out bench/results/sparse_fixed_costs_2threads_quiet.json
# sitting 22 (#11): the layer step under TrainingKernels' splits, and the 16-lane kernels against 8 lanes, in one process (~3 min)
python bench/sparse_kernel_ab.py --threads 2 --clock wall --rounds 300 --out bench/results/sparse_kernel_ab_s22_2threads_quiet.json; python bench/sparse_kernel_ab.py --lanes --threads 2 --clock wall --rounds 300 --out bench/results/sparse_kernel_ab_lanes_2threads_quiet.json   # sitting 22 (s22-kern): the splits with the 16-lane kernels, and 8 vs 16 lanes
uptime
if [ -n "$DISCRETE" ]; then   # technique 1's inference (issue 9, resolved): DISCRETE=1 to rerun
  for gain in max mse; do
    python bench/discrete_inference_speed.py --threads 1 --repeats 5 --calls 2000 --model $MODELS/rr_L6_20_s0_long-$gain.h5 --out bench/results/discrete_inference_speed_long-$gain.json
  done
  uptime
fi
# sitting 19, s19-8c1: the tiled first convolution at 2 threads, alone, against its plane-kernel fallback and torch (~1 min)
python bench/conv1_ab.py --threads 2 --repeats 30 --clock wall --out bench/results/conv1_ab_2threads_wall_quiet.json
python bench/implicit_conv_threads.py --threads 2 --repeats 15 --rounds 3 --out bench/results/implicit_conv_threads_2t_quiet_s22.json   # 8conv, ~1 min (sitting 22: implicit and torch only; the older file holds the deleted variants)
python bench/profile_layers_torch.py --threads 2 --clock wall --repeats 20 --out bench/results/profile_layers_torch_2threads_wall_quiet.json
python bench/speed_vs_torch.py --repeats 2 --only cifar10_quick --out bench/results/speed_vs_torch_cifar10_quick.json
uptime
