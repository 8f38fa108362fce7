"""What tests/test_memory.py runs in a spawned child: a module importable by its plain name
(tests/ is on pytest's pythonpath), because the child unpickles the target by module name."""

import re
from pathlib import Path

import torch

from sixn.model.config import GPTConfig
from sixn.model.gpt import GPT


def _status_bytes(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _peak_growth(shape, queue) -> None:
    """In a child process: a training step of `shape`; the growth of the peak resident set."""
    L, d, T, V, B, backend = shape
    torch.set_num_threads(1)
    cfg = GPTConfig.from_shape(L, d, n_ctx=T, n_vocab=V, backend=backend)
    x = torch.randint(0, V, (B, T))
    Path("/proc/self/clear_refs").write_text("5")   # reset the peak to the current size
    base = _status_bytes("VmRSS")
    m = GPT(cfg)
    opt = torch.optim.AdamW(m.parameters())
    _, loss = m(x, x)
    loss.backward()
    opt.step()
    queue.put(_status_bytes("VmHWM") - base)
