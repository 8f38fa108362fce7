"""The one table reader/writer (sixn.bench.results): appends append, writes are atomic, types survive."""

import os

import pytest

from sixn.bench import results as R

PROV = {**{k: "x" for k in R.PROVENANCE_FIELDS}, "git_commit": "0123"}


def test_append_appends_without_rewriting(tmp_path):
    path = tmp_path / "t.csv"
    R.append_csv(path, [{"a": 1, "b": None, "c": 1.5}], PROV)
    first = path.read_bytes()
    inode = os.stat(path).st_ino
    R.append_csv(path, [{"a": 2, "b": "s", "c": 2.25}, {"a": 3}], PROV)
    # the same file (no rename), its old bytes untouched, two lines more
    assert os.stat(path).st_ino == inode
    after = path.read_bytes()
    assert after.startswith(first) and after.count(b"\n") == first.count(b"\n") + 2
    header, rows = R.read_csv_rows(path)
    assert header == ["a", "b", "c", *R.PROVENANCE_FIELDS]
    assert [r["a"] for r in rows] == [1, 2, 3] and [r["c"] for r in rows] == [1.5, 2.25, None]
    assert [r["b"] for r in rows] == [None, "s", None]
    assert all(r["git_commit"] == "0123" for r in rows)  # provenance stays text, leading zero kept


def test_append_with_new_columns_grows_the_header(tmp_path):
    path = tmp_path / "t.csv"
    R.append_csv(path, [{"a": 1}], PROV)
    R.append_csv(path, [{"a": 2, "z": True}], PROV)
    header, rows = R.read_csv_rows(path)
    assert header == ["a", *R.PROVENANCE_FIELDS, "z"]
    assert [(r["a"], r["z"]) for r in rows] == [(1, None), (2, True)]


def test_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    path = tmp_path / "t.csv"
    R.append_csv(path, [{"a": 1}], PROV)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    R.append_csv(path, [{"a": 2}], PROV)
    assert [r["a"] for r in R.read_rows(path)] == [1, 2]


def test_write_csv_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "t.csv"
    R.write_csv(path, [{"a": 1}], PROV)
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        R.write_csv(path, [{"a": 2}], PROV)
    # the old file is intact and no temporary file is left beside it
    assert path.read_text() == before and os.listdir(tmp_path) == ["t.csv"]
    monkeypatch.undo()
    R.write_csv(path, [{"q": "w"}], PROV)
    assert R.read_csv_rows(path)[0] == ["q", *R.PROVENANCE_FIELDS]


def test_read_text_and_missing(tmp_path):
    assert R.read_rows(tmp_path / "none.csv") == [] and R.read_csv_rows(tmp_path / "none.csv") == ([], [])
    (tmp_path / "blank.csv").write_text("\n")
    assert R.read_rows(tmp_path / "blank.csv") == []
    path = R.write_csv_rows(tmp_path / "t.csv", ["n", "x"], [{"n": 7, "x": 0.1, "ignored": 1}, {"n": None}])
    assert path.read_text() == "n,x\n7,0.1\n,\n"
    assert R.read_rows(path, text=True) == [{"n": "7", "x": "0.1"}, {"n": "", "x": ""}]
    assert R.read_rows(path) == [{"n": 7, "x": 0.1}, {"n": None, "x": None}]
