"""Depth versus weight precision (technique 1; the seed-000 paper's Figure 1), full MNIST.

For each seed, one greedy DBN 784-300×6 is pretrained (RBMs, SPEC.md recipe,
epochs scaled by --pretrain-epochs); the nets of depth L = 3 … 8 (counting
input and output: 784-300-10 … 784-300×6-10) take its first L − 2 RBMs as
their hidden layers (a greedy stack's prefix is exactly the shallower stack)
plus a Dense(300, 10) output drawn from the seed. Each net is then
fine-tuned by backprop, SGD lr --lr, no momentum, minibatch 100, in one of
these variants:

* ``rr``: every Dense layer discretised onto the grid of step Δ (gain
  max|W| per layer) and trained in the memory-saving mode Q ← RR(Q − η∂L/∂Q);
* ``float``: the float baseline (same DBN, same schedule);
* ``nearest``: memory-saving mode with deterministic round-to-nearest (control);
* ``shadow``: BinaryConnect-style float shadow, RR in the forward pass,
  evaluated and exported rounded to nearest (control).

Each epoch the validation and test errors are recorded; the reported test
error is the one at the epoch of lowest *validation* error (selection on
validation only; the test error of the last epoch is kept too), with the
fraction of nonzero codes per layer (how far randomized rounding has spread
the codes).

Protocols: ``--protocol TAG`` appends ``_TAG`` to every point's name, so a
longer or otherwise changed schedule is run beside the earlier results, never
over them; ``--gain`` picks the per-layer gain rule of the conversion
(``max``: the paper's max|W|; ``mse``: the gain minimising the expected
squared rounding error, ``minidnn.quantization.discrete.rounding_error_gain``).
The tags used and their settings are in the run_*.sh scripts of
bench/results/discrete_depth/.

Resumable: every finished point is one JSON file in --out
(``<variant>_L<depth>_<step>_s<seed>.json``) and is never recomputed; several
workers may run at once (a point being computed is claimed by an exclusive
``.claim`` file). ``--plot`` draws the figures and the table from whatever
JSON files exist.

    # the order used for the results (seed 0 grid, then controls, then seeds 1, 2):
    python bench/discrete_depth_study.py --seeds 0 --variants rr float
    python bench/discrete_depth_study.py --seeds 0 --variants nearest shadow
    python bench/discrete_depth_study.py --seeds 1 2 --variants rr float nearest shadow
    python bench/discrete_depth_study.py --plot
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

STEPS = ["2^0", "2^-1", "2^-2", "2^-3", "2^-4", "2^-6"]
CONTROL_STEPS = ["2^0", "2^-2"]
DEPTHS = [3, 4, 5, 6, 7, 8]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "discrete_depth")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--variants", nargs="+", default=["rr", "float"],
                   choices=["rr", "float", "nearest", "shadow"])
    p.add_argument("--depths", type=int, nargs="+", default=DEPTHS)
    p.add_argument("--steps", nargs="+", default=None,
                   help="grid steps (default: all six for rr, 2^0 and 2^-2 for controls)")
    p.add_argument("--pretrain-epochs", type=int, default=10,
                   help="epochs per RBM (SPEC recipe: 50; momentum switch scaled with it)")
    p.add_argument("--finetune-epochs", type=int, default=6, help="SPEC recipe: 100")
    p.add_argument("--lr", type=float, default=0.5, help="learning rate of the discrete variants")
    p.add_argument("--lr-float", type=float, default=2.0, help="learning rate of the float baseline")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--gain", choices=["max", "mse"], default="max",
                   help="per-layer gain rule of the conversion (the paper: max)")
    p.add_argument("--protocol", default="",
                   help="tag appended to the point names (a new protocol beside the old results)")
    p.add_argument("--dbn-dir", default="/work/artifacts/issue9",
                   help="where the pretrained DBNs are kept (large; not committed)")
    p.add_argument("--out", default=OUT)
    p.add_argument("--save-models", action="store_true",
                   help="also save each finished model (as shipped) under --dbn-dir/models")
    p.add_argument("--plot", action="store_true", help="only draw figures and the table")
    p.add_argument("--dry-run", action="store_true", help="list the points still to do")
    return p.parse_args()


def point_name(variant, depth, step, seed, protocol=""):
    name = f"{variant}_L{depth}_{'float' if step is None else step.replace('^', '')}_s{seed}"
    return f"{name}_{protocol}" if protocol else name


def points(args):
    """Float first, then step by step, the variants of one step together, each over
    the seeds, so a partial run has whole curves, with their spread, to compare."""
    if "float" in args.variants:
        for seed in args.seeds:
            for depth in args.depths:
                yield "float", depth, None, seed
    for step in args.steps or STEPS:
        for variant in (v for v in args.variants if v != "float"):
            if args.steps is None and variant != "rr" and step not in CONTROL_STEPS:
                continue
            for seed in args.seeds:
                for depth in args.depths:
                    yield variant, depth, step, seed


# -- pretraining (one DBN per seed, its prefixes reused) ---------------------------------------

def dbn_path(args, seed):
    return os.path.join(args.dbn_dir, f"dbn_784-300x6_e{args.pretrain_epochs}_seed{seed}.h5")


def pretrained_dbn(args, seed, x_train):
    """The seed's DBN 784-300×6, pretrained (resumably) if its file is not complete."""
    from minidnn.pretraining import DBN, PretrainConfig, read_pretrained
    path = dbn_path(args, seed)
    if os.path.exists(path):
        stack, meta = read_pretrained(path)
        if meta["complete"]:
            return stack
    switch = round(20 * args.pretrain_epochs / 50) + 1   # 0.5 for 20 of 50 epochs, scaled
    config = PretrainConfig(epochs=args.pretrain_epochs, lr=0.1, weight_decay=0.002,
                            momentum=0.5, final_momentum=0.9, momentum_switch_epoch=switch,
                            batch_size=100)
    print(f"pretraining seed {seed}: {config}", flush=True)
    dbn = DBN([784] + [300] * 6, rng=seed)
    os.makedirs(args.dbn_dir, exist_ok=True)
    dbn.pretrain(x_train, config, seed=seed, checkpoint=path, resume=True, log=print)
    return dbn


