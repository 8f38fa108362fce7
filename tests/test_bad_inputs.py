"""Bad input to every subcommand, run in-process through sixn.bench.cli.main: each case exits 2
with exactly one line on stderr, `sixn <command>: error: ...`, that names what was wrong (and
what is supported), with nothing on stdout and no traceback. Every case fails before any
training, counting or benchmark starts (the argument checks, the file checks and the memory check
all come first)."""

import json

import pytest

from conftest import HAS_CUDA
from sixn.bench import counters
from sixn.bench import roofs as roofs_mod
from sixn.bench import step as step_mod
from sixn.bench.cli import main
from sixn.scaling import sweep as sweep_mod
from sixn.scaling import train as train_mod

NO_GPU = pytest.mark.skipif(HAS_CUDA, reason="checks the message on a machine without a GPU")

# (argv, what the one error line must contain). Placeholders: {file} an existing regular file,
# {dir} an existing folder, {empty} an empty folder, {ro} a path under a folder nobody can write
# (/proc), {table...} prepared CSV tables, {corrupt_stages} a report folder with a damaged
# stages.json, {garbage} a file of random bytes.
CASES = [
    # --- flops ------------------------------------------------------------------------------
    (["flops", "--n-layer", "0"], "argument --n-layer: must be a positive integer (>= 1), got '0'"),
    (["flops", "--n-layer", "x"], "argument --n-layer: expected a positive integer, got 'x'"),
    (["flops", "--d-model", "-64"], "argument --d-model: must be a positive integer"),
    (["flops", "--n-head", "0"], "argument --n-head: must be a positive integer"),
    (["flops", "--n-ctx", "0"], "argument --n-ctx: must be a positive integer"),
    (["flops", "--n-vocab", "1.5"], "argument --n-vocab: expected a positive integer, got '1.5'"),
    (["flops", "--d-ff", "0"], "argument --d-ff: must be a positive integer"),
    (["flops", "--d-attn", "-1"], "argument --d-attn: must be a positive integer"),
    (["flops", "--seq-len", "0"], "argument --seq-len: must be a positive integer"),
    (["flops", "--preset", "tiny", "--seq-len", "65"], "--seq-len must be in [1, n_ctx=64]"),
    (["flops", "--preset", "gpt5"], "unknown preset 'gpt5'; known presets: "),
    (["flops", "--d-model", "100", "--n-head", "3"], "divisible by n_head"),
    (["flops", "--measure", "abacus"],
     "argument --measure: invalid choice: 'abacus' (choose from dispatch, interpreter, ncu)"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--batch", "0"],
     "argument --batch: must be a positive integer"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--dtype", "int4"],
     "unknown dtype 'int4'; supported: "),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--device", "tpu"],
     "argument --device: unknown device 'tpu'; supported: meta, cpu, cuda[:N]"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--device", "cuda:x"],
     "unknown device 'cuda:x'"),
    pytest.param(["flops", "--preset", "tiny", "--measure", "dispatch", "--device", "cuda"],
                 "device 'cuda': torch sees no CUDA GPU on this machine; use meta, cpu",
                 marks=NO_GPU),
    (["flops", "--preset", "tiny", "--measure", "interpreter", "--device", "meta"],
     "the interpreter counter runs on the CPU"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--backend", "sdpa"],
     "argument --backend: invalid choice: 'sdpa' (choose from torch, triton)"),
    (["flops", "--preset", "tiny", "--csv", "{dir}"], "argument --csv: {dir} is a folder; give a file name"),
    (["flops", "--preset", "tiny", "--csv", "{ro}/t.csv"], "argument --csv: {ro}/t.csv: cannot write there"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--out", "{file}"],
     "argument --out: {file} exists and is not a folder"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--out", "{ro}/x"],
     "is not writable"),
    (["flops", "--frobnicate"], "unrecognized arguments: --frobnicate; see sixn flops --help"),
    pytest.param(["flops", "--preset", "tiny", "--measure", "ncu"], "ncu", marks=NO_GPU),
    (["flops", "--hf-config", "{dir}/nothing.json"], "argument --hf-config: {dir}/nothing.json: no such file or folder"),
    (["flops", "--hf-config", "{garbage}"], "{garbage} is not UTF-8 text"),
    (["flops", "--n-layer", "10000", "--d-model", "100000", "--measure", "dispatch", "--device", "cpu"],
     "does not fit even at batch 1"),
    (["flops", "--batch", "-1"], "argument --batch: must be a positive integer"),
    (["flops", "--preset", "tiny", "--measure", "dispatch", "--batch", "100000000", "--device", "cpu"],
     "the largest batch that fits is"),
    # --- validate ---------------------------------------------------------------------------
    (["validate", "--counter", "abacus"], "argument --counter: invalid choice: 'abacus'"),
    (["validate", "--batch", "0"], "argument --batch: must be a positive integer"),
    (["validate", "--batch", "two"], "argument --batch: expected a positive integer, got 'two'"),
    (["validate", "--device", "tpu"], "unknown device 'tpu'; supported: meta, cpu, cuda[:N]"),
    pytest.param(["validate", "--device", "cuda"], "torch sees no CUDA GPU", marks=NO_GPU),
    (["validate", "--quick", "--dtype", "int4", "--out", "{empty}/v"], "unknown dtype 'int4'"),
    (["validate", "--quick", "--grid", "default"], "--quick and --grid are exclusive"),
    (["validate", "--out", "{file}"], "argument --out: {file} exists and is not a folder"),
    (["validate", "--out", "{ro}/v"], "argument --out: {ro}/v: cannot create the folder"),
    (["validate", "--grid", "huge"], "argument --grid: invalid choice: 'huge'"),
    pytest.param(["validate", "--counter", "ncu"], "ncu", marks=NO_GPU),
    (["validate", "--counter", "interpreter", "--device", "meta", "--quick"], "runs on the CPU"),
    (["validate", "--backend", "sdpa"], "argument --backend: invalid choice: 'sdpa'"),
    (["validate", "--time-budget", "-5"], "argument --time-budget: must be a finite number > 0"),
    (["validate", "--time-budget", "inf"], "argument --time-budget: must be a finite number > 0"),
    (["validate", "--record-fixtures", "{file}"], "argument --record-fixtures: {file} exists and is not a folder"),
    # --- bench ------------------------------------------------------------------------------
    (["bench", "--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from auto, cpu, cuda)"),
    pytest.param(["bench", "--device", "cuda"], "no CUDA GPU", marks=NO_GPU),
    (["bench", "--device", "cpu", "--preset", "nope"], "unknown preset 'nope'; known presets"),
    (["bench", "--device", "cpu", "--provider", "nope"], "unknown provider 'nope'; supported: "),
    (["bench", "--device", "cpu", "--provider", "triton"], "on the CPU use: "),
    (["bench", "--steps", "0"], "argument --steps: must be a positive integer"),
    (["bench", "--steps", "1.5"], "argument --steps: expected a positive integer, got '1.5'"),
    (["bench", "--warmup", "-1"], "argument --warmup: must be an integer >= 0, got '-1'"),
    (["bench", "--batch", "0"], "argument --batch: must be a positive integer"),
    (["bench", "--seq-len", "0"], "argument --seq-len: must be a positive integer"),
    (["bench", "--device", "cpu", "--preset", "tiny", "--seq-len", "65"],
     "seq_len 65 exceeds preset 'tiny'"),
    (["bench", "--ddp", "0"], "argument --ddp: must be a positive integer"),
    (["bench", "--csv", "{dir}"], "argument --csv: {dir} is a folder; give a file name"),
    (["bench", "--out", "{file}"], "argument --out: {file} exists and is not a folder"),
    (["bench", "--out", "{ro}/b"], "argument --out: {ro}/b: cannot create the folder"),
    (["bench", "--device", "cpu", "--preset", "tiny", "--batch", "100000000"],
     "the largest batch that fits is"),
    (["bench", "--time-budget", "0"], "argument --time-budget: must be a finite number > 0"),
    (["bench", "--time-budget", "soon"], "argument --time-budget: expected a positive number, got 'soon'"),
    # --- kernels ----------------------------------------------------------------------------
    (["kernels", "--seq-len", "0"], "argument --seq-len: must be a positive integer"),
    (["kernels", "--head-dim", "-1"], "argument --head-dim: must be a positive integer"),
    (["kernels", "--tokens", "0"], "argument --tokens: must be a positive integer"),
    (["kernels", "--hidden", "x"], "argument --hidden: expected a positive integer, got 'x'"),
    (["kernels", "--rep-ms", "0"], "argument --rep-ms: must be a finite number > 0"),
    (["kernels", "--rep-ms", "nan"], "argument --rep-ms: must be a finite number > 0"),
    (["kernels", "--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8' (choose from bf16, fp16)"),
    (["kernels", "--family", "conv"], "argument --family: invalid choice: 'conv'"),
    (["kernels", "--mode", "sideways"], "argument --mode: invalid choice: 'sideways'"),
    (["kernels", "--out", "{file}"], "argument --out: {file} exists and is not a folder"),
    (["kernels", "--provider", "nope"], "unknown provider 'nope'; supported: attention "),
    (["kernels", "--mlp-d-model", "0"], "argument --mlp-d-model: must be a positive integer"),
    pytest.param(["kernels", "--quick"], "sixn kernels needs a CUDA GPU", marks=NO_GPU),
    (["kernels", "--subset", "x"], "argument --subset: invalid choice: 'x' (choose from all, ci)"),
    (["kernels", "--aot", "sm_1"], "argument --aot: invalid choice: 'sm_1'"),
    (["kernels", "--aot", "sm_90", "--python", "{dir}/python"], "argument --python: {dir}/python: no such file"),
    (["kernels", "--time-budget", "-1"], "argument --time-budget: must be a finite number > 0"),
    # --- scale ------------------------------------------------------------------------------
    (["scale", "--steps", "0"], "argument --steps: must be a positive integer"),
    (["scale", "--steps", "-5"], "argument --steps: must be a positive integer (>= 1), got '-5'"),
    (["scale", "--sizes", "huge", "--out", "{empty}/s"], "unknown size 'huge': give a model.presets name"),
    (["scale", "--sizes", "2x63x4", "--out", "{empty}/s"], "d_model divisible by n_head"),
    (["scale", "--sizes", "0x64", "--out", "{empty}/s"], "n_layer and d_model must be positive"),
    (["scale", "--corpus", "{dir}/nothing"], "argument --corpus: {dir}/nothing: no such file or folder"),
    (["scale", "--corpus", "{dir}/nothing/*.txt"], "argument --corpus: {dir}/nothing/*.txt: the pattern matches no file"),
    (["scale", "--transfer-corpus", "{dir}/nothing"], "argument --transfer-corpus: {dir}/nothing: no such file or folder"),
    (["scale", "--status", "--out", "{empty}"], "{empty} holds no sweep (no sweep.json)"),
    (["scale", "--out", "{file}"], "argument --out: {file} exists and is not a folder"),
    (["scale", "--out", "{ro}/s"], "argument --out: {ro}/s: cannot create the folder"),
    (["scale", "--device", "tpu"], "argument --device: unknown device 'tpu'; supported: cpu, cuda[:N]"),
    pytest.param(["scale", "--device", "cuda"], "device 'cuda': torch sees no CUDA GPU on this machine; use cpu",
                 marks=NO_GPU),
    pytest.param(["scale", "--preset-set", "gpu", "--out", "{empty}/s"], "--preset-set gpu needs a CUDA device",
                 marks=NO_GPU),
    (["scale", "--max-bytes", "0"], "argument --max-bytes: must be a positive integer"),
    (["scale", "--bpe", "0"], "argument --bpe: must be a positive integer"),
    (["scale", "--threads", "0"], "argument --threads: must be a positive integer"),
    (["scale", "--workers", "0"], "argument --workers: must be a positive integer"),
    (["scale", "--gpus-per-run", "0"], "argument --gpus-per-run: must be a positive integer"),
    (["scale", "--launcher", "ray"], "argument --launcher: invalid choice: 'ray' (choose from local, slurm)"),
    (["scale", "--sizes", "2x16", "48x4096", "--out", "{empty}/s"], "does not fit even at batch 1"),
    (["scale", "--budgets", "1e12", "--out", "{empty}/s"], "need --isoflop"),
    (["scale", "--budgets", "0"], "argument --budgets: must be a finite number > 0"),
    (["scale", "--time-budget", "-1"], "argument --time-budget: must be a finite number > 0"),
    (["scale", "--extend", "-1"], "argument --extend: must be an integer >= 0"),
    (["scale", "--sizes-per-budget", "0"], "argument --sizes-per-budget: must be a positive integer"),
    (["scale", "--time", "0"], "argument --time: must be a positive integer"),
    (["scale", "--preset-set", "tpu"], "argument --preset-set: invalid choice: 'tpu' (choose from cpu, gpu)"),
    # --- fit --------------------------------------------------------------------------------
    (["fit", "{dir}/nope.csv"], "argument table: {dir}/nope.csv: no such file"),
    (["fit", "{dir}"], "argument table: {dir} is a folder; give a file"),
    (["fit", "/dev/null"], "argument table: /dev/null is not a regular file"),
    (["fit", "{table_ok}", "--seed", "-1"], "argument --seed: a seed must be an integer in [0, 4294967295], got '-1'"),
    (["fit", "{table_ok}", "--seed", "x"], "argument --seed: expected an integer seed"),
    (["fit", "{table_ok}", "--seed", str(2 ** 40)], "a seed must be an integer in [0, 4294967295]"),
    (["fit", "{table_ok}", "--bootstrap", "-1"], "argument --bootstrap: must be an integer >= 0, got '-1'"),
    (["fit", "{table_ok}", "--bootstrap", "lots"], "argument --bootstrap: expected an integer >= 0"),
    (["fit", "{table_ok}", "--conv", "7N"], "argument --conv: invalid choice: '7N' (choose from 6N)"),
    (["fit", "{table_ok}", "--c-units", "hours"], "argument --c-units: invalid choice: 'hours'"),
    (["fit", "{table_ok}", "--method", "magic"], "argument --method: invalid choice: 'magic'"),
    (["fit", "{table_no_loss}"], "missing column(s) loss (named loss / l / val_loss)"),
    (["fit", "{table_negative}"], "column 'N' (parameters) must hold positive numbers"),
    (["fit", "{table_text}"], "column 'loss' (loss) must hold positive numbers"),
    (["fit", "{table_empty}"], "the table has no rows"),
    (["fit", "{table_two}"], "too few points: L(N) needs at least 3 distinct N values"),
    (["fit", "{table_few_d}"], "too few points: the Chinchilla form needs at least 6 rows with D"),
    (["fit", "{garbage}"], "{garbage}"),
    (["fit", "{table_ok}", "--method", "isoflop"], "an IsoFLOP table needs a compute column C"),
    (["fit", "{table_ok}", "--plot", "{dir}"], "argument --plot: {dir} is a folder; give a file name"),
    # --- report -----------------------------------------------------------------------------
    (["report", "--device", "tpu"], "argument --device: invalid choice: 'tpu' (choose from auto, cpu, cuda)"),
    pytest.param(["report", "--device", "cuda", "--out", "{empty}/r"], "torch sees no CUDA GPU here",
                 marks=NO_GPU),
    (["report", "--out", "{file}"], "argument --out: {file} exists and is not a folder"),
    (["report", "--out", "{ro}/r"], "argument --out: {ro}/r: cannot create the folder"),
    (["report", "--stages", "nope"], "argument --stages: invalid choice: 'nope'"),
    (["report", "--budget", "0"], "argument --budget: must be a finite number > 0"),
    (["report", "--budget", "x"], "argument --budget: expected a positive number, got 'x'"),
    (["report", "--pack", "{dir}"], "argument --pack: {dir} is a folder; give a file name"),
    (["report", "--stages", "flops", "--out", "{corrupt_stages}"], "stages.json: the report's stage record is not valid JSON"),
    # --- sixn itself ------------------------------------------------------------------------
    (["frobnicate"], "unknown command 'frobnicate'; choose from flops, validate, bench"),
]


@pytest.fixture
def places(tmp_path):
    f = tmp_path / "a-file.txt"
    f.write_text("not a folder\n")
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty").mkdir()
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 64)
    tables = {
        "table_ok": "N,loss\n1e4,4.0\n1e5,3.5\n1e6,3.1\n1e7,2.8\n",
        "table_no_loss": "N,tokens\n1e4,1e6\n",
        "table_negative": "N,loss\n-1e4,4.0\n1e5,3.5\n1e6,3.1\n",
        "table_text": "N,loss\n1e4,four\n1e5,3.5\n1e6,3.1\n",
        "table_empty": "N,loss\n",
        "table_two": "N,loss\n1e4,4.0\n1e5,3.5\n",
        "table_few_d": "N,D,loss\n1e4,1e6,4.0\n1e5,1e6,3.5\n1e6,1e7,3.1\n",
    }
    out = {"file": str(f), "dir": str(tmp_path / "folder"), "empty": str(tmp_path / "empty"),
           "ro": "/proc/sixn-test", "garbage": str(garbage)}
    for k, text in tables.items():
        (tmp_path / f"{k}.csv").write_text(text)
        out[k] = str(tmp_path / f"{k}.csv")
    rep = tmp_path / "report"
    rep.mkdir()
    (rep / "stages.json").write_text('{"stages": {"flops": ')
    out["corrupt_stages"] = str(rep)
    return out


