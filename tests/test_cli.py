"""The `jaxfd` command: runs in-process and as a subprocess, and reports bad input in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from jaxfd.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--size", "16", "--steps", "20"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _env():
    """The environment of a subprocess that imports this checkout of jaxfd."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("JAXFD_DEBUG", None)
    return env


def _run_module(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "jaxfd", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120,
    )


def _check_outputs(out: Path, *, dtype: str) -> dict:
    png, summary_path = out / "heat.png", out / "heat.json"
    assert png.is_file() and png.read_bytes()[:8] == PNG_SIGNATURE
    summary = json.loads(summary_path.read_text())
    for key in ("problem", "size", "steps", "dt", "final_time", "max_error", "wall_time_s",
                "compile_time_share"):
        assert key in summary, f"{key} missing from the summary: {sorted(summary)}"
    assert summary["problem"] == "heat"
    assert summary["size"] == 16 and summary["steps"] == 20
    assert summary["dtype"] == dtype
    assert summary["final_time"] == pytest.approx(20 * summary["dt"])
    # forward Euler + second-order Laplacian on 16x16 cells: error O(h^2) ~ 2e-3
    assert 0 < summary["max_error"] < 1e-2
    assert 0 < summary["relative_error"] < 1e-2
    assert 0 <= summary["compile_time_share"] <= 1
    return summary


