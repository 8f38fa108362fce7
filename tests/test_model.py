import pytest
import torch

from sixn.model import GPT, get_preset


def test_torch_backend_trains_on_fixed_batch():
    torch.manual_seed(0)
    cfg = get_preset("tiny", n_ctx=32)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, cfg.n_vocab, (4, 32))
    y = torch.roll(x, -1, dims=1)
    losses = []
    for _ in range(30):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.3)
    assert losses[-1] < 0.6 * losses[0]


def test_sdpa_backend_matches_reference():
    torch.manual_seed(1)
    cfg = get_preset("tiny", n_ctx=24)
    ref = GPT(cfg)
    sdpa = GPT(cfg.replace(backend="sdpa"))
    sdpa.load_state_dict(ref.state_dict())
    x = torch.randint(0, cfg.n_vocab, (2, 24))
    torch.testing.assert_close(ref(x)[0], sdpa(x)[0], atol=1e-5, rtol=1e-5)


def test_untied_head_is_separate():
    cfg = get_preset("tiny", tie_head=False)
    m = GPT(cfg)
    assert m.head is not None and m.head.weight.data_ptr() != m.wte.weight.data_ptr()


def test_bad_inputs():
    m = GPT(get_preset("tiny"))
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        m(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, seq_len"):
        m(torch.zeros(65, dtype=torch.long))
