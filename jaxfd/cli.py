"""The `jaxfd` command: run named problems with embedded defaults.

```
jaxfd list                                  # the problems it knows
jaxfd run coefficient                       # an inverse problem with its defaults, no input files
jaxfd run coefficient --size 64 --iterations 300 --noise 0.02 --seed 3 --out results/
jaxfd run coefficient --resume --out results/   # continue an interrupted run from its checkpoint
jaxfd run heat --size 256 --steps 16384 --float64
jaxfd run stefan --config stefan.toml
```

`run` shows progress on stderr, prints a summary on stdout and writes
`<problem>.png` and `<problem>.json` to `--out` (default `./jaxfd-out`);
inverse problems also keep `<problem>.checkpoint.npz` there, written every
few iterations, which `--resume` continues from.

A `--config` file is TOML whose keys are the option names (`size`, `steps`,
`iterations`, `noise`, `seed`, `out`, `float64`, `quiet`, `resume`); options
given on the command line win over the file. Each problem takes its own
options (`jaxfd list` and the docs say which); an option that does not apply
to the problem is refused. Bad input (an unknown problem or option, a
negative size, malformed TOML) ends with one line on stderr and exit status
2; a failure while running (for example a fit whose loss became non-finite)
ends with one line and status 1. Set `JAXFD_DEBUG=1` to see the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

PROG = "jaxfd"
DEFAULT_OUT = "jaxfd-out"

# option name -> (type, check, description of what is accepted)
_OPTIONS: dict[str, tuple[type, Any, str]] = {
    "size": (int, lambda v: v >= 4, "an integer >= 4"),
    "steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "iterations": (int, lambda v: v >= 0, "an integer >= 0"),
    "noise": (float, lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "resume": (bool, lambda v: True, "true or false"),
    "seed": (int, lambda v: v >= 0, "an integer >= 0"),
    "out": (str, lambda v: len(v) > 0, "a non-empty path"),
    "float64": (bool, lambda v: True, "true or false"),
    "quiet": (bool, lambda v: True, "true or false"),
}
_FALLBACKS = {"seed": 0, "out": DEFAULT_OUT, "float64": False, "quiet": False}
_COMMON = tuple(_FALLBACKS)  # options every problem takes


class UsageError(Exception):
    """Bad input from the user: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message):  # noqa: D102 - argparse hook
        raise UsageError(message)


def _build_parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description="Run jaxfd's named problems with embedded defaults.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("list", help="list the problems that 'run' knows")
    run = commands.add_parser(
        "run",
        help="run a problem and write a plot and a JSON summary",
        description="Run a problem on its embedded default; writes <problem>.png and "
        "<problem>.json to --out.",
    )
    run.add_argument("problem", help="problem name (see 'jaxfd list')")
    run.add_argument("--size", type=_int_arg("--size"), default=None,
                     help="cells per axis (default: the problem's)")
    run.add_argument("--steps", type=_int_arg("--steps"), default=None,
                     help="time steps (default: the problem's; heat: enough to reach t = 0.05)")
    run.add_argument("--iterations", type=_int_arg("--iterations"), default=None,
                     help="inverse problems: most optimizer iterations (default: the problem's)")
    run.add_argument("--noise", type=_float_arg("--noise"), default=None,
                     help="inverse problems: relative noise of the synthetic data (default: the problem's)")
    run.add_argument("--resume", action="store_true", default=None,
                     help="inverse problems: continue from the checkpoint in --out")
    run.add_argument("--seed", type=_int_arg("--seed"), default=None,
                     help="seed of the synthetic data / random initial condition (default 0)")
    run.add_argument("--out", default=None, metavar="DIR",
                     help=f"output folder (default ./{DEFAULT_OUT})")
    run.add_argument("--float64", action="store_true", default=None,
                     help="compute in float64 (default float32)")
    run.add_argument("--quiet", action="store_true", default=None,
                     help="no progress output")
    run.add_argument("--config", default=None, metavar="FILE.toml",
                     help="TOML file whose keys are option names; the command line wins")
    return parser