def test_list(capsys):
    assert main(["list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["coefficient", "initial_state", "stefan", "chromatography", "heat"]


def test_registry_descriptions_match_the_problems():
    from jaxfd._problems import PROBLEMS, load

    for name, (_, description) in PROBLEMS.items():
        assert load(name).DESCRIPTION == description, name


def test_run_heat_in_process(tmp_path, capsys):
    x64_before = jax.config.jax_enable_x64
    assert main(["run", "heat", *SMALL, "--out", str(tmp_path)]) == 0
    assert jax.config.jax_enable_x64 == x64_before  # the run does not leak its precision
    captured = capsys.readouterr()
    assert "max_error" in captured.out
    assert "step 20/20" in captured.err  # coarse progress
    _check_outputs(tmp_path, dtype="float32")


def test_run_heat_float64_matches_exact_solution_closely(tmp_path, capsys):
    assert main(["run", "heat", *SMALL, "--float64", "--quiet", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    summary = _check_outputs(tmp_path, dtype="float64")
    # the error is the discretisation error (O(h^2)), not round-off
    assert summary["max_error"] == pytest.approx(1.936e-3, rel=0.05)


def test_default_steps_reach_the_default_final_time(tmp_path, capsys):
    assert main(["run", "heat", "--size", "8", "--quiet", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "heat.json").read_text())
    assert summary["steps"] == 16  # 0.05 / dt with dt = 0.4 / (2 * 8**2)
    assert summary["final_time"] == pytest.approx(0.05)


def test_config_file_and_command_line_precedence(tmp_path, capsys):
    config = tmp_path / "heat.toml"
    config.write_text(f'size = 8\nsteps = 20\nquiet = true\nout = "{(tmp_path / "cfg").as_posix()}"\n')
    assert main(["run", "heat", "--config", str(config), "--size", "16"]) == 0
    assert capsys.readouterr().err == ""
    _check_outputs(tmp_path / "cfg", dtype="float32")  # size 16 from the command line wins


def test_seed_changes_the_initial_condition(tmp_path, capsys):
    for seed in (0, 1):
        args = ["run", "heat", *SMALL, "--quiet", "--seed", str(seed), "--out", str(tmp_path / str(seed))]
        assert main(args) == 0
    capsys.readouterr()
    errors = [json.loads((tmp_path / s / "heat.json").read_text())["max_error"] for s in "01"]
    assert errors[0] != errors[1]


def test_module_entry_point_subprocess(tmp_path):
    result = _run_module("run", "heat", *SMALL, "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "max_error" in result.stdout
    _check_outputs(tmp_path / "o", dtype="float32")


def test_console_script_is_installed(tmp_path):
    script = Path(sys.executable).with_name("jaxfd")
    if not script.exists():
        pytest.skip(f"no jaxfd console script next to {sys.executable} (package not pip-installed)")
    result = subprocess.run([str(script), "list"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("coefficient ")


def _bad_configs(tmp_path):
    malformed = tmp_path / "malformed.toml"
    malformed.write_text("size = [oops\n")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("sizes = 16\n")
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('size = "16"\n')
    return {"malformed": malformed, "unknown_key": unknown_key, "wrong_type": wrong_type}


BAD_INPUT = {
    "no command": ([], "required"),
    "unknown command": (["frobnicate"], "invalid choice"),
    "unknown problem": (["run", "nope"], "unknown problem 'nope'"),
    "unknown option": (["run", "heat", "--bogus"], "--bogus"),
    "negative size": (["run", "heat", "--size", "-3"], "--size"),
    "non-integer size": (["run", "heat", "--size", "big"], "--size"),
    "zero steps": (["run", "heat", "--steps", "0"], "--steps"),
    "option of another problem": (["run", "heat", "--iterations", "5"], "does not apply to problem 'heat'"),
    "steps for an inverse problem": (["run", "coefficient", "--steps", "5"], "--steps does not apply"),
    "noise out of range": (["run", "coefficient", "--noise", "1.5"], "--noise must be a number in [0, 1)"),
    "negative iterations": (["run", "coefficient", "--iterations", "-1"], "--iterations"),
    "resume without checkpoint": (["run", "coefficient", "--resume"], "no checkpoint"),
    "malformed toml": (["run", "heat", "--config", "{malformed}"], "malformed TOML"),
    "unknown toml key": (["run", "heat", "--config", "{unknown_key}"], "unknown key 'sizes'"),
    "wrong toml type": (["run", "heat", "--config", "{wrong_type}"], "size"),
    "missing config": (["run", "heat", "--config", "{missing}"], "not found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_nonzero(case, tmp_path, capsys):
    args, expected = BAD_INPUT[case]
    paths = {name: str(p) for name, p in _bad_configs(tmp_path).items()}
    paths["missing"] = str(tmp_path / "missing.toml")
    args = [a.format(**paths) for a in args]
    code = main([*args, "--out", str(tmp_path / "out")] if args[:1] == ["run"] else args)
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("jaxfd: error: ") and expected in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["run", "nope"], ["run", "heat", "--config", "{malformed}"],
                                  ["run", "heat", "--size", "-3"]])
def test_bad_input_subprocess_has_no_traceback(args, tmp_path):
    paths = {name: str(p) for name, p in _bad_configs(tmp_path).items()}
    result = _run_module(*[a.format(**paths) for a in args], cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""


INVERSE_SMALL = ["--size", "16", "--float64", "--quiet"]


def test_run_inverse_problem_writes_summary_and_plot(tmp_path, capsys):
    assert main(["run", "coefficient", *INVERSE_SMALL, "--iterations", "12", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "k_relative_l2_away_from_jumps" in out and "target met" in out
    png = tmp_path / "coefficient.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    summary = json.loads((tmp_path / "coefficient.json").read_text())
    assert summary["iterations"] == 12 and summary["stopped_because"] == "max_steps"
    assert summary["final_loss"] < 0.1 * summary["initial_loss"]
    assert set(summary["targets"]) <= set(summary["errors"])
    assert 0 < summary["compile_time_share"] < 1 and summary["resumed_from"] is None
    assert (tmp_path / "coefficient.checkpoint.npz").exists()


def test_killed_run_resumes_to_the_same_result(tmp_path):
    """A run terminated mid-fit resumes from its checkpoint and ends where an uninterrupted run ends."""
    import signal
    import time

    args = ["run", "coefficient", *INVERSE_SMALL, "--iterations", "150"]
    killed = tmp_path / "killed"
    checkpoint = killed / "coefficient.checkpoint.npz"
    process = subprocess.Popen([sys.executable, "-m", "jaxfd", *args, "--out", str(killed)], cwd=tmp_path,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 110
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert checkpoint.exists(), "the run ended before it wrote a checkpoint"
    assert not (killed / "coefficient.json").exists(), "the run finished before it was killed"

    resumed = _run_module(*args, "--resume", "--out", str(killed), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    assert main([*args, "--out", str(straight)]) == 0
    a = json.loads((killed / "coefficient.json").read_text())
    b = json.loads((straight / "coefficient.json").read_text())
    assert a["resumed_from"] >= 10 and b["resumed_from"] is None
    for key in ("iterations", "stopped_because", "final_loss", "gradient_norm", "errors"):
        assert a[key] == b[key], key
