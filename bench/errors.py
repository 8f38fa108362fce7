"""Errors shared by the sixn commands (kept apart from bench.cli so that `python -m bench.cli` and the
`sixn` script raise and catch one and the same class)."""


class CLIError(Exception):
    """A user error: printed as `sixn <command>: error: ...` with exit status 2."""
