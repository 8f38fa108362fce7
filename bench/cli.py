"""The `sixn` command line. Each subcommand lives in its own module, imported only when used;
a module provides `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "flops": ("sixn.bench.commands.flops", "parameters and FLOPs per token of a model, analytic or measured"),
    "validate": ("sixn.bench.commands.validate", "the 6N study: measured executed FLOPs over a grid of shapes"),
    "bench": ("sixn.bench.commands.bench", "benchmark this device: roofs, kernels, training step, MFU/HFU"),
    "kernels": ("sixn.bench.commands.kernels", "attention and MLP kernel TFLOP/s against PyTorch's (GPU)"),
    "scale": ("sixn.bench.commands.scale", "train a ladder of model sizes and fit scaling laws"),
    "fit": ("sixn.bench.commands.fit", "fit Kaplan/Chinchilla laws to a loss table (CSV)"),
    "report": ("sixn.bench.commands.report", "the main job: benchmark, 6N validation and scaling sweep in one report"),
}


from sixn.bench.errors import CLIError  # noqa: E402  (re-exported: commands raise bench.cli.CLIError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sixn",
        description="Measured FLOPs, GPU throughput and compute-calibrated scaling laws.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items()),
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="see below")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = argparse.ArgumentParser(prog=f"sixn {name}", description=module.__doc__ or help_,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except CLIError as e:
        print(f"sixn {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nsixn {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
