"""Errors shared by the sixn commands (kept apart from bench.cli so that `python -m bench.cli` and the
`sixn` script raise and catch one and the same class)."""

from __future__ import annotations

from pathlib import Path


class CLIError(Exception):
    """A user error: printed as `sixn <command>: error: ...` with exit status 2."""


class CorruptFile(CLIError):
    """A file sixn wrote and reads back is not what it wrote (cut short, edited, from another
    version): the message names the file, what is wrong with it and what to do."""

    def __init__(self, path: str | Path, problem: str, remedy: str):
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(f"{path}: {problem}; {remedy}")
