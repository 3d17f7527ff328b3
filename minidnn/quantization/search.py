"""Automatic bit-mask pattern search under an effective-bit budget (technique 2).

The paper (Doi & Mitsuyama) tried patterns by hand; here every pattern with
B − M = ``bits`` effective bits and B ≤ ``max_bits`` (``enumerate_patterns``)
is tried, layer by layer, and the one with the best **validation** accuracy
is kept (ties: lower validation loss, then the earlier candidate, i.e. fewer
total bits). Candidates that round the layer to identical weights (e.g. every
narrow word that rounds all of them to 0, or, with a rescale, every uniform
mask) share one validation pass; ``top_k`` counts distinct weight sets. The search sees only the validation pair it is given; it never
takes a test set.

Greedy, in layer order: layer t is searched with layers before it already
quantized to their chosen patterns and layers after it in float. The input
of layer t on the validation set is computed once and cached, so each
candidate costs one pass of layer t and the layers after it.

Per output channel (``per_channel=True``): for each channel o and candidate
pattern p the error the rounding adds to that channel's output on
validation inputs x is

    e(o, p) = E_x[(ΔW_o · x)²] = ΔW_o Σ ΔW_oᵀ,   Σ = E[x xᵀ],  ΔW_o = q_p(W_o) − W_o,

(x: a dense input row or an im2col column), computed from one Σ per layer;
each channel takes the pattern with the least error. That per-channel
assignment is then evaluated on validation accuracy like any candidate and
kept only if it beats the best single pattern.

Rescale (``rescale="max"`` or ``"pow2"``, see ``ptq``): every candidate is
rounded as s · q(W / s), s set from the layer's max |w| (per layer for one
pattern, per output channel for the per-channel assignment, whose errors
e(o, p) are then computed with each channel's own scale). A rescale absorbs
the binary-point shift, so with it ``shifts`` other than (0,) only repeat
candidates.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from ..kernels.im2col import im2col
from ..layers import Conv2D
from ..losses import SoftmaxCrossEntropy
from .bitmask import BitMaskPattern, enumerate_patterns
from .ptq import check_rescale, float_layer, quantize_layer, resolve_layers


@dataclass
class SearchResult:
    """What the search chose and everything it tried.

    ``assignment``: layer name → pattern string (or list of per-channel strings);
    ``candidates``: one dict per evaluation (layer, pattern, val_accuracy,
    val_loss, output_mse); ``float_val_accuracy``; ``val_accuracy`` of the
    final model; ``seconds``."""

    assignment: dict
    candidates: list = field(default_factory=list)
    float_val_accuracy: float = float("nan")
    val_accuracy: float = float("nan")
    seconds: float = 0.0
    bits: int = 0
    rescale: str | None = None

    def to_json(self) -> dict:
        return {"bits": self.bits, "rescale": self.rescale, "assignment": self.assignment,
                "float_val_accuracy": self.float_val_accuracy, "val_accuracy": self.val_accuracy,
                "seconds": self.seconds, "candidates": self.candidates}


def _readable(pattern):
    try:
        return pattern.readable()
    except ValueError:                  # the point lies outside the word (large |S|)
        return None


def _run(layers, h, y, batch_size, loss):
    """Accuracy and mean loss of ``layers`` applied to cached inputs ``h``."""
    correct, total = 0, 0.0
    for start in range(0, len(h), batch_size):
        out = h[start:start + batch_size]
        for layer in layers:
            out = layer.forward(out, False)
        yb = y[start:start + batch_size]
        batch_loss, _ = loss(out, yb)
        total += batch_loss * len(yb)
        correct += int((out.argmax(axis=1) == yb).sum())
    return correct / len(h), total / len(h)


def _forward(layers, h, batch_size):
    outs = []
    for start in range(0, len(h), batch_size):
        out = h[start:start + batch_size]
        for layer in layers:
            out = layer.forward(out, False)
        outs.append(out)
    return np.concatenate(outs)


def _input_moment(layer, h, max_rows: int, rng) -> np.ndarray:
    """Σ = E[x xᵀ] over the rows the layer multiplies W with (float64)."""
    if isinstance(layer, Conv2D):
        positions = int(np.prod(layer.output_shape(h.shape[1:])[1:]))
        n_images = min(len(h), max(1, -(-max_rows // positions)))
        pick = np.sort(rng.choice(len(h), n_images, replace=False))
        cols = im2col(np.asarray(h[pick], dtype=np.float64), layer.kernel, layer.strides,
                      layer.pads)
        if cols.shape[1] > max_rows:
            cols = cols[:, rng.choice(cols.shape[1], max_rows, replace=False)]
        return cols @ cols.T / cols.shape[1]
    x = np.asarray(h, dtype=np.float64).reshape(len(h), -1)
    if len(x) > max_rows:
        x = x[rng.choice(len(x), max_rows, replace=False)]
    return x.T @ x / len(x)


def _channel_errors(layer, q, sigma) -> np.ndarray:
    """e(o, p) for every output channel o of ``layer`` rounded as ``q``."""
    W = float_layer(layer).params["W"].astype(np.float64)
    dW = q.weight_values(np.float64) - W
    rows = dW.reshape(dW.shape[0], -1) if isinstance(layer, Conv2D) else dW.T   # (O, K)
    return np.einsum("ok,kl,ol->o", rows, sigma, rows)


def _n_outputs(layer) -> int:
    return layer.out_channels if isinstance(layer, Conv2D) else layer.out_features


def search_patterns(model, val, bits: int, layers="conv", per_channel: bool = False,
                    max_bits: int = 8, shifts=(0,), batch_size: int = 1000,
                    moment_rows: int = 50000, top_k: int | None = None, seed: int = 0,
                    rescale=None, log=print) -> SearchResult:
    """Choose a bit-mask pattern per layer (optionally per channel) on validation data.

    Args:
        model: a trained ``Sequential`` (float; quantized layers are read as their values).
        val: the validation pair ``(x, y)`` (a Dataset works); never the test set.
        bits: effective-bit budget B − M per weight; an int for every searched
            layer or a dict layer key → bits.
        layers: which layers (``resolve_layers`` keys): ``"conv"`` (the paper), ``"all"``,
            or a list such as ``["conv1", "ip1"]``.
        per_channel: also try one pattern per output channel (least output error).
        max_bits: largest word B tried (8: int8 codes).
        shifts: binary-point shifts S tried (the paper's S = 0).
        moment_rows: rows (dense inputs / im2col columns) sampled for Σ.
        top_k: evaluate validation accuracy only for the ``top_k`` distinct weight sets of
            least output error e (plus the plain format; candidates giving the same
            weights share the score); None (default): every candidate.
        seed: seeds that sampling.
        rescale: None (default, the paper: raw weights rounded), "max" or "pow2": each
            candidate's weights scaled first (per layer; per channel for the
            per-channel assignment). ``quantize_model(model, result.assignment,
            rescale=result.rescale)`` rebuilds the chosen model.
        log: receives one line per layer (None: silent).
    Returns a ``SearchResult``; ``quantize_model(model, result.assignment)`` builds the model.
    """
    t0 = time.perf_counter()
    log = log or (lambda line: None)
    rescale = check_rescale(rescale)
    try:
        x, y = val
    except (TypeError, ValueError):
        raise TypeError(f"val must be an (x, y) pair or a Dataset, got {type(val).__name__}") from None
    x = np.asarray(x, dtype=model.dtype)
    y = np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"val needs as many inputs as labels (and at least one), got "
                         f"{len(x)} inputs and {len(y)} labels")
    keys = [layers] if isinstance(layers, str) else list(layers)
    targets = []
    for key in keys:
        for layer in resolve_layers(model, key):
            if layer not in targets:
                targets.append(layer)
    order = {id(l): i for i, l in enumerate(model.layers)}
    targets.sort(key=lambda l: order[id(l)])
    budget = {}
    for layer in targets:
        if isinstance(bits, dict):
            matches = [b for k, b in bits.items() if layer in resolve_layers(model, k)]
            if not matches:
                raise ValueError(f"bits: no budget given for layer {layer.name}")
            budget[layer.name] = int(matches[-1])
        else:
            budget[layer.name] = int(bits)
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed)
    current = [float_layer(l) if l in targets else l for l in model.layers]
    float_acc, _ = _run(current, x, y, batch_size, loss)
    result = SearchResult(assignment={}, float_val_accuracy=float_acc,
                          bits=bits if isinstance(bits, int) else dict(budget), rescale=rescale)
    log(f"float model: val accuracy {float_acc:.4f}")

    h, at = x, 0                                   # h = input of current[at] on val
    for layer in targets:
        t = order[id(layer)]
        h = _forward(current[at:t], h, batch_size)
        at = t
        rest = current[t + 1:]
        base = current[t]
        sigma = _input_moment(base, h, moment_rows, rng)
        candidates = enumerate_patterns(budget[layer.name], max_bits, shifts)
        scored = []
        quantized = [quantize_layer(base, pattern, rescale=rescale) for pattern in candidates]
        per_pattern_errors = [_channel_errors(base, q, sigma) for q in quantized]
        mse = [float(e.mean()) for e in per_pattern_errors]
        if per_channel and rescale is not None:
            # the per-channel assignment scales each channel by its own max |w|: its
            # errors must be those of per-channel-scaled candidates
            n_out = _n_outputs(base)
            channel_errors = [_channel_errors(base, quantize_layer(base, [p] * n_out,
                                                                   rescale=rescale), sigma)
                              for p in candidates]
        else:
            channel_errors = per_pattern_errors
        # candidates that round the layer to the very same weights (all-zero layers of
        # narrow words, or every uniform mask once rescaled) give the same outputs: one
        # validation pass serves them all, and top_k counts distinct weight sets
        keys = [hashlib.sha1(q.weight_values(np.float64).tobytes()).hexdigest() for q in quantized]
        if top_k is None:
            chosen_keys = set(keys)
        else:
            chosen_keys = {keys[0]}                   # the plain format is always evaluated
            for i in np.argsort(mse, kind="stable").tolist():
                if len(chosen_keys - {keys[0]}) >= int(top_k):
                    break
                chosen_keys.add(keys[i])
        first_of = {}
        for i, (pattern, q) in enumerate(zip(candidates, quantized)):
            record = {"layer": layer.name, "pattern": str(pattern),
                      "readable": _readable(pattern), "effective_bits": pattern.effective_bits,
                      "val_accuracy": None, "val_loss": None, "output_mse": mse[i]}
            if keys[i] in chosen_keys:
                if keys[i] in first_of:
                    j, acc, val_loss = first_of[keys[i]]
                    record["same_weights_as"] = str(candidates[j])
                else:
                    acc, val_loss = _run([q] + rest, h, y, batch_size, loss)
                    first_of[keys[i]] = (i, acc, val_loss)
                record.update(val_accuracy=acc, val_loss=val_loss)
                scored.append((acc, -val_loss, -i, str(pattern)))
            result.candidates.append(record)
        best = max(scored)
        choice, choice_acc, choice_loss = best[3], best[0], -best[1]
        if per_channel:
            errors = np.stack(channel_errors)                        # (patterns, O)
            picks = errors.argmin(axis=0)
            patterns = [str(candidates[i]) for i in picks]
            q = quantize_layer(base, patterns, rescale=rescale)
            acc, val_loss = _run([q] + rest, h, y, batch_size, loss)
            result.candidates.append({
                "layer": layer.name, "pattern": "per-channel (least output error)",
                "per_channel_patterns": patterns,
                "distinct": sorted(set(patterns)),
                "effective_bits": budget[layer.name], "val_accuracy": acc,
                "val_loss": val_loss, "output_mse": float(errors.min(axis=0).mean())})
            if (acc, -val_loss) > (choice_acc, -choice_loss):
                choice, choice_acc, choice_loss = patterns, acc, val_loss
        result.assignment[layer.name] = choice
        current[t] = quantize_layer(base, choice, rescale=rescale)
        shown = choice if isinstance(choice, str) else f"per-channel ({len(set(choice))} distinct)"
        log(f"{layer.name}: {len(candidates)} patterns ({len(first_of)} distinct evaluated, "
            f"{len(scored)} scored) at {budget[layer.name]} bits -> {shown}, "
            f"val accuracy {choice_acc:.4f}")
    final_acc, _ = _run(current[at:], h, y, batch_size, loss)
    result.val_accuracy = final_acc
    result.seconds = time.perf_counter() - t0
    return result


__all__ = ["SearchResult", "search_patterns", "BitMaskPattern"]
