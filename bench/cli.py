"""The `sixn` command line. Each subcommand lives in its own module, imported only when used;
a module provides `add_arguments(parser)` and `run(args) -> int`.

This is the one place where errors become exit statuses: a bad argument (argparse and the
bench.argtypes validators), a CLIError raised by a command, an OSError (a folder that cannot be
written, a file that cannot be read) and running out of memory each print one line,
`sixn X: error: ...`, and exit 2; any other exception is a bug in sixn and prints one line that
says so and exits 1 (SIXN_DEBUG=1 shows its traceback). Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
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

EXIT_USAGE = 2      # bad input: arguments, files, folders, devices, memory
EXIT_FAILED = 1     # the command ran and failed (or a bug in sixn)
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `sixn X: error: ...; see sixn X --help`."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="sixn",
        description="Measured FLOPs, GPU throughput and compute-calibrated scaling laws.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<10} {h}" for k, (_, h) in COMMANDS.items()),
    )
    p.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help="see below")
    return p


def command_parser(name: str) -> tuple[object, argparse.ArgumentParser]:
    """(module, parser) of subcommand `name`."""
    module_name, help_ = COMMANDS[name]
    module = importlib.import_module(module_name)
    sub = Parser(prog=f"sixn {name}", description=module.__doc__ or help_,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sub)
    return module, sub


def describe_os_error(e: OSError) -> str:
    """One sentence for an OSError: the file(s), what went wrong, and what to do."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or str(e)
    hint = {
        errno.EACCES: "choose a folder you can write (e.g. with --out) or fix the permissions",
        errno.EPERM: "choose a folder you can write (e.g. with --out) or fix the permissions",
        errno.EROFS: "the file system is read-only: choose another folder (e.g. with --out)",
        errno.ENOSPC: "the disk is full: free space or choose another folder",
        errno.EDQUOT: "the disk quota is exceeded: free space or choose another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder where a file is expected",
        errno.ENOENT: "check the path",
    }.get(e.errno)
    return (f"{where}: {what}" if where else what) + (f" ({hint})" if hint else "")


def _out_of_memory(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return oom is not None and isinstance(e, oom)


def _say(name: str, message: str) -> None:
    first = " ".join(str(message).strip().splitlines()) or "(no message)"
    print(f"sixn {name}: error: {first}", file=sys.stderr, flush=True)


def execute(name: str, module, args: argparse.Namespace) -> int:
    """Run a parsed subcommand and map what it raises to an exit status (see the module doc)."""
    try:
        return int(module.run(args) or 0)
    except CLIError as e:
        _say(name, str(e))
        return EXIT_USAGE
    except OSError as e:
        _say(name, describe_os_error(e))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\nsixn {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  (the last line of defence: no traceback for users)
        if _out_of_memory(e):
            _say(name, f"out of memory: {e}; use a smaller --batch or model")
            return EXIT_USAGE
        if os.environ.get("SIXN_DEBUG"):
            raise
        _say(name, f"internal error, a bug in sixn: {type(e).__name__}: {e} "
                   f"(SIXN_DEBUG=1 shows the traceback)")
        return EXIT_FAILED


def invoke(name: str, argv: list[str]) -> int:
    """Parse `argv` for subcommand `name` and run it; the exit status, never an exception
    (argparse's SystemExit included: --help returns 0, a bad argument 2)."""
    module, sub = command_parser(name)
    try:
        args = sub.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return execute(name, module, args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else EXIT_USAGE
    name = argv[0]
    if name not in COMMANDS:
        print(f"sixn: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}",
              file=sys.stderr)
        return EXIT_USAGE
    return invoke(name, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
