"""The minidnn command line: train → eval → info, resume, help, errors."""
import subprocess
import sys

import pytest

from minidnn.cli import build_parser, main


def run(*argv):
    return main([str(a) for a in argv])


def test_train_eval_info_on_embedded_data(tmp_path, capsys):
    out = tmp_path / "mlp.h5"
    assert run("train", "--quiet", "--epochs", 1, "--arch", "mlp:784-64-10:relu",
               "--out", out) == 0
    table = capsys.readouterr().out
    assert "test accuracy" in table and "val acc" in table
    assert out.exists() and (tmp_path / "mlp.ckpt.h5").exists()

    assert run("eval", out, "--quiet") == 0
    assert "accuracy" in capsys.readouterr().out

    assert run("info", out) == 0
    info = capsys.readouterr().out
    assert "dense_1" in info and "total parameters: 50,890" in info


def test_train_resume_continues_from_checkpoint(tmp_path, capsys):
    out = tmp_path / "m.h5"
    args = ["train", "--quiet", "--arch", "mlp:784-32-10", "--out", out]
    assert run(*args, "--epochs", 1) == 0
    capsys.readouterr()
    assert run(*args, "--epochs", 2, "--resume") == 0
    table = capsys.readouterr().out
    assert "resumed" not in table  # --quiet keeps the log silent ...
    rows = [line for line in table.splitlines() if line.strip()[:1].isdigit()]
    assert [r.split()[0] for r in rows] == ["1", "2"]  # ... but history spans both runs


def test_bad_model_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_text("not a model")
    assert run("info", bad) == 1
    assert "not a readable HDF5 file" in capsys.readouterr().err


def test_unknown_architecture_is_a_clear_error(tmp_path, capsys):
    assert run("train", "--quiet", "--arch", "resnet", "--out", tmp_path / "m.h5") == 1
    assert "unknown architecture 'resnet'" in capsys.readouterr().err


def _all_parsers(parser):
    import argparse
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_option_of_every_command_has_help():
    import argparse
    for parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["info"], ["data", "fetch"]])
def test_help_exits_cleanly(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(command + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: minidnn" in capsys.readouterr().out


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "minidnn.cli", "--help"],
                            capture_output=True, text=True, check=True)
    for command in ("train", "eval", "info", "data"):
        assert command in result.stdout


def test_pretrain_then_fine_tune_from_the_pretrained_file(tmp_path, capsys):
    dbn = tmp_path / "dbn.h5"
    assert run("pretrain", "rbm", "--layers", "784-32", "--epochs", 1, "--limit", 2000,
               "-o", dbn) == 0
    assert run("info", dbn) == 0
    assert "DBN(784-32): complete" in capsys.readouterr().out
    out = tmp_path / "ft.h5"
    assert run("train", "--quiet", "--init-from", dbn, "--epochs", 1, "--out", out) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert run("info", out) == 0
    assert "Flatten" in capsys.readouterr().out


def test_pretrain_monitor_size_zero_turns_the_monitors_off_and_negative_is_refused(capsys):
    parse = build_parser().parse_args
    args = parse(["pretrain", "rbm", "--layers", "784-32", "--monitor-size", "0", "-o", "x.h5"])
    assert args.monitor_size == 0
    with pytest.raises(SystemExit):
        parse(["pretrain", "rbm", "--layers", "784-32", "--monitor-size", "-1", "-o", "x.h5"])
    assert "expected an integer >= 0" in capsys.readouterr().err
