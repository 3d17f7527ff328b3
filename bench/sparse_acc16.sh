#!/bin/sh
# Sitting 16, issue #11: γ = 0.04 accuracy study (long pretraining, long fine-tuning), one
# configuration after another, single-threaded; resumable (rerun this file: finished runs
# are read back, a killed autoencoder resumes from its per-epoch checkpoint).
#   setsid nohup nice -n 5 sh bench/sparse_acc16.sh stage1 > bench/results/s16_stage1.log 2>&1 < /dev/null &
#   python bench/sparse_mnist_table.py --compare bench/results/s16_* bench/results/sparse_table*
set -e
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)"
R=bench/results
COMMON="--pattern per_unit --densities 0.04 --ae-lrs 0.3 --ae-dir $R/s16_ae --artifacts /work/artifacts/issue-11/s16"
T="python bench/sparse_mnist_table.py $COMMON --no-control"
TC="python bench/sparse_mnist_table.py $COMMON"   # with the no-pretraining control
case "$1" in
stage1)
  # the lead: 200 autoencoder epochs without weight decay, then 100 fine-tuning epochs, cosine lr
  # (MSE 1.25e-3, but validation 97.00 %: stopped there, lr 0.05 was not run)
  $T --out-dir $R/s16_ae200_cos100 --ae-epochs 200 --ae-weight-decay 0 \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2
  ;;
stage2)
  # the same fine-tuning from 10-epoch autoencoders with weight decay 0.002 (last sitting's),
  # 0.005 and 0.01: less decay gave a lower MSE and a worse net, so try more
  for wd in 0.002 0.005 0.01; do
    $T --out-dir $R/s16_ae10_wd${wd}_cos100 --ae-epochs 10 --ae-weight-decay $wd \
       --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2
  done
  ;;
stage2b)
  # validation accuracy rose with the decay (97.04 / 97.81 / 97.79 / 97.90 % at 0 / 0.002 /
  # 0.005 / 0.01): continue the scan
  for wd in 0.02 0.04; do
    $T --out-dir $R/s16_ae10_wd${wd}_cos100 --ae-epochs 10 --ae-weight-decay $wd \
       --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2
  done
  ;;
stage3)
  # at the autoencoder weight decay chosen on validation in stage 2 (WD=…): the no-pretraining
  # control (its finished runs are read back: only the control is new), minibatch 50, and two
  # more pattern seeds (the spread of one configuration)
  WD=${WD:?set WD to the stage-2 choice}
  $TC --out-dir $R/s16_ae10_wd${WD}_cos100 --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2
  $T --out-dir $R/s16_ae10_wd${WD}_cos100_b50 --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.1 --ft-batch-size 50
  for seed in 1 2; do
    $T --out-dir $R/s16_ae10_wd${WD}_cos100_s$seed --ae-epochs 10 --ae-weight-decay $WD \
       --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2 --seed $seed
  done
  ;;
stage4)
  # at WD: 200 fine-tuning epochs, the fine-tuning lr chosen among 0.1 / 0.2 / 0.4 in the same
  # directory, and the paper's N(0, 1/γ) init
  WD=${WD:?set WD to the stage-2 choice}
  $T --out-dir $R/s16_ae10_wd${WD}_cos200 --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 200 --ft-schedule cosine --ft-lrs 0.2
  $T --out-dir $R/s16_ae10_wd${WD}_cos100 --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2,0.1,0.4
  $T --out-dir $R/s16_ae10_wd${WD}_cos100_paper --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2 --init paper
  ;;
stage5)
  # the table's other columns at the chosen protocol, pretrained and control, cheapest first
  # (the target was not met; run as far as the time allowed)
  WD=${WD:?set WD to the stage-2 choice}
  $TC --out-dir $R/s16_ae10_wd${WD}_cos100 --ae-epochs 10 --ae-weight-decay $WD \
     --ft-epochs 100 --ft-schedule cosine --ft-lrs 0.2,0.1,0.4 --densities 0.04,0.02,0.01,0.08,0.16
  ;;
*) echo "usage: sh bench/sparse_acc16.sh stage1|stage2|stage2b|stage3|stage4|stage5" >&2; exit 2 ;;
esac
