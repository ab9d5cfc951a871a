"""torch.autograd.gradcheck in double: polygrad's backward is the derivative of its forward.

The polynomial adjoint route is the exact gradient of the approximate forward, so it passes
gradcheck once the plan is fixed (a caller bound R and a degree: the approximation no longer
moves with the data). The paper route is not that derivative (design.md section 4); it is
compared with the exact gradient instead, within the error it has on this data.
"""

import pytest
import torch
from torch.autograd import gradcheck

import polygrad.torch as pt
from reference import reference_attention, relative_error, random_qkv


@pytest.mark.parametrize("causal", [True, False])
def test_exact_path_passes_gradcheck(causal):
    q, k, v = random_qkv((2, 2, 12, 4))
    assert gradcheck(lambda q, k, v: pt.attention(q, k, v, causal=causal), (q, k, v))


@pytest.mark.parametrize("causal", [True, False])
def test_polynomial_adjoint_route_with_a_fixed_plan_passes_gradcheck(causal):
    q, k, v = random_qkv((1, 2, 20, 4), seed=1)
    with torch.no_grad():  # scores within the fixed bound R = 2, so that the plan certifies them
        q *= 0.5
        k *= 0.5
    def poly(q, k, v):
        return pt.attention(q, k, v, causal=causal, method="poly", route="adjoint", degree=5,
                            bound=2.0, chunk=8)
    assert gradcheck(poly, (q, k, v))


def test_qk_norm_passes_gradcheck():
    q, k, v = random_qkv((1, 2, 16, 4), seed=2)
    def poly(q, k, v):
        return pt.attention(q, k, v, method="poly", degree=5, qk_norm=1.5, chunk=4)
    assert gradcheck(poly, (q, k, v))


@pytest.mark.parametrize("causal", [True, False])
def test_paper_route_is_within_its_error_of_the_exact_gradient(causal):
    q, k, v = random_qkv((1, 2, 64, 4), seed=4)
    grad_o = torch.randn(1, 2, 64, 4, dtype=torch.float64)

    def gradients(**options):
        o = pt.attention(q, k, v, causal=causal, **options)
        return torch.autograd.grad(o, (q, k, v), grad_o)

    paper = gradients(method="poly", route="paper", degree=8, qk_norm=2.0)
    adjoint = gradients(method="poly", route="adjoint", degree=8, qk_norm=2.0)
    qn = torch.nn.functional.normalize(q, dim=-1)
    kn = torch.nn.functional.normalize(k, dim=-1)
    o = reference_attention(qn, kn, v, causal=causal, scale=2.0)
    normalised_exact = torch.autograd.grad(o, (q, k, v), grad_o)
    for a, p, e in zip(adjoint, paper, normalised_exact):
        # Degree 8 on [-2, 2] certifies exp to 3.2e-5 relative. Measured on these inputs: the
        # paper route's gradients within 6e-6 of the exact ones, the adjoint route's within 3e-5.
        assert relative_error(p, e) <= 1e-4
        assert relative_error(a, e) <= 1e-4
    # The routes share dV (the approximate probabilities times dO) and differ in dQ and dK.
    assert relative_error(paper[0], adjoint[0]) > 0 and relative_error(paper[1], adjoint[1]) > 0
