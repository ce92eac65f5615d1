"""Training mechanics: optimiser groups, a short run lowers the loss, seeding."""

from __future__ import annotations

import torch

from iqeclip.engine.trainer import make_optimizer, train_step
from tests.conftest import build_tiny


def test_optimizer_groups():
    model = build_tiny()
    opt = make_optimizer(model, 1e-4)
    (main, temp) = opt.param_groups
    assert main["lr"] == 1e-4 and temp["lr"] == 0.01 and opt.defaults["betas"] == (0.5, 0.999)
    assert temp["params"] == [model.head.class_tokens.prompt_temp]
    n_head = sum(1 for _ in model.head.parameters())
    assert len(main["params"]) + 1 == n_head


def test_short_training_lowers_the_loss():
    model = build_tiny(seed=3)
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64)
    masks = torch.zeros(4, 64, 64, dtype=torch.bool)
    images[2:, :, 20:40, 20:40] = 1.0  # bright anomalies
    masks[2:, 20:40, 20:40] = True
    batch = (images, masks, torch.tensor([0, 0, 1, 1]), torch.tensor([True] * 4))
    opt = make_optimizer(model, 1e-3)
    losses = [train_step(model, opt, batch) for _ in range(15)]
    assert losses[-1] < losses[0] - 0.5


def test_same_seed_same_initial_head():
    a, b = build_tiny(seed=7), build_tiny(seed=7)
    for (k, v), w in zip(a.head.state_dict().items(), b.head.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    c = build_tiny(seed=8)
    assert not torch.equal(a.head.queries.tokens, c.head.queries.tokens)
    # the random backbone is the same whatever the seed, so checkpoints on it can be tested
    assert torch.equal(a.backbone.proj, c.backbone.proj)
