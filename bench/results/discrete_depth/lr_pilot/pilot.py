"""Quick hypothesis pilot (validation only): L6 ternary seed 0, N steps, update units and gain."""
import sys, time, numpy as np
sys.path.insert(0, "/work/wt/s15-9")
from minidnn import SGD, evaluate, fit
from minidnn.data import load
from minidnn.pretraining import read_pretrained, GreedyStack
from minidnn.quantization import discretize
from minidnn.quantization.discrete import DiscreteDense

depth = int(sys.argv[1]); mode = sys.argv[2]; lr = float(sys.argv[3]); gainmode = sys.argv[4]; epochs = float(sys.argv[5])
splits = load("mnist")
dbn, _ = read_pretrained("/work/artifacts/issue9/dbn_784-300x6_e10_seed0.h5")
model = GreedyStack.from_units(dbn.units[:depth - 2]).to_mlp(10, seed=0)
sys.path.insert(0, "/tmp/i9"); from gain import mse_gain
if gainmode == "mse":
    for l in model.layers:
        if "W" in l.params:
            g = mse_gain(l.params["W"]); l.params["W"] = np.clip(l.params["W"], -g, g)
elif gainmode != "max":
    q = float(gainmode)
    for l in model.layers:
        if "W" in l.params:
            W = l.params["W"]; g = np.quantile(np.abs(W), q)
            l.params["W"] = np.clip(W, -g, g)   # discretize then takes max|W| = g
model = discretize(model, "2^0", rng=0, inference="float")
if mode == "weight":
    for l in model.layers:
        if isinstance(l, DiscreteDense):
            orig = l.apply_update
            def au(name, delta, l=l, orig=orig):
                if name == "codes":
                    delta = delta / l.dtype(l.gain ** 2)
                return orig(name, delta)
            l.apply_update = au
x, y = splits.train.flatten(), splits.train.y
val = (splits.val.flatten(), splits.val.y)
n = int(epochs * len(y))
t = time.time()
opt = SGD(lr)
for e in range(int(np.ceil(epochs))):
    m = min(len(y), n - e * len(y))
    fit(model, (x[:m], y[:m]), None, epochs=1, batch_size=100, optimizer=opt, seed=[0, e], progress=False, log=None)
    print(sys.argv[1:], "epoch", e + 1, "val err %.2f" % (100 * (1 - evaluate(model, val)["accuracy"])), "%.0fs" % (time.time() - t), flush=True)
nz = [float((l.params["codes"] != 0).mean()) for l in model.layers if isinstance(l, DiscreteDense)]
print("nonzero", np.round(nz, 3), "gains", [round(l.gain, 3) for l in model.layers if isinstance(l, DiscreteDense)])
