#!/bin/sh
# interleaved parts runs: base (sitting 17 main, fffa29e) and this tree, 1 thread, thread clock
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1
for r in 1 2 3; do
  (cd /tmp/11f/base && PYTHONPATH=/tmp/11f/base python bench/sparse_epoch_parts.py --images 10000 --repeats 3 --out /tmp/11f/parts_base_$r.json > /tmp/11f/parts_base_$r.log 2>&1)
  (cd /work/wt/s18-11f && PYTHONPATH=/work/wt/s18-11f python bench/sparse_epoch_parts.py --images 10000 --repeats 3 --out /tmp/11f/parts_new_$r.json > /tmp/11f/parts_new_$r.log 2>&1)
done
