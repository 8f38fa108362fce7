"""The --workers speed-up benchmark's arithmetic and its verdict on the losses (the sweeps
themselves are replaced by stand-ins; the real measurement is results/scaling/workers-*.json)."""

import json

from sixn.scaling import speedup


def _fake(monkeypatch, walls: dict[int, list[float]], losses: dict[int, dict[str, float]]):
    seq = {n: iter(v) for n, v in walls.items()}
    monkeypatch.setattr(speedup, "timed_sweep", lambda out, n, quick, extra: next(seq[n]))
    monkeypatch.setattr(speedup, "final_losses", lambda out: losses[int(out.name[1])])


def test_speedup_of_fastest_and_medians(monkeypatch, tmp_path):
    _fake(monkeypatch, {1: [40.0, 44.0, 50.0], 2: [30.0, 25.0, 20.0]},
          {1: {"a": 2.0, "b": 3.0}, 2: {"a": 2.0, "b": 3.0 + 5e-7}})
    out = tmp_path / "w.json"
    assert speedup.main(["--quick", "--repeat", "3", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["speedup"] == 40.0 / 20.0 and r["speedup_of_medians"] == 44.0 / 25.0
    assert r["speedup_per_pair"] == [40 / 30, 44 / 25, 50 / 20]
    assert r["same_final_losses"] and abs(r["max_final_loss_difference"] - 5e-7) < 1e-12
    assert r["provenance"]["command"].startswith("python -m sixn.scaling.speedup --quick")


def test_speedup_fails_when_the_losses_differ(monkeypatch, tmp_path):
    _fake(monkeypatch, {1: [40.0], 2: [20.0]}, {1: {"a": 2.0}, 2: {"a": 2.1}})
    assert speedup.main(["--out", str(tmp_path / "w.json")]) == 1
    assert not json.loads((tmp_path / "w.json").read_text())["same_final_losses"]