# -- one point -----------------------------------------------------------------------------------

def build_model(variant, depth, step, seed, dbn, gain="max"):
    from minidnn.pretraining import GreedyStack
    from minidnn.quantization import discretize
    prefix = GreedyStack.from_units(dbn.units[:depth - 2])
    model = prefix.to_mlp(10, seed=seed)
    if variant == "float":
        return model
    return discretize(model, step, rounding="nearest" if variant == "nearest" else "randomized",
                      shadow=variant == "shadow", rng=seed, inference="float", gain=gain)


def run_point(args, variant, depth, step, seed, splits, dbn):
    from minidnn import SGD, evaluate, fit
    from minidnn.quantization import export_discrete, weight_storage_bytes

    model = build_model(variant, depth, step, seed, dbn, args.gain)
    train = (splits.train.flatten(), splits.train.y)
    val = (splits.val.flatten(), splits.val.y)
    test = (splits.test.flatten(), splits.test.y)
    lr = args.lr_float if variant == "float" else args.lr
    optimizer = SGD(lr)
    label = point_name(variant, depth, step, seed, args.protocol)
    records = []
    t0 = time.perf_counter()
    before = {"val_error": 1 - evaluate(model, val)["accuracy"],
              "test_error": 1 - evaluate(model, test)["accuracy"]}
    for epoch in range(args.finetune_epochs):
        optimizer.set_epoch(epoch)
        t = time.perf_counter()
        # one epoch per call; the shuffle seed differs per epoch, the rounding streams
        # (each layer's rng) and the optimizer carry over
        fit(model, train, None, epochs=1, batch_size=args.batch_size, optimizer=optimizer,
            seed=[seed, epoch], progress=False, log=None)
        seconds = time.perf_counter() - t
        shipped = export_discrete(model, inference="float") if variant == "shadow" else model
        rec = {"epoch": epoch + 1, "seconds": seconds,
               "val_error": 1 - evaluate(shipped, val)["accuracy"],
               "test_error": 1 - evaluate(shipped, test)["accuracy"],
               "nonzero_codes": [float(np.count_nonzero(l.params["codes"])) / l.params["codes"].size
                                 for l in shipped.layers if "codes" in l.params]}
        records.append(rec)
        print(f"[{label}] epoch {epoch + 1}/{args.finetune_epochs} val {100 * rec['val_error']:.2f}% "
              f"test {100 * rec['test_error']:.2f}% ({seconds:.1f}s)", flush=True)
    best = min(records, key=lambda r: (r["val_error"], r["epoch"]))
    shipped = export_discrete(model, inference="float") if variant == "shadow" else model
    if args.save_models:
        from minidnn import save
        os.makedirs(os.path.join(args.dbn_dir, "models"), exist_ok=True)
        save(shipped, os.path.join(args.dbn_dir, "models", label + ".h5"),
             training={"study": "discrete_depth", "point": label})
    codes_on_grid = all(
        int(np.abs(l.params["codes"]).max()) <= l.grid.max_code
        for l in shipped.layers if "codes" in l.params)
    return {"variant": variant, "depth": depth, "layers": [784] + [300] * (depth - 2) + [10],
            "step": step, "seed": seed, "finetune_epochs": args.finetune_epochs, "lr": lr,
            "batch_size": args.batch_size, "momentum": 0.0, "protocol": args.protocol,
            "gain_rule": None if variant == "float" else args.gain,
            "gains": [l.gain for l in shipped.layers if "codes" in l.params],
            "pretrain_epochs_per_rbm": args.pretrain_epochs,
            "selected_epoch": best["epoch"], "val_error": best["val_error"],
            "test_error": best["test_error"], "last_test_error": records[-1]["test_error"],
            "before_finetune": before, "epochs": records,
            "weight_bytes": weight_storage_bytes(shipped),
            "float32_weight_bytes": sum(l.params["W"].nbytes if "W" in l.params else
                                        l.params["codes"].size * 4
                                        for l in shipped.layers if l.params),
            "codes_on_grid": codes_on_grid, "seconds": time.perf_counter() - t0}