def _int_arg(flag: str):
    def convert(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None

    return convert


def _float_arg(flag: str):
    def convert(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None

    return convert


def _load_config(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config path is a folder, expected a TOML file: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"malformed TOML in {path}: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config file {path}: {e}") from None
    config = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in _OPTIONS:
            raise UsageError(
                f"unknown key {key!r} in {path}; expected some of: {', '.join(_OPTIONS)}"
            )
        kind, _, accepted = _OPTIONS[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise UsageError(f"{key} in {path} must be {accepted}, got {value!r}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if kind is not int and not isinstance(value, kind):
            raise UsageError(f"{key} in {path} must be {accepted}, got {value!r}")
        config[name] = value
    return config


def _resolve(args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """Command line over config file over the problem's defaults over fallbacks."""
    config = _load_config(args.config) if args.config else {}
    takes = [*defaults, *_COMMON]
    options = {}
    for name, (_, check, accepted) in _OPTIONS.items():
        value = getattr(args, name)
        source = f"--{name}"
        if value is None and name in config:
            value, source = config[name], f"{name} in {args.config}"
        if name not in takes:
            if value is not None:
                raise UsageError(
                    f"{source} does not apply to problem {args.problem!r}; it takes "
                    f"{', '.join('--' + t for t in takes)}"
                )
            continue
        if value is None:
            value = defaults.get(name, _FALLBACKS.get(name))
        if value is None:  # the problem chooses (e.g. steps from the size)
            options[name] = None
            continue
        if not check(value):
            raise UsageError(f"{source} must be {accepted}, got {value!r}")
        options[name] = value
    return options


def _progress_printer(problem: str, quiet: bool):
    if quiet:
        return None
    stream = sys.stderr
    interactive = stream.isatty()
    last = [0]

    def progress(done: int, total: int) -> None:
        if done <= last[0]:
            return
        last[0] = done
        text = f"{problem}: step {done}/{total} ({100 * done // total}%)"
        if interactive:
            stream.write("\r" + text + ("\n" if done >= total else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    return progress


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def _cmd_list() -> int:
    from ._problems import PROBLEMS

    width = max(len(name) for name in PROBLEMS)
    for name, (_, description) in PROBLEMS.items():
        print(f"{name:<{width}}  {description}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._problems import PROBLEMS, load

    if args.problem not in PROBLEMS:
        raise UsageError(
            f"unknown problem {args.problem!r}; available: {', '.join(PROBLEMS)} "
            "(see 'jaxfd list')"
        )
    # The problem's defaults come from its module; importing it imports JAX.
    module = load(args.problem)
    options = _resolve(args, module.DEFAULTS)
    out = Path(options["out"])
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out must be a folder, but {out} is a file")
    quiet = options["quiet"]

    import jax
    import jax.numpy as jnp

    precision = "float64" if options["float64"] else "float32"
    kwargs = {name: options[name] for name in module.DEFAULTS}
    if "steps" in kwargs and kwargs["steps"] is None and hasattr(module, "default_steps"):
        kwargs["steps"] = module.default_steps(options["size"])
    if "resume" in module.DEFAULTS:  # inverse problems: progress bar and checkpoint of the fit
        checkpoint = out / f"{args.problem}.checkpoint.npz"
        if kwargs["resume"] and not checkpoint.exists():
            raise UsageError(f"--resume: no checkpoint {checkpoint} to resume from; run without --resume")
        out.mkdir(parents=True, exist_ok=True)
        kwargs.update(progress=not quiet, checkpoint=checkpoint)
    else:
        kwargs.update(progress=_progress_printer(args.problem, quiet))
    details = ", ".join(f"{k} {v}" for k, v in kwargs.items() if k not in ("resume", "progress", "checkpoint"))
    _say(quiet, f"{args.problem}: {details}, {precision} on {jax.default_backend()}; compiling...")
    with jax.enable_x64(options["float64"]):
        result = module.run(**kwargs, seed=options["seed"],
                            dtype=jnp.float64 if options["float64"] else jnp.float32)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{args.problem}.png"
    summary_path = out / f"{args.problem}.json"
    _say(quiet, f"{args.problem}: writing {png} and {summary_path}")
    module.plot(result, png)
    summary = dict(result.summary)
    summary["plot"] = str(png)
    with open(summary_path, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    _print_summary(summary, summary_path)
    return 0


def _print_summary(summary: dict[str, Any], path: Path) -> None:
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    keys = ["problem", "size", "steps", "noise", "dtype", "backend", "dt", "final_time", "max_error",
            "relative_error", "iterations", "stopped_because", "final_loss", "gradient_norm",
            "resumed_from", "wall_time_s", "compile_time_s", "compile_time_share"]
    rows = [(key, summary[key]) for key in keys if key in summary]
    rows += [(name, value) for name, value in summary.get("errors", {}).items()]
    rows += [(f"target met: {name}", value) for name, value in summary.get("targets_met", {}).items()]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {fmt(value)}")
    print(f"{'summary':<{width}}  {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jaxfd` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("JAXFD_DEBUG", "") not in ("", "0")
    start = time.perf_counter()
    try:
        args = _build_parser().parse_args(argv)
        if args.command == "list":
            return _cmd_list()
        return _cmd_run(args)
    except UsageError as e:
        _error(e)
        return 2
    except SystemExit as e:  # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command reports, it does not crash
        if debug:
            raise
        _error(f"{type(e).__name__}: {e} (set JAXFD_DEBUG=1 for the traceback)")
        return 1


def _error(message) -> None:
    line = " ".join(str(message).split())
    print(f"{PROG}: error: {line}", file=sys.stderr, flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
