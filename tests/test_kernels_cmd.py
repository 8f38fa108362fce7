"""`sixn kernels` fails soft: one failing case among several (Triton's own errors included) is its
error rows and the others are measured, rows reach on_rows as each case ends, a time budget skips
what it cannot start; --check compares the kernels with float64 PyTorch (here in the interpreter)."""


import pytest
import torch

from sixn.bench.commands import kernels as kc


def _triton_error(kind: str) -> Exception:
    from triton.compiler.errors import CompilationError
    from triton.runtime.errors import OutOfResources, PTXASError
    return {"compilation": CompilationError("def k(): pass", None, "incompatible tl.dot shapes"),
            "resources": OutOfResources(262144, 232448, "shared memory"),
            "ptxas": PTXASError("`ptxas` failed with error code 255")}[kind]


@pytest.mark.parametrize("kind, name", [("compilation", "CompilationError"),
                                        ("resources", "OutOfResources"), ("ptxas", "PTXASError")])
def test_a_triton_error_in_one_case_keeps_the_others(kind, name):
    seen = []

    def measure(item):
        if item == "b":
            raise _triton_error(kind)
        return [{"case": item, "error": None}]

    rows, skipped = kc.run_cases(["a", "b", "c"], measure, seen.append,
                                 lambda item, msg: [{"case": item, "error": msg}])
    assert [r["case"] for r in rows] == ["a", "b", "c"] and skipped == []
    assert seen == [[rows[0]], [rows[1]], [rows[2]]]  # written case by case, as they end
    assert rows[1]["error"].startswith(f"case failed: {name}") and rows[0]["error"] is None


def test_time_budget_skips_what_it_cannot_start():
    import time
    rows, skipped = kc.run_cases([1, 2, 3], lambda i: [{"i": i}], lambda r: None,
                                 lambda i, m: [], label=lambda i: f"case {i}",
                                 deadline=time.monotonic() - 1)
    assert rows == [] and skipped == ["case 1", "case 2", "case 3"]


_PROVIDER_ERROR_SCRIPT = """
import json, torch
from sixn.bench.commands import kernels as kc
from sixn.kernels import mlp
from triton.runtime.errors import OutOfResources

class Raises:
    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            raise OutOfResources(262144, 232448, "shared memory")
        return launch

mlp._linear_gelu_fwd = Raises()
rows = kc.measure_mlp(8, 16, 16, ("triton", "torch"), "cpu", torch.float32, ("fwd",), rep_ms=1)
print(json.dumps({r["provider"]: {"error": r["error"], "ms": r["ms"]} for r in rows}))
"""


def test_triton_error_inside_a_provider_is_that_providers_row():
    """The Triton kernel launch raising OutOfResources (constructed): the triton rows carry it,
    the torch rows of the same case are still measured. In a fresh interpreter, so that no kernel
    launched by an earlier test in this process stands in for the failing one."""
    import json
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", _PROVIDER_ERROR_SCRIPT], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    by = json.loads(p.stdout.strip().splitlines()[-1])
    assert by["triton"]["error"].startswith("OutOfResources") and by["triton"]["ms"] is None
    assert by["torch"]["error"] is None and by["torch"]["ms"] > 0


def test_check_against_float64(one_thread):
    a = kc.check_attention(kc.AttnCase(1, 2, 20, 24, True), "cpu", torch.float32)
    m = kc.check_mlp(10, 24, 20, "cpu", torch.float32)
    for row in (a, m):
        assert row["ok"], row
        assert 0 < row["max_rel_err"] <= row["tolerance"]


def test_check_catches_a_wrong_kernel(monkeypatch, one_thread):
    import sixn.kernels
    monkeypatch.setattr(sixn.kernels, "linear_gelu",
                        lambda x, w, b: torch.nn.functional.linear(x, w, b))  # the GELU left out
    row = kc.check_mlp(10, 24, 20, "cpu", torch.float32)
    assert not row["ok"] and "max rel err" in row["error"] and row["max_rel_err"] > 0.1
