"""Corpora: text folders, globs, nanoGPT .bin, the standard-library default, split, fingerprint, BPE."""

import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch

from sixn.scaling import data


def _write_tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"alpha line one\nalpha line two\nalpha line three\n" * 20,
        "b.txt": b"bravo " * 300 + b"\nend of bravo\n",
        "sub/c.py": b"def f(x):\n    return x + 1\n" * 40,
        "sub/d.md": "# \xfcber\nsome prose with unicode \u2713\n".encode() * 30,
    }
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content)
    return files


def test_text_dir_bytes_and_split(tmp_path):
    files = _write_tree(tmp_path / "corpus")
    c = data.load_corpus(tmp_path / "corpus")
    assert c.vocab_size == 256 and c.train.dtype == np.uint16
    assert len(c.files) == 4
    assert len(c.train) + len(c.val) == sum(len(b) for b in files.values())
    # every file's tail is validation text, cut at a line break, in sorted file order
    order = sorted(files)
    train_expected = b"".join(data.split_text(files[k], 0.1)[0] for k in order)
    val_expected = b"".join(data.split_text(files[k], 0.1)[1] for k in order)
    assert bytes(c.train.astype(np.uint8)) == train_expected
    assert bytes(c.val.astype(np.uint8)) == val_expected
    for k in order:
        tr, va = data.split_text(files[k], 0.1)
        assert tr + va == files[k] and 0.05 < len(va) / len(files[k]) < 0.2
        assert tr.endswith(b"\n") or b"\n" not in tr  # cut at a line break when there is one


def test_glob_and_explicit_files(tmp_path):
    _write_tree(tmp_path / "corpus")
    g = data.load_corpus(str(tmp_path / "corpus" / "**" / "*.txt"))
    assert sorted(Path(f).name for f in g.files) == ["a.txt", "b.txt"]
    e = data.load_corpus([tmp_path / "corpus" / "a.txt", tmp_path / "corpus" / "b.txt"])
    assert e.fingerprint == g.fingerprint
    np.testing.assert_array_equal(e.train, g.train)


def test_split_deterministic_and_fingerprint(tmp_path):
    _write_tree(tmp_path / "corpus")
    a = data.load_corpus(tmp_path / "corpus")
    b = data.load_corpus(tmp_path / "corpus")
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    # the same files elsewhere: same fingerprint (paths are relative to their common folder)
    shutil.copytree(tmp_path / "corpus", tmp_path / "elsewhere" / "copy")
    assert data.load_corpus(tmp_path / "elsewhere" / "copy").fingerprint == a.fingerprint
    # one changed byte, a renamed file or another split: another fingerprint
    p = tmp_path / "corpus" / "b.txt"
    p.write_bytes(p.read_bytes().replace(b"bravo", b"Bravo", 1))
    assert data.load_corpus(tmp_path / "corpus").fingerprint != a.fingerprint
    assert data.load_corpus(tmp_path / "elsewhere" / "copy", val_fraction=0.2).fingerprint != a.fingerprint
    (tmp_path / "elsewhere" / "copy" / "a.txt").rename(tmp_path / "elsewhere" / "copy" / "z.txt")
    assert data.load_corpus(tmp_path / "elsewhere" / "copy").fingerprint != a.fingerprint


def test_fingerprint_of_bytes_already_read_is_that_of_the_files(tmp_path, monkeypatch):
    """load_text_files fingerprints the bytes it has read; a sweep's worker that fingerprints
    the files themselves must find the same, whole files and sampled big ones alike."""
    files = [tmp_path / n for n in ("b.txt", "a.txt", "sub/c.txt")]
    files[2].parent.mkdir()
    for i, f in enumerate(files):
        f.write_bytes(bytes(range(256)) * (40 + 30 * i))
    contents = [f.read_bytes() for f in files]
    for big in (1 << 30, 5000):   # whole files, then every file sampled (16 slices)
        monkeypatch.setattr(data, "_BIG_FILE", big)
        monkeypatch.setattr(data, "_SAMPLE", 1000)
        fp = data.fingerprint_files(files, extra="x")
        assert data.fingerprint_files(files, extra="x", contents=contents) == fp
        assert data.fingerprint_files(files[::-1], extra="x", contents=contents[::-1]) == fp
    changed = contents[:2] + [contents[2][:-1] + b"!"]
    assert data.fingerprint_files(files, extra="x", contents=changed) != fp


