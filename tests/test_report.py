"""`sixn report`: the plan under a budget (caps add up, priorities, skips with reasons), the pieces
that make a budget safe (a stopped stage keeps its output, the pack, the ncu fallback), the words
report.md chooses from its figures, and one `--quick` report end to end (slow): the folder is
complete and every figure in report.md is read from a CSV/JSON in it."""

import json
import re
import sys
import tarfile
import time

import pytest
import torch

from sixn.bench.cli import main
from sixn.bench.commands import report as rep
from sixn.bench.commands.report import format_value, lookup
from sixn.bench.report_md import Figures, section_stages, section_validate
from test_ncu import LIBRARY_NOT_LOADED, _fake_provenance, fake_ncu  # noqa: F401  (fixture)


# ------------------------------------------------------------------------------------------------
# The plan
# ------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _fresh_process(monkeypatch):
    """A report's budget counts from its process's start: here the process is the whole test
    session, so each test plans as a command started just now would."""
    monkeypatch.setattr(rep, "process_age_s", lambda: 0.0)


def _dry_run(capsys, *argv) -> dict:
    assert main(["report", "--dry-run", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_gpu_plan_for_480_s_fits_the_budget(capsys, tmp_path):
    """Planned on this CPU machine for a GPU: the caps, the time already spent and the reserve
    add up to at most the budget, every stage runs, in priority order, each in its own process."""
    plan = _dry_run(capsys, "--budget", "480", "--device", "cuda", "--out", str(tmp_path / "r"))
    stages = plan["stages"]
    assert [s["name"] for s in stages] == list(rep.STAGES)
    assert all(s["skip"] is None and s["cap_s"] > 0 for s in stages)
    assert plan["elapsed_s"] + plan["reserve_s"] + sum(s["cap_s"] for s in stages) <= 480 + 1e-6
    assert plan["total_s"] <= 480
    assert all(s["isolated"] for s in stages if s["name"] != "flops")
    # each command's own budget fits inside its stage's cap
    for s in stages:
        for c in s["commands"]:
            m = re.search(r"--time-budget (\d+)", c)
            assert m is None or int(m.group(1)) < s["cap_s"], c
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_cpu_plan_for_90_s(capsys, tmp_path):
    plan = _dry_run(capsys, "--budget", "90", "--device", "cpu", "--out", str(tmp_path / "r"))
    by = {s["name"]: s for s in plan["stages"]}
    assert by["check"]["skip"].startswith("runs on a GPU only") and by["kernels"]["skip"]
    assert plan["total_s"] <= 90
    assert "--time-budget" in by["scaling"]["commands"][0] and "--steps" in by["scaling"]["commands"][0]


def test_small_budget_keeps_the_priorities_and_says_what_it_skips(tmp_path):
    """120 s on a GPU: the first stages get at least their minimum, in order; those that no longer
    fit are skipped with the reason; the caps still add up to the budget."""
    plans = rep.plan_report("cuda", 120, list(rep.STAGES), tmp_path)
    ran = [p.name for p in plans if not p.skip]
    assert ran == ["flops", "check", "kernels"]
    for p in plans:
        if p.skip:
            assert "under this stage's minimum" in p.skip and not p.commands
        else:
            assert p.cap_s >= rep.GPU_SHARES[p.name].min_s
    assert sum(p.cap_s for p in plans) + rep.RESERVE_S["cuda"] <= 120
    bigger = rep.plan_report("cuda", 900, list(rep.STAGES), tmp_path)
    assert all(not p.skip for p in bigger)
    others = sum(p.cap_s for p in bigger if p.name != "scaling")
    assert next(p for p in bigger if p.name == "scaling").cap_s == pytest.approx(
        900 - rep.RESERVE_S["cuda"] - others)  # what is left goes to the last stage


def test_no_budget_is_the_full_job(tmp_path):
    plans = rep.plan_report("cpu", None, list(rep.STAGES), tmp_path)
    assert all(p.cap_s is None and not p.isolated for p in plans if not p.skip)
    scale = next(p for p in plans if p.name == "scaling").commands[0]
    assert "--quick" not in scale and "--time-budget" not in scale


# ------------------------------------------------------------------------------------------------
# What makes a budget safe
# ------------------------------------------------------------------------------------------------

def test_a_stage_stopped_at_its_cap_keeps_what_it_wrote(tmp_path):
    log = tmp_path / "stage.log"
    t0 = time.monotonic()
    rc, out = rep.run_with_cap([sys.executable, "-c", "import time, sys\n"
                                "print('row 1', flush=True)\nprint('progress', file=sys.stderr, flush=True)\n"
                                "time.sleep(60)\nprint('row 2')"], log, timeout=2)
    assert rc == rep.TIMED_OUT and time.monotonic() - t0 < 20
    assert out == "row 1\n"
    text = log.read_text()
    assert "progress" in text and "row 1" in text and "stopped at its cap" in text


def test_pack_holds_the_folder_without_checkpoints(tmp_path):
    folder = tmp_path / "report-x"
    (folder / "scaling" / "runs" / "a").mkdir(parents=True)
    (folder / "report.md").write_text("# r\n")
    (folder / "scaling" / "runs" / "a" / "log.csv").write_text("step,loss\n1,2\n")
    (folder / "scaling" / "runs" / "a" / "ckpt.pt").write_bytes(b"\0" * 1000)
    dest = tmp_path / "out" / "report.tgz"
    size = rep.pack(folder, dest)
    assert size == dest.stat().st_size and not dest.with_name("report.tgz.part").exists()
    with tarfile.open(dest) as tar:
        names = sorted(tar.getnames())
    assert "report-x/report.md" in names and "report-x/scaling/runs/a/log.csv" in names
    assert not any(n.endswith(".pt") for n in names)


def test_scale_starts_no_run_it_cannot_finish(tmp_path, capsys):
    rc = main(["scale", "--quick", "--sizes", "1x8", "2x8", "--steps", "3", "--time-budget", "0.001",
               "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    not_run = json.loads((tmp_path / "not_run.json").read_text())
    assert len(not_run["runs"]) == 2 and not_run["reason"] == "time budget spent"
    assert "2 runs not started" in capsys.readouterr().err


def test_validate_falls_back_to_dispatch_when_ncu_cannot_count(fake_ncu, tmp_path, monkeypatch):
    """ncu printing LibraryNotLoaded: the validate stage says so and counts with the dispatcher."""
    _fake_provenance(monkeypatch)
    fake_ncu("gemm", None, LIBRARY_NOT_LOADED)
    plan = rep.StagePlan("validate", None, False,
                         [["validate", "--counter", "ncu", "--quick", "--no-plots",
                           "--out", str(tmp_path / "validate")]])
    runner = rep.Runner(tmp_path, isolated=False, deadline=None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the dispatcher on the CPU
    import sixn.bench.counters.ncu as ncu_mod
    monkeypatch.setattr(ncu_mod, "check_environment", lambda: ncu_mod.ncu_path())
    info = rep._stage_validate(plan, runner)
    assert info["counter"] == "dispatch"
    assert len(runner.notes) == 1 and "fell back to the dispatch counter" in runner.notes[0]
    assert "LibraryNotLoaded" in runner.notes[0]
    v = json.loads((tmp_path / "validate" / "validate.json").read_text())
    assert v["counter"] == "dispatch" and v["rows"]


# ------------------------------------------------------------------------------------------------
# report.md's words come from its figures
# ------------------------------------------------------------------------------------------------

def _validate_json(folder, ratios, backend="torch"):
    rows = [{"shape": f"s{i}", "measured_over_6N": r, "d_model_over_n_ctx": 0.5, "measured": 100,
             "measured_over_6N_context": r, "measured_over_full_model": 1.0, "head_share": 0.25,
             "attention_share": 0.5, "backend": backend, "seq_len": 64 * (i + 1),
             "torch_attention_square_overhead": 0.98} for i, r in enumerate(ratios)]
    (folder / "validate").mkdir(parents=True, exist_ok=True)
    (folder / "validate" / "validate.json").write_text(json.dumps(
        {"counter": "dispatch", "backend": backend, "rows": rows, "measured_equals_analytic": True,
         "max_rel_error_vs_analytic": 0.0, "complete": True}))


@pytest.mark.parametrize("ratios, words", [
    ([1.5, 3.0], "6N undercounts the executed work of every shape"),
    ([0.8, 0.9], "6N overcounts the executed work of every shape"),
    ([0.8, 2.0], "undercounts the executed work of 1 shapes (up to 2.000 (s1)) and overcounts it for 1"),
])
def test_6N_sentence_follows_the_ratios(tmp_path, ratios, words):
    _validate_json(tmp_path, ratios)
    text = "\n".join(section_validate(tmp_path, Figures(tmp_path)))
    assert words in text
    assert "98.0% more attention work than the causal triangle" in text


def test_square_sentence_only_when_the_reference_ran(tmp_path):
    _validate_json(tmp_path, [1.5, 3.0], backend="triton")
    text = "\n".join(section_validate(tmp_path, Figures(tmp_path)))
    assert "causal triangle" not in text


def test_stale_and_shortened_stages_are_named(tmp_path):
    (tmp_path / "stages.json").write_text(json.dumps({"budget_s": 90, "plan": {"device": "cpu"}, "stages": {
        "bench": {"status": "done", "seconds": 3, "cap_s": 10, "date": "d", "git_commit": "abc",
                  "stale": "made at git abc, this report is at def (on d)"},
        "scaling": {"status": "shortened", "seconds": 40, "cap_s": 41, "date": "d", "git_commit": "def",
                    "notes": ["shortened: 3 ladder runs not started within the cap"]},
        "check": {"status": "skipped", "seconds": 0, "date": "d", "git_commit": "def",
                  "notes": ["skipped: runs on a GPU only (this report is for cpu)"]}}}))
    text = "\n".join(section_stages(tmp_path, Figures(tmp_path), rep.STAGES))
    assert "- bench: stale: made at git abc" in text
    assert "- scaling: shortened: 3 ladder runs not started within the cap" in text
    assert "- check: skipped: runs on a GPU only" in text
    assert "time budget of 90 s" in text


# ------------------------------------------------------------------------------------------------
# One quick report, end to end
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    import os
    os.environ["SIXN_RESULTS"] = str(out / "results")
    # the quick sizes, with a budget no stage reaches: the test checks the content, not the clock
    rc = main(["report", "--quick", "--budget", "3600", "--device", "cpu", "--out", str(out / "r"),
               "--pack", str(out / "r.tgz")])
    assert rc == 0
    return out / "r"


@pytest.mark.slow
def test_folder_is_complete(report_dir):
    for rel in ("report.md", "figures.json", "stages.json", "flops/gpt2-small.json",
                "bench/bench.json", "bench/bench.csv", "validate/validate.json", "validate/validate.csv",
                "validate-interpreter/validate.json", "scaling/curves.csv", "scaling/summary.csv",
                "scaling/fits.json", "logs/bench.log", "logs/validate.log", "logs/scaling.log"):
        assert (report_dir / rel).is_file(), rel
        assert (report_dir / rel).stat().st_size > 0, rel
    stages = json.loads((report_dir / "stages.json").read_text())
    assert {s: v["status"] for s, v in stages["stages"].items()} == {
        "flops": "done", "check": "skipped", "kernels": "skipped", "bench": "done",
        "validate": "done", "scaling": "done"}
    assert stages["provenance"]["git_commit"]
    md = (report_dir / "report.md").read_text()
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (report_dir / img).is_file(), img
    assert len(re.findall(r"!\[", md)) >= 6
    assert "- check: skipped: runs on a GPU only" in md
    with tarfile.open(report_dir.parent / "r.tgz") as tar:
        assert "r/report.md" in tar.getnames()


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_interpreter_count_is_exact_and_6N_is_off(report_dir):
    v = json.loads((report_dir / "validate-interpreter/validate.json").read_text())
    assert v["measured_equals_analytic"] is True
    assert all(r["measured"] == r["analytic_executed"] for r in v["rows"])
    d = json.loads((report_dir / "validate/validate.json").read_text())
    assert all(r["measured_over_6N"] > 1 for r in d["rows"])
    assert "6N undercounts the executed work of every shape" in (report_dir / "report.md").read_text()


@pytest.mark.slow
def test_rerun_resumes(report_dir, capsys):
    rc = main(["report", "--quick", "--budget", "3600", "--device", "cpu", "--out", str(report_dir)])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("done earlier, skipped") == 4
    assert err.count("runs on a GPU only") == 2
