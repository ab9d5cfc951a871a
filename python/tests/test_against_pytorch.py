"""polygrad.torch.attention against PyTorch's own attention, in double precision."""

import pytest
import torch

import polygrad.torch as pt
from reference import reference_attention, relative_error, random_qkv


def outputs_and_gradients(fn, q, k, v, seed=7):
    o = fn(q, k, v)
    grad_o = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed), dtype=o.dtype)
    return (o, *torch.autograd.grad(o, (q, k, v), grad_o))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 70, 8), (1, 1, 1, 4), (4, 33, 16)])
def test_exact_path_matches_pytorch_to_1e_10(causal, shape):
    q, k, v = random_qkv(shape)
    ours = outputs_and_gradients(lambda *a: pt.attention(*a, causal=causal), q, k, v)
    theirs = outputs_and_gradients(lambda *a: reference_attention(*a, causal=causal), q, k, v)
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, theirs):
        assert a.shape == b.shape
        assert relative_error(a, b) <= 1e-10, name


def test_scale_is_the_factor_of_the_scores():
    q, k, v = random_qkv((2, 40, 8))
    o = pt.attention(q, k, v, causal=False, scale=0.3)
    assert relative_error(o, reference_attention(q, k, v, causal=False, scale=0.3)) <= 1e-12


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("route", ["adjoint", "paper"])
def test_polynomial_path_within_1e_3_at_degree_7_with_qk_norm(causal, route):
    q, k, v = random_qkv((2, 2, 200, 8), seed=3)
    ours = outputs_and_gradients(
        lambda *a: pt.attention(*a, causal=causal, method="poly", route=route, degree=7,
                                qk_norm=2.0), q, k, v)

    def normalised_reference(q, k, v):
        qn = torch.nn.functional.normalize(q, dim=-1)
        kn = torch.nn.functional.normalize(k, dim=-1)
        return reference_attention(qn, kn, v, causal=causal, scale=2.0)

    theirs = outputs_and_gradients(normalised_reference, q, k, v)
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, theirs):
        error = relative_error(a, b)
        assert error <= 1e-3, name
        assert error > 0, name  # it is an approximation: equality would mean the exact path ran


def test_sequences_of_a_batch_do_not_see_each_other():
    q, k, v = random_qkv((3, 2, 50, 8), requires_grad=False)
    o = pt.attention(q, k, v, method="poly", degree=5, bound=8.0)
    q2 = q.clone()
    q2[1] += 1.0
    k2, v2 = k.clone(), v.clone()
    k2[1] *= 0.5
    v2[1] -= 2.0
    o2 = pt.attention(q2, k2, v2, method="poly", degree=5, bound=8.0)
    assert torch.equal(o[0], o2[0]) and torch.equal(o[2], o2[2])
    assert not torch.equal(o[1], o2[1])


def test_float32_exact_path_close_to_double():
    q, k, v = random_qkv((2, 2, 300, 16), requires_grad=False)
    o64 = pt.attention(q, k, v)
    o32 = pt.attention(q.float(), k.float(), v.float())
    assert o32.dtype == torch.float32
    assert relative_error(o32.double(), o64) <= 1e-5