def test_bin_file_and_dir(tmp_path):
    ids = (np.arange(5000) * 7919 % 50257).astype(np.uint16)
    f = tmp_path / "tokens.bin"
    ids.tofile(f)
    c = data.load_corpus(f)
    assert c.vocab_size == int(ids.max()) + 1
    np.testing.assert_array_equal(c.train, ids[:4500])
    np.testing.assert_array_equal(c.val, ids[4500:])
    d = tmp_path / "owt"
    d.mkdir()
    ids[:4000].tofile(d / "train.bin")
    ids[4000:].tofile(d / "val.bin")
    c2 = data.load_corpus(d, bin_vocab=50257)
    assert c2.vocab_size == 50257 and len(c2.train) == 4000 and len(c2.val) == 1000
    with pytest.raises(ValueError, match="smaller than the largest token"):
        data.load_corpus(d, bin_vocab=100)
    t = data.transfer_corpus(c2, d)  # a tokenized transfer corpus: its validation tokens
    np.testing.assert_array_equal(t.val, ids[4000:])
    with pytest.raises(ValueError, match="tokenizer"):
        data.transfer_corpus(c2, [tmp_path / "owt" / "nothing.txt"])
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValueError, match="odd number of bytes"):
        data.load_corpus(tmp_path / "odd.bin")


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load_corpus(tmp_path / "missing")
    with pytest.raises(ValueError, match="matches no files"):
        data.load_corpus(str(tmp_path / "*.nothing"))
    with pytest.raises(ValueError, match="val_fraction"):
        _write_tree(tmp_path / "c")
        data.load_corpus(tmp_path / "c", val_fraction=1.5)
    with pytest.raises(ValueError, match="unknown tokenizer"):
        data.load_corpus(tmp_path / "c", tokenizer="words")


def test_stdlib_default():
    c = data.default_corpus(max_bytes=300_000)
    root = Path(sysconfig.get_paths()["stdlib"])
    assert c.files and all(f.endswith(".py") and Path(f).is_relative_to(root) for f in c.files)
    assert not any("site-packages" in f or f.endswith("topics.py") for f in c.files)
    assert c.files == tuple(sorted(c.files))
    assert 10_000 < len(c.train) + len(c.val) <= 300_000
    again = data.default_corpus(max_bytes=300_000)
    assert again.fingerprint == c.fingerprint
    np.testing.assert_array_equal(again.val, c.val)
    assert "standard library" in c.description


def test_transfer_corpus_default():
    c = data.default_corpus(max_bytes=100_000)
    t = data.transfer_corpus(c)
    text = bytes(t.train[:5000].astype(np.uint8)).decode("utf-8", errors="replace")
    assert len(t.train) > 100_000
    assert t.fingerprint != c.fingerprint
    # prose, not Python source: mostly letters and spaces, few "def " lines
    assert text.count(" ") / len(text) > 0.1 and text.count("def ") < text.count(" the ")


def test_get_batch_shift_and_seed(tmp_path):
    _write_tree(tmp_path / "corpus")
    c = data.load_corpus(tmp_path / "corpus")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x, y = c.get_batch("train", 4, 16, g1)
    x2, y2 = c.get_batch("train", 4, 16, g2)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x, x2) and torch.equal(x[:, 1:], y[:, :-1])
    with pytest.raises(ValueError, match="unknown split"):
        c.get_batch("test", 4, 16, g1)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        c.get_batch("val", 1, len(c.val), g1)


def test_bpe(tmp_path):
    pytest.importorskip("tokenizers")
    _write_tree(tmp_path / "corpus")
    c = data.load_corpus(tmp_path / "corpus", tokenizer=300)
    assert 256 < c.vocab_size <= 300
    assert c.train.max() < c.vocab_size
    b = data.load_corpus(tmp_path / "corpus")
    assert len(c.train) < len(b.train)  # merges shorten the stream
    s = "alpha line two\n"
    assert c.tokenizer.decode(c.tokenizer.encode(s)) == s
    assert c.fingerprint != b.fingerprint
    again = data.load_corpus(tmp_path / "corpus", tokenizer="bpe300")
    np.testing.assert_array_equal(again.train, c.train)
    with pytest.raises(ValueError, match="257, 65535"):
        data.load_corpus(tmp_path / "corpus", tokenizer=100)


def test_non_text_corpus_gets_a_warning(tmp_path, capsys):
    from sixn.scaling.data import MAX_NON_TEXT, non_text_fraction
    rnd = tmp_path / "random.txt"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    text = tmp_path / "prose.txt"
    text.write_text("Ein Satz auf Deutsch, une phrase en français, 日本語の文。\n" * 2000)
    assert non_text_fraction(rnd.read_bytes()) > 0.05
    assert non_text_fraction(text.read_bytes()) == 0.0
    assert non_text_fraction("Привет, мир!\n".encode("koi8-r") * 100) == 0.0   # 8-bit text
    data.load_corpus([text])
    assert "warning" not in capsys.readouterr().err
    data.load_corpus([rnd, text])
    err = capsys.readouterr().err
    assert err.startswith("warning: 1 corpus file(s) do not look like text") and str(rnd) in err
    assert non_text_fraction(b"\x00" * 100) == 1.0 > MAX_NON_TEXT
