import torch
import torch.nn.functional as F
import polygrad.torch as pt

class SelfAttention(torch.nn.Module):
    def __init__(self, width=64, heads=8):
        super().__init__()
        self.heads, self.qkv, self.out = heads, torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)

    def forward(self, x):  # x: [batch, n, width]
        b, n, width = x.shape
        q, k, v = (t.view(b, n, self.heads, -1).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # unit rows: scores within [-2, 2]
        # was: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=2.0)
        o = pt.scaled_dot_product_attention(q, k, v, is_causal=True, scale=2.0, method="auto", bound=2.0)
        return self.out(o.transpose(1, 2).reshape(b, n, width))

x = torch.randn(2, 4096, 64, requires_grad=True)
SelfAttention()(x).square().mean().backward()
print("gradient norm:", x.grad.norm().item())
