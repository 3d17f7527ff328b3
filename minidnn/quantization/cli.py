"""``minidnn quantize``: post-training bit-mask quantization of a model file (technique 2).

    minidnn quantize MODEL.h5 --pattern conv1=6_2_0_1_0 --pattern conv2=7_3_0_1_2_0 -o q.h5
    minidnn quantize MODEL.h5 --search --bits 3 [--per-channel] [--layers all] [--rescale max] -o q.h5

Patterns are chosen by hand or searched on the validation split; the test
split is read only after the choice, to report the final accuracy.
"""
from __future__ import annotations

import json
import time


def add_quantize_parser(sub) -> None:
    """Register the ``quantize`` subcommand on the ``minidnn`` subparsers."""
    from ..cli import _add_data_args
    p = sub.add_parser(
        "quantize", help="round a trained model's weights onto bit-mask fixed-point patterns",
        description="Post-training quantization (Doi & Mitsuyama): each chosen Conv2D/Dense "
                    "layer's weights are rounded to the nearest value of a sign-magnitude "
                    "fixed-point pattern B_M_p1_..._pM_S (or X0.0XXX form), saturating; "
                    "biases stay float. Patterns are given with --pattern or searched on the "
                    "validation split with --search. Layers: a layer name, conv1..convK and "
                    "ip1..ipK (Caffe names, counted from 1), or conv / dense / all.")
    p.add_argument("model", help="trained model file (.h5)")
    p.add_argument("-o", "--out", required=True, help="quantized model file to write")
    p.add_argument("--pattern", action="append", default=[], metavar="LAYER=PATTERN",
                   help="pattern for a layer, e.g. conv1=6_2_0_1_0 or conv=X0.0XXX (repeatable)")
    p.add_argument("--search", action="store_true",
                   help="search every pattern with --bits effective bits (B <= --max-bits) "
                        "per layer on the validation split")
    p.add_argument("--bits", type=int, default=4,
                   help="effective bits B - M per weight for --search (default %(default)s)")
    p.add_argument("--layers", default="conv",
                   help="layers to search, comma separated keys (default %(default)s: the "
                        "paper quantizes conv layers; 'all' adds the dense layers)")
    p.add_argument("--per-channel", action="store_true",
                   help="also try one pattern per output channel (kept when it is better on "
                        "validation)")
    p.add_argument("--rescale", choices=("none", "max", "pow2"), default="none",
                   help="scale each quantized layer (per channel with per-channel patterns) "
                        "before rounding: 'max' maps max|w| onto the pattern's largest value, "
                        "'pow2' uses the nearest power of two (a binary-point shift); the "
                        "float scale is stored in the file and applied at the output "
                        "(default %(default)s: the raw weights are rounded, as in the paper)")
    p.add_argument("--max-bits", type=int, default=8, help="largest word B searched (default %(default)s)")
    p.add_argument("--activation-bits", type=int, default=8,
                   help="input code width of the integer path (default %(default)s)")
    p.add_argument("--integer", action="store_true",
                   help="calibrate the integer path on the validation split and store the "
                        "layers running it (int8 weight codes x integer activations, int32 sums)")
    p.add_argument("--report", default=None, metavar="FILE.json",
                   help="write the choice, every candidate tried and the accuracies as JSON")
    p.add_argument("--batch-size", type=int, default=1000, help="evaluation batch size (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_data_args(p)
    p.set_defaults(func=cmd_quantize)


def parse_assignments(items: list[str]) -> dict:
    """``["conv1=6_2_0_1_0", ...]`` → {"conv1": "6_2_0_1_0"}, patterns validated."""
    from .bitmask import BitMaskPattern
    out = {}
    for item in items:
        key, sep, pattern = item.partition("=")
        if not sep or not key or not pattern:
            raise ValueError(f"--pattern expects LAYER=PATTERN (e.g. conv1=6_2_0_1_0), got {item!r}")
        out[key.strip()] = str(BitMaskPattern.parse(pattern))
    return out


def run_quantize(args, splits) -> dict:
    """The quantize command on loaded data splits; returns the report dict.

    The choice (hand-given or searched) is made before the test split is
    touched; the search receives the validation split only."""
    from .. import io
    from ..training import evaluate
    from .ptq import calibrate, check_rescale, quantize_model, set_integer, weight_bytes
    from .search import search_patterns
    log = (lambda line: None) if args.quiet else print
    model = io.load(args.model)
    assignment = parse_assignments(args.pattern)
    rescale = check_rescale(getattr(args, "rescale", None))
    report = {"model": args.model, "dataset": args.dataset, "rescale": rescale}
    t0 = time.perf_counter()
    if args.search:
        layers = [k.strip() for k in args.layers.split(",") if k.strip()]
        result = search_patterns(model, splits.val, args.bits, layers=layers,
                                 per_channel=args.per_channel, max_bits=args.max_bits,
                                 batch_size=args.batch_size, rescale=rescale, log=log)
        report["search"] = result.to_json()
        assignment = {**result.assignment, **assignment}     # hand-given patterns win
    if not assignment:
        raise ValueError("nothing to quantize: give --pattern LAYER=PATTERN or --search")
    quantized = quantize_model(model, assignment, activation_bits=args.activation_bits,
                               rescale=rescale)
    if args.integer:
        calibrate(quantized, splits.val.x)
        set_integer(quantized, True)
    report["assignment"] = assignment
    report["seconds"] = time.perf_counter() - t0
    # the choice is final here; only now is the test split read
    for name, net in (("float", model), ("quantized", quantized)):
        for split in ("val", "test"):
            data = getattr(splits, split)
            report[f"{name}_{split}_accuracy"] = evaluate(net, data, batch_size=args.batch_size)["accuracy"]
    report["weight_bytes"] = {"float": weight_bytes(model), "quantized": weight_bytes(quantized)}
    io.save(quantized, args.out, training={"quantized_from": args.model, "assignment": assignment,
                                            "integer": bool(args.integer), "rescale": rescale})
    return report


def cmd_quantize(args) -> int:
    from ..cli import _load_data
    report = run_quantize(args, _load_data(args))
    for key in ("float", "quantized"):
        print(f"{key:>9}: val {100 * report[f'{key}_val_accuracy']:.2f}%  "
              f"test {100 * report[f'{key}_test_accuracy']:.2f}%  "
              f"weights {sum(report['weight_bytes'][key].values()):,} bytes")
    for name, pattern in report["assignment"].items():
        shown = pattern if isinstance(pattern, str) else f"per-channel: {sorted(set(pattern))}"
        print(f"  {name}: {shown}")
    print(f"wrote {args.out}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=2)
        print(f"report: {args.report}")
    return 0
