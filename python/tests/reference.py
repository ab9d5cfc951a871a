"""PyTorch's own attention, the reference the polygrad.torch tests compare against.

``reference_sdpa`` is ``torch.nn.functional.scaled_dot_product_attention`` where the PyTorch under
test has it (2.0 and later), and otherwise (Debian 12's PyTorch 1.13) the same computation written
in PyTorch operators; ``SDPA_PEER`` says which one a run compares against.
"""

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



_sdpa = getattr(torch.nn.functional, "scaled_dot_product_attention", None)
SDPA_PEER = (f"torch.nn.functional.scaled_dot_product_attention (PyTorch {torch.__version__})"
             if _sdpa else f"softmax attention in PyTorch {torch.__version__} operators")


def _sdpa_has_gqa():
    try:
        q = torch.zeros(1, 2, 1, 1)
        _sdpa(q, q[:, :1], q[:, :1], enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


_SDPA_HAS_GQA = bool(_sdpa) and _sdpa_has_gqa()


def reference_sdpa(query, key, value, is_causal=False, scale=None, enable_gqa=False):
    """PyTorch's scaled_dot_product_attention, or its computation where PyTorch predates it."""
    if _SDPA_HAS_GQA:
        return _sdpa(query, key, value, is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        # Grouped-query attention as PyTorch 2.5 defines it: key/value head j serves query heads
        # j g .. (j + 1) g - 1.
        group = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(group, dim=-3)
        value = value.repeat_interleave(group, dim=-3)
    if _sdpa:
        return _sdpa(query, key, value, is_causal=is_causal, scale=scale)
    return reference_attention(query, key, value, causal=is_causal, scale=scale)
