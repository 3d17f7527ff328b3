import numpy as np
def mse_gain(W):
    a = np.sort(np.abs(np.asarray(W, np.float64)).ravel())
    n = a.size
    csum = np.cumsum(a); csq = np.cumsum(a * a)
    # for g = a[k]: inside = a[:k+1] (<= g): g*sum - sumsq ; outside a[k+1:]: sum (a-g)^2
    tot, totsq = csum[-1], csq[-1]
    g = a
    in_s, in_q = csum, csq
    out_n = n - 1 - np.arange(n); out_s = tot - csum; out_q = totsq - csq
    err = g * in_s - in_q + out_q - 2 * g * out_s + out_n * g * g
    return float(a[int(np.argmin(err))])
