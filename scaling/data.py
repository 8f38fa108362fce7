"""Corpora for scaling runs: local text or nanoGPT .bin files, tokenized, split and fingerprinted.

A Corpus holds two token arrays (train, val), the vocabulary size, a short fingerprint of the
source files and a description. Sources:

- text: files, directories (every regular file below, recursively) or glob patterns, read as bytes
  in sorted order of their paths. Tokenizers: ByteTokenizer (the 256 byte values, the default) or a
  byte-level BPE trained here on the training text with the `tokenizers` library (`bpe_vocab`).
- .bin: nanoGPT's format, a flat array of uint16 token ids (memory-mapped). A directory holding
  train.bin and val.bin is used as that split; a single .bin file is split like text (its tail).
- default (no source): the *.py files of the running interpreter's standard library
  (sysconfig's "stdlib" path, site-packages excluded): on every machine with Python, offline.
  pydoc_data/topics.py is left out of it: its strings are the transfer corpus (below).

Split (deterministic): the last `val_fraction` of every text file (cut at a line break) is
validation, the rest training; a single .bin loses its last `val_fraction` of tokens to validation.

Fingerprint: sha256 over the sorted list of file paths (relative to their common folder, so the
same files elsewhere give the same fingerprint) and their bytes, plus the tokenizer and split; the
first 16 hex digits are kept. Files over 256 MiB are hashed by size and sixteen 1 MiB samples.

Transfer corpus (Kaplan's "transfer" experiment needs text of another kind): by default the
English prose of the Python reference manual that every CPython ships in pydoc_data/topics.py
(the string values of its `topics` dict, read with ast, never imported). If an installation lacks
it, the standard library's *.txt files (LICENSE.txt, ...) are used when they hold at least 64 KiB.
"""

from __future__ import annotations

import ast
import glob as _glob
import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DEFAULT_VAL_FRACTION = 0.1
_BIG_FILE = 256 * 2 ** 20        # files above this are fingerprinted by samples
_SAMPLE = 2 ** 20
_EXCLUDED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
_TOPICS = Path("pydoc_data") / "topics.py"
MIN_TRANSFER_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------

class ByteTokenizer:
    """Bytes as tokens: vocabulary 256, lossless for any file."""

    name = "byte"
    vocab_size = 256

    def encode(self, data: bytes | str) -> np.ndarray:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


