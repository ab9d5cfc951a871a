"""PyTorch's own attention, the reference the polygrad.torch tests compare against."""

import math

import torch


def reference_attention(q, k, v, *, causal, scale=None):
    """softmax(scale q k^T + causal mask) v with PyTorch operators (autograd gives its gradient)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = scale * q @ k.transpose(-1, -2)
    if causal:
        n = q.shape[-2]
        later = torch.ones(n, n, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(later, -math.inf)
    return torch.softmax(scores, dim=-1) @ v


def relative_error(a, b):
    """||a - b|| / ||b|| over the whole tensor (||a|| when b is zero)."""
    scale = b.norm().item()
    return (a - b).norm().item() / (scale if scale > 0 else 1.0)


def random_qkv(shape, dtype=torch.float64, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)
                 for _ in range(3))