def claim(path):
    """Claim a point for this worker (exclusive create); a stale claim of a dead pid is taken over."""
    claim_path = path + ".claim"
    try:
        fd = os.open(claim_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(open(claim_path).read().strip() or 0)
            os.kill(pid, 0)
            return False
        except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
            os.replace(claim_path, claim_path + ".stale")
            return claim(path)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run(args):
    from minidnn.data import load
    os.makedirs(args.out, exist_ok=True)
    todo = [p for p in points(args)
            if not os.path.exists(os.path.join(args.out, point_name(*p, args.protocol) + ".json"))]
    print(f"{len(todo)} points to do", flush=True)
    if args.dry_run:
        for p in todo:
            print("  ", point_name(*p, args.protocol))
        return
    splits = load("mnist")
    dbns = {}
    for p in todo:
        variant, depth, step, seed = p
        path = os.path.join(args.out, point_name(*p, args.protocol) + ".json")
        if os.path.exists(path) or not claim(path):
            continue
        try:
            if seed not in dbns:
                dbns[seed] = pretrained_dbn(args, seed, splits.train.flatten())
            result = run_point(args, variant, depth, step, seed, splits, dbns[seed])
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
            os.replace(tmp, path)
            print(f"wrote {path}: test error {100 * result['test_error']:.2f}% "
                  f"({result['seconds']:.0f}s)", flush=True)
        finally:
            if os.path.exists(path + ".claim"):
                os.remove(path + ".claim")


# -- figures and table ---------------------------------------------------------------------------

def load_results(out):
    results = []
    for name in sorted(os.listdir(out)):
        if name.endswith(".json") and "_L" in name:
            with open(os.path.join(out, name)) as f:
                results.append(json.load(f))
    return results


def summarise(results):
    """(variant, step, depth) -> dict(mean, std, n, seeds, bytes)."""
    groups = {}
    for r in results:
        groups.setdefault((r["variant"], r["step"], r["depth"]), []).append(r)
    table = {}
    for key, rs in groups.items():
        errs = np.array([r["test_error"] for r in rs]) * 100
        table[key] = {"mean": float(errs.mean()), "std": float(errs.std(ddof=1)) if len(errs) > 1 else 0.0,
                      "min": float(errs.min()), "max": float(errs.max()), "n": len(errs),
                      "seeds": sorted(r["seed"] for r in rs), "bytes": rs[0]["weight_bytes"],
                      "epochs": rs[0]["finetune_epochs"]}
    return table


def write_table(table, out):
    rows = ["| variant | Δ | " + " | ".join(f"L={d}" for d in DEPTHS) + " |",
            "|---|---|" + "---|" * len(DEPTHS)]
    order = [("float", None)] + [("rr", s) for s in STEPS] + \
        [(v, s) for v in ("nearest", "shadow") for s in CONTROL_STEPS]
    for variant, step in order:
        cells = []
        for d in DEPTHS:
            t = table.get((variant, step, d))
            if t is None:
                cells.append("–")
            elif t["n"] > 1:
                cells.append(f"{t['mean']:.2f} ± {t['std']:.2f} (n={t['n']})")
            else:
                cells.append(f"{t['mean']:.2f} (n=1)")
        if any(c != "–" for c in cells):
            rows.append(f"| {variant} | {step or 'float32'} | " + " | ".join(cells) + " |")
    text = ("Test error (%) at the epoch of lowest validation error, mean ± sample std over "
            "seeds (n seeds).\n\n" + "\n".join(rows) + "\n")
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text)
    return text