class BPETokenizer:
    """A byte-level BPE trained locally with Hugging Face `tokenizers` (optional dependency)."""

    def __init__(self, vocab_size: int, texts: list[bytes]):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not 257 <= vocab_size <= 65535:
            raise ValueError(f"BPE vocabulary size must be an int in [257, 65535] (uint16 token ids), "
                             f"got {vocab_size!r}")
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise ValueError("a BPE tokenizer needs the `tokenizers` package (pip install tokenizers, "
                             "or pip install sixn[bpe]); the default byte tokenizer needs nothing") from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      special_tokens=[])
        tok.train_from_iterator((t.decode("utf-8", errors="replace") for t in texts), trainer=trainer,
                                length=len(texts))
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.requested_vocab = vocab_size
        self.name = f"bpe{vocab_size}"

    def encode(self, data: bytes | str) -> np.ndarray:
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        return np.asarray(self._tok.encode(data).ids, dtype=np.uint16)

    def encode_many(self, texts: list[bytes]) -> list[np.ndarray]:
        encs = self._tok.encode_batch([t.decode("utf-8", errors="replace") for t in texts])
        return [np.asarray(e.ids, dtype=np.uint16) for e in encs]

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])

    def to_dict(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

@dataclass
class Corpus:
    train: np.ndarray          # token ids, uint16 (or a uint16 memmap)
    val: np.ndarray
    vocab_size: int
    fingerprint: str           # 16 hex digits, see the module docstring
    description: str
    tokenizer: object = field(default=None, repr=False)
    files: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            arr = getattr(self, name)
            if arr.ndim != 1 or len(arr) < 2:
                raise ValueError(f"Corpus.{name} must be a 1-D token array of at least 2 tokens, "
                                 f"got shape {arr.shape}")

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "val"):
            raise ValueError(f"unknown split {name!r}; supported: train, val")
        return self.train if name == "train" else self.val

    def get_batch(self, split: str, batch: int, seq_len: int, gen: torch.Generator,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` random windows of `seq_len` tokens: inputs x and next-token targets y, int64."""
        data = self.split(split)
        if batch <= 0 or seq_len <= 0:
            raise ValueError(f"batch and seq_len must be positive, got {batch}, {seq_len}")
        if len(data) < seq_len + 1:
            raise ValueError(f"the {split} split has {len(data)} tokens, fewer than seq_len + 1 = "
                             f"{seq_len + 1}; use a larger corpus or a shorter sequence")
        starts = torch.randint(0, len(data) - seq_len, (batch,), generator=gen).numpy()
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        win = torch.from_numpy(np.asarray(data[idx], dtype=np.int64))
        x, y = win[:, :-1], win[:, 1:]
        if torch.device(device).type != "cpu":
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return x.contiguous(), y.contiguous()

    def info(self) -> dict:
        return {"description": self.description, "fingerprint": self.fingerprint,
                "vocab_size": self.vocab_size, "train_tokens": int(len(self.train)),
                "val_tokens": int(len(self.val)), "n_files": len(self.files),
                "tokenizer": getattr(self.tokenizer, "name", "ids")}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The default corpus: the standard library's *.py files, sorted, site-packages excluded."""
    root = stdlib_dir()
    out = []
    # os.walk, pruning the excluded folders as it goes: site-packages (torch and all) is never
    # walked, which a recursive glob does before it filters (seconds, in every worker process)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]
        here = Path(dirpath)
        for name in filenames:
            p = here / name
            if name.endswith(".py") and p.relative_to(root) != _TOPICS and p.is_file():
                out.append(p)
    if not out:
        raise ValueError(f"no *.py files found under the standard library folder {root}; pass a "
                         f"corpus explicitly")
    return sorted(out)


def resolve_paths(specs: list[str | Path] | str | Path) -> list[Path]:
    """Files named by paths, directories (recursive) and glob patterns, sorted, duplicates removed."""
    if isinstance(specs, (str, Path)):
        specs = [specs]
    files: set[Path] = set()
    for spec in specs:
        s = str(spec)
        p = Path(s).expanduser()
        if p.is_file():
            files.add(p.resolve())
        elif p.is_dir():
            found = [f.resolve() for f in p.rglob("*")
                     if f.is_file() and not (_EXCLUDED_DIRS & set(f.relative_to(p).parts))
                     and not any(part.startswith(".") for part in f.relative_to(p).parts)]
            if not found:
                raise ValueError(f"corpus directory {s!r} holds no files")
            files.update(found)
        elif any(c in s for c in "*?["):
            found = [Path(f).resolve() for f in _glob.glob(os.path.expanduser(s), recursive=True)
                     if Path(f).is_file()]
            if not found:
                raise ValueError(f"corpus glob {s!r} matches no files")
            files.update(found)
        else:
            raise ValueError(f"corpus path {s!r} does not exist; give files, directories, glob "
                             f"patterns or a nanoGPT .bin file")
    return sorted(files)


def _common_root(files: list[Path]) -> Path:
    if len(files) == 1:
        return files[0].parent
    return Path(os.path.commonpath([str(f) for f in files]))


def _hash_file(h, path: Path) -> None:
    size = path.stat().st_size
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        if size <= _BIG_FILE:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        else:
            for i in range(16):
                f.seek((size - _SAMPLE) * i // 15)
                h.update(f.read(_SAMPLE))


def fingerprint_files(files: list[Path], extra: str = "", contents: list[bytes] | None = None) -> str:
    """sha256 of the sorted relative paths, their bytes and `extra` (tokenizer, split): 16 hex.
    contents: the files' bytes, already read, in the order of `files` (the same fingerprint
    without reading them again)."""
    order = sorted(range(len(files)), key=lambda i: Path(files[i]))
    paths = [Path(files[i]) for i in order]
    root = _common_root(paths) if paths else Path(".")
    h = hashlib.sha256()
    h.update(extra.encode())
    for i, f in zip(order, paths):
        h.update(b"\0" + f.relative_to(root).as_posix().encode() + b"\0")
        if contents is None:
            _hash_file(h, f)
        else:
            _hash_bytes(h, contents[i])
    return h.hexdigest()[:16]


def _hash_bytes(h, data: bytes) -> None:
    """What _hash_file adds for a file holding `data`."""
    size = len(data)
    h.update(size.to_bytes(8, "little"))
    if size <= _BIG_FILE:
        h.update(data)
    else:
        for i in range(16):
            at = (size - _SAMPLE) * i // 15
            h.update(data[at:at + _SAMPLE])


def split_text(data: bytes, val_fraction: float) -> tuple[bytes, bytes]:
    """The last val_fraction of a file is validation, cut at the line break before the cut."""
    cut = int(round(len(data) * (1.0 - val_fraction)))
    nl = data.rfind(b"\n", 0, cut)
    if nl > 0 and cut - nl < 4096:
        cut = nl + 1
    return data[:cut], data[cut:]


def _check_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")


def _make_tokenizer(tokenizer, train_texts: list[bytes]):
    if tokenizer is None or tokenizer == "byte":
        return ByteTokenizer()
    if isinstance(tokenizer, int) and not isinstance(tokenizer, bool):
        return BPETokenizer(tokenizer, train_texts)
    if isinstance(tokenizer, str) and tokenizer.startswith("bpe") and tokenizer[3:].isdigit():
        return BPETokenizer(int(tokenizer[3:]), train_texts)
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "vocab_size"):
        return tokenizer
    raise ValueError(f"unknown tokenizer {tokenizer!r}; supported: 'byte', 'bpe<VOCAB>' or an int "
                     f"BPE vocabulary size")


def _encode_all(tok, texts: list[bytes]) -> np.ndarray:
    if not texts:
        return np.zeros(0, dtype=np.uint16)
    if hasattr(tok, "encode_many"):
        parts = tok.encode_many(texts)
    else:
        parts = [tok.encode(t) for t in texts]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


TEXT_SAMPLE = 1 << 16        # bytes of each file looked at by non_text_fraction
MAX_NON_TEXT = 0.02          # above this share of control bytes a corpus file gets a warning
_CONTROL = np.ones(256, dtype=bool)
_CONTROL[32:127] = False     # printable ASCII
_CONTROL[128:] = False       # UTF-8 and 8-bit encodings (latin-1, koi8-r, ...) are text
_CONTROL[list(b"\t\n\v\f\r\b\x1b")] = False


def non_text_fraction(data: bytes) -> float:
    """The share of control bytes (NUL and the other C0 controls but tab, newline, vertical tab,
    form feed, carriage return, backspace and escape; DEL) in the first TEXT_SAMPLE bytes of
    `data`: 0 for source code and prose in any script and 8-bit encoding, about 0.1 for random or
    compressed bytes, more for executables and UTF-16."""
    sample = np.frombuffer(data[:TEXT_SAMPLE], dtype=np.uint8)
    return float(_CONTROL[sample].mean()) if sample.size else 0.0


def warn_non_text(files_and_fractions: list[tuple[Path, float]]) -> None:
    """One warning line on stderr naming the corpus files that do not look like text."""
    bad = [(f, x) for f, x in files_and_fractions if x > MAX_NON_TEXT]
    if not bad:
        return
    shown = ", ".join(f"{f} ({x:.0%})" for f, x in bad[:3]) + (
        f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    print(f"warning: {len(bad)} corpus file(s) do not look like text (share of control bytes, "
          f"binary data?): {shown}; a model is trained on them anyway, but its losses and fits are "
          f"not those of text", file=sys.stderr, flush=True)


def load_text_files(files: list[Path], tokenizer="byte", val_fraction: float = DEFAULT_VAL_FRACTION,
                    description: str | None = None, max_bytes: int | None = None) -> Corpus:
    """Read, split (tail of each file) and tokenize text files into a Corpus.

    max_bytes keeps the first files (in sorted order) up to that many bytes: a deterministic
    subset, fingerprinted as such."""
    _check_fraction(val_fraction)
    files = sorted(Path(f) for f in files)
    if not files:
        raise ValueError("no corpus files given")
    train_texts, val_texts, used, contents = [], [], [], []
    total = 0
    texty: list[tuple[Path, float]] = []
    for f in files:
        data = f.read_bytes()
        if not data:
            continue
        if max_bytes is not None and total + len(data) > max_bytes and used:
            break
        total += len(data)
        used.append(f)
        contents.append(data)
        texty.append((f, non_text_fraction(data)))
        tr, va = split_text(data, val_fraction)
        train_texts.append(tr)
        if va:
            val_texts.append(va)
    if not used:
        raise ValueError(f"the corpus files are all empty ({len(files)} files)")
    warn_non_text(texty)
    tok = _make_tokenizer(tokenizer, train_texts)
    train = _encode_all(tok, train_texts)
    val = _encode_all(tok, val_texts)
    fp = fingerprint_files(used, extra=f"{tok.name}|{val_fraction}", contents=contents)
    desc = description or f"{len(used)} text files under {_common_root(used)}"
    desc += f" ({total / 1e6:.2f} MB, {tok.name} tokens: {len(train)} train / {len(val)} val)"
    if len(train) < 2 or len(val) < 2:
        raise ValueError(f"corpus too small to split: {len(train)} train / {len(val)} val tokens from "
                         f"{total} bytes; give more text")
    return Corpus(train, val, tok.vocab_size, fp, desc, tok, tuple(str(f) for f in used))


def load_bin(path: str | Path, val_fraction: float = DEFAULT_VAL_FRACTION,
             vocab_size: int | None = None) -> Corpus:
    """nanoGPT's uint16 token files: a directory with train.bin and val.bin, or one .bin file."""
    p = Path(path)
    if p.is_dir():
        tr_p, va_p = p / "train.bin", p / "val.bin"
        if not (tr_p.is_file() and va_p.is_file()):
            raise ValueError(f"{p} has no train.bin and val.bin (nanoGPT's layout)")
        train = np.memmap(tr_p, dtype=np.uint16, mode="r")
        val = np.memmap(va_p, dtype=np.uint16, mode="r")
        files, extra = [tr_p, va_p], "bin-dir"
    elif p.is_file() and p.suffix == ".bin":
        if p.stat().st_size % 2:
            raise ValueError(f"{p} has an odd number of bytes: not a uint16 token file")
        _check_fraction(val_fraction)
        data = np.memmap(p, dtype=np.uint16, mode="r")
        cut = int(len(data) * (1.0 - val_fraction))
        train, val = data[:cut], data[cut:]
        files, extra = [p], f"bin|{val_fraction}"
    else:
        raise ValueError(f"{p} is not a .bin file or a directory with train.bin/val.bin")
    top = max(int(train.max()), int(val.max())) + 1 if len(train) and len(val) else 0
    if vocab_size is None:
        vocab_size = top
    elif vocab_size < top:
        raise ValueError(f"vocab_size {vocab_size} is smaller than the largest token id + 1 ({top}) "
                         f"in {p}")
    fp = fingerprint_files(files, extra=extra)
    desc = (f"nanoGPT tokens {p} ({len(train)} train / {len(val)} val tokens, vocab {vocab_size})")
    return Corpus(train, val, vocab_size, fp, desc, None, tuple(str(f) for f in files))


def default_corpus(tokenizer="byte", val_fraction: float = DEFAULT_VAL_FRACTION,
                   max_bytes: int | None = None) -> Corpus:
    """The standard library's *.py files (see the module docstring)."""
    import platform
    return load_text_files(stdlib_files(), tokenizer, val_fraction, max_bytes=max_bytes,
                           description=f"Python {platform.python_version()} standard library *.py "
                                       f"({stdlib_dir()})")


def load_corpus(sources: list[str | Path] | str | Path | None = None, tokenizer="byte",
                val_fraction: float = DEFAULT_VAL_FRACTION, max_bytes: int | None = None,
                bin_vocab: int | None = None) -> Corpus:
    """A Corpus from text paths/dirs/globs, a nanoGPT .bin (or its folder), or the default."""
    if sources is None or (isinstance(sources, (list, tuple)) and not sources):
        return default_corpus(tokenizer, val_fraction, max_bytes)
    if isinstance(sources, (str, Path)):
        sources = [sources]
    sources = [str(s) for s in sources]
    bins = [s for s in sources if s.endswith(".bin") or (Path(s).is_dir() and (Path(s) / "train.bin").is_file())]
    if bins:
        if len(sources) != 1:
            raise ValueError(f"a nanoGPT .bin corpus is used alone; got {len(sources)} sources: {sources}")
        if tokenizer not in (None, "byte"):
            raise ValueError("a .bin corpus is already tokenized: drop the BPE option")
        return load_bin(bins[0], val_fraction, bin_vocab)
    return load_text_files(resolve_paths(sources), tokenizer, val_fraction, max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------
# Transfer corpus
# --------------------------------------------------------------------------------------------

def _pydoc_topics_text(path: Path) -> bytes:
    """The string values of `topics = {...}` in pydoc_data/topics.py, read with ast (no import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == "topics" for t in targets):
            topics = ast.literal_eval(node.value)
            return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    raise ValueError(f"{path} has no `topics` dict")


def default_transfer_source() -> tuple[bytes, list[Path], str]:
    root = stdlib_dir()
    topics = root / _TOPICS
    if topics.is_file():
        try:
            return _pydoc_topics_text(topics), [topics], "Python reference manual prose (pydoc_data/topics.py)"
        except (ValueError, SyntaxError):
            pass
    txt = sorted(p for p in root.glob("**/*.txt")
                 if p.is_file() and not (_EXCLUDED_DIRS & set(p.relative_to(root).parts)))
    data = b"\n".join(p.read_bytes() for p in txt)
    if len(data) < MIN_TRANSFER_BYTES:
        raise ValueError(f"no default transfer corpus on this Python: {topics} is missing and the "
                         f"standard library's *.txt files hold {len(data)} bytes (< {MIN_TRANSFER_BYTES});"
                         f" pass a transfer corpus explicitly")
    return data, txt, "standard library *.txt files"


def transfer_corpus(main: Corpus, sources: list[str | Path] | str | Path | None = None) -> Corpus:
    """A second corpus of another kind, tokenized with `main`'s tokenizer, for transfer losses.

    All of it is evaluation text: both splits hold the whole token stream."""
    tok = main.tokenizer
    if isinstance(sources, (str, Path)):
        sources = [sources]
    if sources and len(sources) == 1 and (str(sources[0]).endswith(".bin") or
                                          (Path(sources[0]) / "val.bin").is_file()):
        other = load_bin(sources[0], vocab_size=main.vocab_size)  # already tokenized: its val split
        return Corpus(other.val, other.val, main.vocab_size, other.fingerprint,
                      f"transfer: {other.description}", None, other.files)
    if tok is None:
        raise ValueError("a transfer corpus needs the main corpus's tokenizer; a pre-tokenized .bin "
                         "corpus has none here: pass a .bin transfer corpus of the same vocabulary")
    if sources:
        files = resolve_paths(sources)
        data = b"\n".join(f.read_bytes() for f in files)
        desc = f"{len(files)} files under {_common_root(files)}"
    else:
        data, files, desc = default_transfer_source()
    ids = tok.encode(data)
    if len(ids) < 2:
        raise ValueError("the transfer corpus is empty")
    fp = fingerprint_files(files, extra=f"transfer|{tok.name}")
    desc = f"{desc} ({len(data) / 1e6:.2f} MB, {len(ids)} {tok.name} tokens)"
    return Corpus(ids, ids, main.vocab_size, fp, desc, tok, tuple(str(f) for f in files))
