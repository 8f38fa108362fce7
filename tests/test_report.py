"""`sixn report --quick` end to end: the folder is complete and every figure in report.md is read
from a CSV/JSON in it."""

import json
import re

import pytest

from sixn.bench.cli import main
from sixn.bench.commands.report import format_value, lookup

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    import os
    os.environ["SIXN_RESULTS"] = str(out / "results")
    rc = main(["report", "--quick", "--device", "cpu", "--out", str(out / "r")])
    assert rc == 0
    return out / "r"


def test_folder_is_complete(report_dir):
    for rel in ("report.md", "figures.json", "stages.json", "flops/gpt2-small.json",
                "bench/bench.json", "bench/bench.csv", "validate/validate.json", "validate/validate.csv",
                "validate-interpreter/validate.json", "scaling/curves.csv", "scaling/summary.csv",
                "scaling/fits.json", "logs/bench.log", "logs/validate.log", "logs/scaling.log"):
        assert (report_dir / rel).is_file(), rel
        assert (report_dir / rel).stat().st_size > 0, rel
    stages = json.loads((report_dir / "stages.json").read_text())
    assert {s: v["status"] for s, v in stages["stages"].items()} == {
        "flops": "done", "bench": "done", "validate": "done", "scaling": "done"}
    assert stages["provenance"]["git_commit"]
    md = (report_dir / "report.md").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report_dir / img).is_file(), img
    assert len(re.findall(r"!\[", md)) >= 6


def test_every_figure_comes_from_a_file(report_dir):
    md = (report_dir / "report.md").read_text()
    figs = json.loads((report_dir / "figures.json").read_text())["figures"]
    assert len(figs) > 50
    for f in figs:
        assert format_value(lookup(report_dir, f), f["fmt"]) == f["text"], f
        assert f["text"] in md, f
    # every number in a table cell is one of the recorded figures
    texts = sorted({f["text"] for f in figs}, key=len, reverse=True)
    lines = md.splitlines()
    for i, line in enumerate(lines):
        header = i + 1 < len(lines) and set(lines[i + 1]) <= set("|-")
        if not line.startswith("|") or set(line) <= set("|-") or header:
            continue
        for cell in line.strip("|").split("|"):
            rest = cell
            for t in texts:
                rest = rest.replace(t, "")
            assert not re.search(r"\d", rest), f"unrecorded figure in {cell!r}"


def test_the_interpreter_count_is_exact_and_6N_is_off(report_dir):
    v = json.loads((report_dir / "validate-interpreter/validate.json").read_text())
    assert v["measured_equals_analytic"] is True
    assert all(r["measured"] == r["analytic_executed"] for r in v["rows"])
    d = json.loads((report_dir / "validate/validate.json").read_text())
    assert all(r["measured_over_6N"] > 1 for r in d["rows"])


def test_rerun_resumes(report_dir, capsys):
    rc = main(["report", "--quick", "--device", "cpu", "--out", str(report_dir)])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("done earlier, skipped") == 4
