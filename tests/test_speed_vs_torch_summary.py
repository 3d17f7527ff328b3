"""bench/speed_vs_torch.py's summary of interleaved pairs, on synthetic numbers: the
ratio of medians against the median of per-pair ratios, slow-mode flagging against the
run's best control, the steady-pair figures, and the per-workload repeat counts.

The module is loaded from its file (bench/ is not a package); its parent half imports
only the standard library, so nothing is run or timed here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "speed_vs_torch.py"
_SPEC = importlib.util.spec_from_file_location("speed_vs_torch_under_test", _PATH)
svt = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(svt)


def test_slow_mode_is_more_than_the_tolerance_below_the_best():
    assert not svt.is_slow(170.0, 200.0)            # 15 % below: the edge, not slow
    assert svt.is_slow(169.9, 200.0)
    assert not svt.is_slow(200.0, 200.0)
    assert svt.is_slow(150.0, 200.0, tolerance=0.2)
    assert not svt.is_slow(170.0, 200.0, tolerance=0.2)
    assert not svt.is_slow(None, 200.0) and not svt.is_slow(150.0, None)


def test_worker_control_is_the_lower_reading_and_best_the_highest():
    both = {"control_gflops": 180.0, "control_after_gflops": 140.0}
    assert svt.worker_control(both) == 140.0
    assert svt.worker_control({"control_gflops": 180.0}) == 180.0
    assert svt.worker_control({"seconds": 1.0}) is None
    runs = {"mlp": {"minidnn": [{"control_gflops": 170.0, "control_after_gflops": 150.0}],
                    "torch": [{"control_gflops": 160.0, "control_after_gflops": 190.0}]},
            "rbm": {"minidnn": [{"control_gflops": 185.0}], "sklearn": [{}]}}
    assert svt.best_control(runs) == 190.0
    assert svt.best_control({"mlp": {"minidnn": [{}], "torch": [{}]}}) is None


def test_median_pair_ratio_cancels_a_mode_that_covers_both_sides():
    # minidnn is 0.7x torch in every pair; pairs 3-4 ran in a slow mode that doubled
    # both sides. The pairs' median ratio reads 0.7, the medians' ratio cannot see it.
    ours = [0.56, 0.57, 1.12, 1.14, 0.58, 0.56]
    peer = [0.80, 0.81, 1.60, 1.63, 0.83, 0.80]
    control = [200.0, 198.0, 150.0, 152.0, 199.0, 201.0]
    s = svt.summarise_pairs(ours, peer, control, control, best=201.0)
    assert s["n_pairs"] == 6
    assert s["ratio_pairs_median"] == pytest.approx(0.7, abs=0.005)
    assert s["slow_pairs"] == [3, 4]
    assert s["n_steady_pairs"] == 4
    assert s["steady_ratio_pairs_median"] == pytest.approx(0.7, abs=0.005)
    assert s["ratio_summary"] == s["steady_ratio_pairs_median"]
    assert s["ratio_summary_basis"].startswith("steady")
    assert (s["ours_min"], s["ours_max"], s["peer_min"], s["peer_max"]) == (0.56, 1.14, 0.80, 1.63)


def test_one_side_caught_in_a_slow_mode_is_flagged_and_left_out_of_the_steady_figure():
    # sitting 24's quiet run: 2 pairs, minidnn's both in a slow mode (1.2 s for 0.57 s)
    ours = [1.19, 1.27, 0.57, 0.56, 0.58, 0.57]
    peer = [0.93, 1.12, 0.81, 0.80, 0.82, 0.81]
    ours_control = [140.0, 138.0, 195.0, 197.0, 196.0, 194.0]
    peer_control = [190.0, 185.0, 196.0, 195.0, 198.0, 197.0]
    s = svt.summarise_pairs(ours, peer, ours_control, peer_control, best=198.0)
    assert s["slow_pairs"] == [1, 2]
    assert s["pair_slow"] == [True, True, False, False, False, False]
    # all pairs still count in the all-pairs figures
    assert s["ratio_of_medians"] == pytest.approx(0.575 / 0.815)
    assert s["ratio_pairs_median"] == pytest.approx(
        sorted(o / p for o, p in zip(ours, peer))[2:4][0] / 2
        + sorted(o / p for o, p in zip(ours, peer))[2:4][1] / 2)
    assert s["ours_max"] == 1.27
    assert s["steady_ratio_pairs_median"] == pytest.approx(
        sorted(o / p for o, p in zip(ours[2:], peer[2:]))[1] / 2
        + sorted(o / p for o, p in zip(ours[2:], peer[2:]))[2] / 2)
    assert s["steady_ratio_of_medians"] == pytest.approx(0.57 / 0.81)
    assert s["ours_steady_median"] == pytest.approx(0.57)


def test_no_steady_pair_falls_back_to_all_pairs_and_says_so():
    s = svt.summarise_pairs([1.0, 2.0], [2.0, 2.0], [100.0, 100.0], [100.0, 100.0], best=200.0)
    assert s["n_steady_pairs"] == 0 and s["slow_pairs"] == [1, 2]
    assert s["ratio_summary"] == s["ratio_pairs_median"] == pytest.approx(0.75)
    assert s["ratio_summary_basis"].startswith("all pairs")
    assert "steady_ratio_pairs_median" not in s


def test_workers_without_a_control_count_as_steady():
    s = svt.summarise_pairs([1.0], [2.0], [None], [None], best=None)
    assert s["slow_pairs"] == [] and s["ratio_summary"] == 0.5


def test_summarise_pairs_refuses_unpaired_input():
    with pytest.raises(ValueError, match="one value and one control"):
        svt.summarise_pairs([1.0, 2.0], [1.0], [1.0, 1.0], [1.0], best=1.0)
    with pytest.raises(ValueError):
        svt.summarise_pairs([], [], [], [], best=1.0)


def _worker(seconds, control, after=None):
    return {"seconds": seconds, "control_gflops": control,
            "control_after_gflops": control if after is None else after}


def test_pairs_of_builds_one_line_per_interleaved_pair():
    runs = {"minidnn": [_worker(0.6, 200.0), _worker(1.2, 200.0, after=150.0)],
            "torch": [_worker(0.8, 199.0), _worker(0.8, 198.0)]}
    summaries, table = svt.pairs_of(runs, "torch", "train", best=200.0)
    assert list(summaries) == ["ratio"]
    assert [p["first"] for p in table] == ["minidnn", "torch"]     # the interleaving order
    assert [p["slow_mode"] for p in table] == [False, True]
    assert table[1]["ours_control_gflops"] == 150.0
    assert table[0]["ratio"] == pytest.approx(0.75)
    fields = svt.pair_fields("ratio", summaries["ratio"])
    assert fields["ratio_summary"] == pytest.approx(0.75)          # the steady pair alone
    assert fields["ratio_pairs_median"] == pytest.approx((0.75 + 1.5) / 2)
    line = svt.format_pair_line("mlp", "torch", "train", table[1], 200.0)
    assert "150*" in line and line.endswith("slow mode")
    assert "slow mode" not in svt.format_pair_line("mlp", "torch", "train", table[0], 200.0)


def test_pairs_of_inference_summarises_the_three_timed_figures():
    def worker(b1, p99, seconds, control):
        return {"batch1_median_ms": b1, "batch1_p99_ms": p99, "batch100_seconds": seconds,
                "batch100_images_per_s": 10000 / seconds, "control_gflops": control,
                "control_after_gflops": control}
    runs = {"minidnn": [worker(0.03, 0.07, 0.05, 200.0), worker(0.03, 0.08, 0.05, 200.0)],
            "torch": [worker(0.05, 0.10, 0.10, 200.0), worker(0.06, 0.10, 0.05, 120.0)]}
    summaries, table = svt.pairs_of(runs, "torch", "infer", best=200.0)
    assert set(summaries) == {"ratio_batch1_median", "ratio_batch1_p99", "ratio_batch100_time"}
    assert summaries["ratio_batch100_time"]["ratio_summary"] == pytest.approx(0.5)
    assert summaries["ratio_batch100_time"]["ratio_pairs_median"] == pytest.approx(0.75)
    assert table[0]["ratio_batch100_time"] == pytest.approx(0.5)
    assert "slow mode" in svt.format_pair_line("infer_mlp", "torch", "infer", table[1], 200.0)


def test_short_workloads_get_their_minimum_repeats():
    assert svt.repeats_for("mlp", 2) == 8
    assert svt.repeats_for("infer_mlp", 2) == svt.repeats_for("infer_lenet", 2) == 8
    assert svt.repeats_for("rbm", 2) == 4
    assert svt.repeats_for("lenet", 2) == 2
    assert svt.repeats_for("mlp", 10) == 10
    assert svt.repeats_for("cifar10_quick", 5) == 2
    assert svt.repeats_for("mlp", 2, exact=True) == 2
    assert svt.repeats_for("cifar10_quick", 5, exact=True) == 2


def test_control_prints_one_positive_rate(capsys):
    # what _control_gflops reads from its child: the last word of stdout, a GFLOP/s rate
    assert svt.main(["--control"]) == 0
    assert float(capsys.readouterr().out.split()[-1]) > 0