def tex(step):
    """"2^-2" -> "$2^{-2}$" for matplotlib's mathtext."""
    return f"$2^{{{step[2:]}}}$"


def plot(table, out, suffix="", note="", float_table=None):
    """error_vs_depth, controls_vs_depth and error_vs_weight_bytes ``{suffix}.png`` from one
    protocol's summarised points; without a float curve of its own, ``float_table``'s (the
    first protocol's) is drawn, labelled as such."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def curve(ax, variant, step, label, x_of=lambda d, t: d, **kw):
        pts = [(x_of(d, table[(variant, step, d)]), table[(variant, step, d)])
               for d in DEPTHS if (variant, step, d) in table]
        if pts:
            ax.errorbar([p[0] for p in pts], [p[1]["mean"] for p in pts],
                        yerr=[p[1]["std"] for p in pts], capsize=3, marker="o", label=label, **kw)

    float_label = "float32"
    if float_table is not None and not any(k[0] == "float" for k in table):
        table = {**table, **{k: v for k, v in float_table.items() if k[0] == "float"}}
        float_label = "float32, first protocol (2 epochs)"

    fig, ax = plt.subplots(figsize=(7, 5))
    for step in STEPS:
        curve(ax, "rr", step, f"Δ = {tex(step)}")
    curve(ax, "float", None, float_label, color="black", linestyle="--")
    ax.set_xlabel("layers (counting input and output)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title("MNIST, 300 units per hidden layer, RBM-pretrained, RR fine-tuning" + note,
                 fontsize=10 if note else None)
    ax.legend(fontsize=8, ncol=2, loc="upper center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"error_vs_depth{suffix}.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for step in CONTROL_STEPS:
        curve(ax, "rr", step, f"RR, memory-saving, Δ = {tex(step)}")
        curve(ax, "nearest", step, f"nearest, memory-saving, Δ = {tex(step)}", linestyle=":")
        curve(ax, "shadow", step, f"shadow (BinaryConnect), Δ = {tex(step)}", linestyle="-.")
    curve(ax, "float", None, float_label, color="black", linestyle="--")
    ax.set_xlabel("layers (counting input and output)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title("Controls: rounding to nearest, full-precision shadow" + note,
                 fontsize=10 if note else None)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"controls_vs_depth{suffix}.png"), dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 5))
    for step in STEPS:
        curve(ax, "rr", step, f"Δ = {tex(step)}", x_of=lambda d, t: t["bytes"] / 1024)
    curve(ax, "float", None, float_label, x_of=lambda d, t: t["bytes"] / 1024, color="black",
          linestyle="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("weight storage (KiB; packed codes, depth 3 … 8 along each curve)")
    ax.set_ylabel("test error (%)")
    ax.set_title("Error against weight bytes" + note, fontsize=10 if note else None)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"error_vs_weight_bytes{suffix}.png"), dpi=120)
    plt.close(fig)


PROTOCOLS_NOTE = """
Protocols beside the first (2 epochs): each tag's settings are in its JSON files
and in the scripts that ran them (run_long.sh, run_controls.sh,
run_controls_2-2.sh, run_long_steps.sh). Cell: test error (%) at the epoch of lowest validation error,
mean ± sample std over seeds (n); [e: mean selected epoch; nz: nonzero codes of
the hidden layers at that epoch, %].
"""


def protocol_table(results, out):
    """Markdown table of the tagged protocols (appended to table.md)."""
    groups = {}
    for r in results:
        groups.setdefault((r["protocol"], r["variant"], r["step"], r["depth"]), []).append(r)
    variant_order = {"float": 0, "rr": 1, "shadow": 2, "nearest": 3}
    rows_keys = sorted({k[:3] for k in groups},      # per protocol: float, rr by Δ, controls
                       key=lambda k: (k[0], variant_order.get(k[1], 9),
                                      -1 if k[2] is None else STEPS.index(k[2])))
    depths = sorted({k[3] for k in groups})
    lines = ["| protocol | variant | Δ | gain | lr | epochs | " + " | ".join(f"L={d}" for d in depths) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(depths)]
    for key in rows_keys:
        cells = []
        any_r = next(rs for k, rs in groups.items() if k[:3] == key)[0]
        for d in depths:
            rs = groups.get((*key, d))
            if not rs:
                cells.append("–")
                continue
            errs = np.array([r["test_error"] for r in rs]) * 100
            sel = [next(e for e in r["epochs"] if e["epoch"] == r["selected_epoch"]) for r in rs]
            nz = [100 * np.mean(e["nonzero_codes"][:-1]) for e in sel if e.get("nonzero_codes")]
            spread = f" ± {errs.std(ddof=1):.2f}" if len(errs) > 1 else ""
            cells.append(f"{errs.mean():.2f}{spread} (n={len(errs)}) "
                         f"[e {np.mean([r['selected_epoch'] for r in rs]):.0f}"
                         + (f"; nz {np.mean(nz):.0f}" if nz else "") + "]")
        lines.append(f"| {key[0]} | {key[1]} | {key[2] or 'float32'} | {any_r.get('gain_rule') or '–'} | "
                     f"{any_r['lr']} | {any_r['finetune_epochs']} | " + " | ".join(cells) + " |")
    return PROTOCOLS_NOTE + "\n" + "\n".join(lines) + "\n"


def plot_protocols(results, first_table, out):
    """ternary_protocols_vs_depth.png: ternary test error vs depth, one curve per protocol."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 7))
    for variant, step, label, kw in (("rr", "2^0", "ternary, 2 epochs (first protocol)", {}),
                                     ("float", None, "float32, 2 epochs", {"color": "black",
                                                                          "linestyle": "--"})):
        pts = [(d, first_table[(variant, step, d)]) for d in DEPTHS if (variant, step, d) in first_table]
        if pts:
            ax.errorbar([d for d, _ in pts], [t["mean"] for _, t in pts],
                        yerr=[t["std"] for _, t in pts], capsize=3, marker="o", label=label, **kw)
    groups, first_of = {}, {}
    for r in results:
        if r["step"] != "2^0":
            continue
        key = (r["protocol"], r["variant"], r["step"])
        groups.setdefault(key, {}).setdefault(r["depth"], []).append(100 * r["test_error"])
        first_of.setdefault(key, r)
    for (protocol, variant, step), by_depth in sorted(groups.items(), key=lambda kv: str(kv[0])):
        r0 = first_of[(protocol, variant, step)]
        ds = sorted(by_depth)
        means = [np.mean(by_depth[d]) for d in ds]
        stds = [np.std(by_depth[d], ddof=1) if len(by_depth[d]) > 1 else 0.0 for d in ds]
        name = "ternary" if step == "2^0" else (f"Δ = {tex(step)}" if step else "float32")
        name += {"shadow": " shadow (BinaryConnect)", "nearest": " nearest"}.get(variant, "")
        ax.errorbar(ds, means, yerr=stds, capsize=3, marker="s",
                    linestyle={"shadow": "-.", "nearest": ":"}.get(variant, "-"),
                    label=f"{name}, {protocol}: gain {r0.get('gain_rule')}, lr {r0['lr']}, "
                          f"{r0['finetune_epochs']} epochs (n = {max(len(v) for v in by_depth.values())})")
    ax.set_xlabel("layers (counting input and output)")
    ax.set_ylabel("test error (%)")
    ax.set_yscale("log")
    ax.set_title("Ternary (Δ = $2^0$): fine-tuning protocols, gain rules, controls")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "ternary_protocols_vs_depth.png"), dpi=120)
    plt.close(fig)


def main():
    args = parse_args()
    if not args.plot:
        run(args)
        if args.dry_run:
            return
    results = load_results(args.out)
    first = [r for r in results if not r.get("protocol")]
    tagged = [r for r in results if r.get("protocol")]
    if first:
        table = summarise(first)
        text = write_table(table, args.out)
        if tagged:
            text += protocol_table(tagged, args.out)
            with open(os.path.join(args.out, "table.md"), "w") as f:
                f.write(text)
            plot_protocols(tagged, table, args.out)
        print(text)
        plot(table, args.out)
        # a protocol run at several grid steps gets Figure 1 and its companions of its own
        for tag in sorted({r["protocol"] for r in tagged}):
            mine = [r for r in tagged if r["protocol"] == tag]
            if len({r["step"] for r in mine if r["variant"] != "float"}) > 1:
                r0 = next(r for r in mine if r["variant"] == "rr")
                plot(summarise(mine), args.out, suffix=f"_{tag}", float_table=table,
                     note=f"\n{tag}: gain {r0['gain_rule']}, lr {r0['lr']}, "
                          f"{r0['finetune_epochs']} epochs")
        print(f"figures in {args.out}")


if __name__ == "__main__":
    main()
