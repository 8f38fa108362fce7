"""Long counts show progress: the counters' StepProgress follows the blocks of the step through
hooks that change no count, and says where the step is while it runs long."""

import io
import time

import torch

from sixn.bench import counters
from sixn.bench.counters.base import StepProgress, build_step
from sixn.model.config import GPTConfig
from sixn.model.flops import executed


def test_progress_follows_the_blocks_and_changes_no_count():
    cfg = GPTConfig.from_shape(3, 32, n_ctx=16, n_vocab=64, n_head=2)
    stream = io.StringIO()
    p = StepProgress("test", cfg.n_layer, stream=stream, first_s=3600)
    seen = []
    with p:
        model, step = build_step(cfg, 2, 16, "meta", torch.float32)
        assert p.status() == "building the model"
        p.watch(model)
        model.blocks[1].register_forward_hook(lambda *a: seen.append(p.status()))
        step()
    assert seen == ["forward, block 3 of 3"]      # block 1 (0-based) done: the third is next
    assert (p.fwd, p.bwd) == (3, 3) and p.status() == "backward, block 3 of 3"
    assert stream.getvalue() == ""                 # a short count prints nothing
    assert not model.blocks[0]._forward_hooks       # the hooks are gone afterwards
    sc = counters.count_step(cfg, 2, 16, counter="dispatch")
    assert sc.total == executed(cfg, 2, 16).matmul_total   # counted with the hooks: unchanged


def test_a_long_count_says_where_it_is():
    stream = io.StringIO()
    p = StepProgress("dispatch counter, big", 10, stream=stream, first_s=0.0, every_s=3600)
    with p:
        p.fwd = 4
        p.phase = "forward"
        for _ in range(1000):          # the first beat comes at once (first_s = 0)
            if stream.getvalue():
                break
            time.sleep(0.01)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("  [dispatch counter, big] still counting: ")
    assert lines[-1].startswith("  [dispatch counter, big] done in ")
