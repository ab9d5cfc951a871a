"""A small PyTorch language model trains to the same loss with polygrad's attention as with its own.

Two layers, four heads of eight, character data (this file's own docstrings, so that nothing is
downloaded), 60 AdamW steps from one seed: once with PyTorch attention, once with
polygrad.torch.attention (exact, and the polynomial adjoint route at degree 6 with the same QK
normalisation in both models).
"""

import math
import pathlib

import pytest
import torch

import polygrad.torch as pt
from reference import reference_attention

TEXT = pathlib.Path(__file__).read_text()
VOCAB = sorted(set(TEXT))
DATA = torch.tensor([VOCAB.index(c) for c in TEXT], dtype=torch.long)


class Block(torch.nn.Module):
    def __init__(self, width, heads, attend):
        super().__init__()
        self.heads, self.attend = heads, attend
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x):  # x: [B, n, width]
        b, n, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        o = self.attend(q, k, v).transpose(1, 2).reshape(b, n, width)
        x = x + self.out(o)
        return x + self.mlp(self.norm2(x))


class CharModel(torch.nn.Module):
    def __init__(self, attend, width=32, heads=4, layers=2, context=64):
        super().__init__()
        self.embed = torch.nn.Embedding(len(VOCAB), width)
        self.position = torch.nn.Parameter(0.02 * torch.randn(context, width))
        self.blocks = torch.nn.ModuleList(Block(width, heads, attend) for _ in range(layers))
        self.head = torch.nn.Linear(width, len(VOCAB))

    def forward(self, tokens):
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def train(attend, steps=60, batch=4, context=64):
    torch.manual_seed(0)
    model = CharModel(attend, context=context).double()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    starts = torch.randint(0, len(DATA) - context - 1, (steps, batch),
                           generator=torch.Generator().manual_seed(1))
    losses = []
    for step in range(steps):
        window = torch.stack([DATA[s: s + context + 1] for s in starts[step]])
        logits = model(window[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(VOCAB)),
                                                 window[:, 1:].reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def torch_attention(q, k, v):
    return reference_attention(q, k, v, causal=True)


def torch_attention_qk_norm(q, k, v):
    q, k = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
    return reference_attention(q, k, v, causal=True, scale=2.0)


@pytest.mark.parametrize("ours, theirs", [
    (lambda q, k, v: pt.attention(q, k, v), torch_attention),
    (lambda q, k, v: pt.attention(q, k, v, method="poly", degree=6, qk_norm=2.0),
     torch_attention_qk_norm),
], ids=["exact", "poly-adjoint"])
def test_training_reaches_pytorch_attention_loss_within_1_percent(ours, theirs):
    with_polygrad, with_torch = train(ours), train(theirs)
    assert with_torch[-1] < 0.75 * with_torch[0]  # it learned something
    final = lambda losses: sum(losses[-5:]) / 5
    assert abs(final(with_polygrad) - final(with_torch)) <= 0.01 * final(with_torch)
    assert math.isfinite(final(with_polygrad))