def _fill(s: str, places: dict) -> str:
    for k, v in places.items():
        s = s.replace("{" + k + "}", v)
    return s


def test_at_least_100_cases():
    assert len(CASES) >= 100
    assert {(c.values[0] if hasattr(c, "values") else c[0])[0] for c in CASES} >= {
        "flops", "validate", "bench", "kernels", "scale", "fit", "report"}


@pytest.mark.parametrize("argv, message", CASES)
def test_bad_input_is_one_line_and_exit_2(argv, message, places, capsys, monkeypatch):
    def no_work(*a, **k):   # nothing may train, count or time: the error must come first
        raise AssertionError("work started before the bad input was reported")
    # every module that binds these names is imported (above) before they are patched, so that
    # none keeps the stand-in after the test
    for module, name in ((train_mod, "train"), (sweep_mod, "train"), (step_mod, "_measure_one"),
                         (roofs_mod, "measure_gemm"), (counters, "count_dispatch"),
                         (counters, "count_interpreter")):
        monkeypatch.setattr(module, name, no_work)
    rc = main([_fill(a, places) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    prefix = "sixn: error: " if argv[0] not in ("flops", "validate", "bench", "kernels", "scale",
                                                 "fit", "report") else f"sixn {argv[0]}: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in err and "internal error" not in err
    # (argparse quotes the choices in some Python versions and not in others)
    assert _fill(message, places).replace("'", "") in lines[0].replace("'", ""), lines[0]


def test_an_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch):
    """Not a user error but a bug: still one line (no traceback), exit 1, and SIXN_DEBUG=1 shows
    the traceback."""
    import sixn.bench.commands.flops as F

    def boom(args):
        raise KeyError("a bug")
    monkeypatch.setattr(F, "run", boom)
    assert main(["flops"]) == 1
    err = capsys.readouterr().err
    assert err == ("sixn flops: error: internal error, a bug in sixn: KeyError: 'a bug' "
                   "(SIXN_DEBUG=1 shows the traceback)\n")
    monkeypatch.setenv("SIXN_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["flops"])


def test_os_errors_during_a_command_are_one_line(capsys, monkeypatch, tmp_path):
    """A folder that is fine when the command starts but cannot be written when it writes (a disk
    that fills up): the OSError names the file and what to do."""
    import errno
    import os
    from sixn.bench import results

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "t.csv"))
    monkeypatch.setattr(results, "atomic_write_text", full)
    rc = main(["flops", "--preset", "tiny", "--csv", str(tmp_path / "t.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"sixn flops: error: {tmp_path / 't.csv'}: No space left on device "
                               f"(the disk is full: free space or choose another folder)\n")


def test_help_is_exit_0_and_cases_parse_json_where_good(capsys, places):
    assert main(["fit", "--help"]) == 0
    capsys.readouterr()
    assert main(["fit", places["table_ok"], "--json", "--bootstrap", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"]["L_N"]["n"] == 4
