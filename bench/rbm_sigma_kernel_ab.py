import time, statistics, numpy as np, numba
from minidnn.kernels import rbm_kernels as rk
from minidnn.kernels.rbm_kernels import _sigmoid, _uniform, _philox_fill_into, WORDS_PER_PASS

@numba.njit(cache=False, error_model="numpy")
def old_sig(pre, bias, scale):
    rows, cols = pre.shape
    for r in range(rows):
        for c in range(cols):
            pre[r, c] = _sigmoid(pre[r, c] + bias[c]) * scale

@numba.njit(cache=False, error_model="numpy")
def old_bern(pre, bias, key, states, row_offset, scale):
    rows, cols = pre.shape
    one, zero = pre.dtype.type(1.0), pre.dtype.type(0.0)
    rows_per_pass = max(1, WORDS_PER_PASS // cols)
    most = 4 * ((rows_per_pass * cols) // 4 + 2)
    words = np.empty(most, dtype=np.uint32)
    lanes = np.empty((4, most // 4), dtype=np.uint32)
    for first_row in range(0, rows, rows_per_pass):
        last_row = min(rows, first_row + rows_per_pass)
        start = (row_offset + first_row) * cols
        first_block = start // 4
        n_blocks = ((row_offset + last_row) * cols + 3) // 4 - first_block
        _philox_fill_into(words[:4 * n_blocks], first_block, key, lanes)
        offset = start - 4 * first_block
        for r in range(first_row, last_row):
            row_words = words[offset + (r - first_row) * cols:offset + (r - first_row + 1) * cols]
            row, row_states = pre[r], states[r]
            for c in range(cols):
                p = _sigmoid(row[c] + bias[c])
                row[c] = p * scale
                row_states[c] = one if _uniform(row_words[c], p) < p else zero

rng = np.random.default_rng(0)
fns = {}
for cols in (784, 500):
    pre = (rng.standard_normal((100, cols)) * 3).astype(np.float32); b = rng.standard_normal(cols).astype(np.float32)
    st = np.empty_like(pre); w = pre.copy(); key = rk.draw_key(rng); s = np.float32(0.01)
    fns[f"sig{cols} old"] = (lambda pre=pre, w=w, b=b, s=s: (w.__setitem__(Ellipsis, pre), old_sig(w, b, s)))
    fns[f"sig{cols} new"] = (lambda pre=pre, w=w, b=b, s=s: (w.__setitem__(Ellipsis, pre), rk._sigmoid_bias_kernel(w, b, s)))
    fns[f"bern{cols} old"] = (lambda pre=pre, w=w, b=b, s=s, st=st, key=key: (w.__setitem__(Ellipsis, pre), old_bern(w, b, key, st, 0, s)))
    fns[f"bern{cols} new"] = (lambda pre=pre, w=w, b=b, s=s, st=st, key=key: (w.__setitem__(Ellipsis, pre), rk._sigmoid_bernoulli_kernel(w, b, key, st, 0, s)))
for f in fns.values(): f()
res = {k: [] for k in fns}
for r in range(21):
    for k, f in (list(fns.items()) if r % 2 else list(fns.items())[::-1]):
        t = time.process_time()
        for _ in range(200): f()
        res[k].append((time.process_time() - t) / 200)
for k, v in res.items(): print(f"{k:14s} {1e6*statistics.median(v):8.1f} us")
