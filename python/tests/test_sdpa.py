"""polygrad.torch.scaled_dot_product_attention against PyTorch's (reference.SDPA_PEER): the same
signature, defaults and results, and a clear error for each thing polygrad does not implement."""

import math

import pytest
import torch
from torch.autograd import gradcheck

import polygrad.torch as pt
from reference import SDPA_PEER, reference_sdpa, relative_error, random_qkv


def outputs_and_gradients(fn, tensors, seed=7):
    o = fn(*tensors)
    grad_o = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed), dtype=o.dtype)
    return (o, *torch.autograd.grad(o, tensors, grad_o))


def test_the_peer_is_named(capsys):
    with capsys.disabled():
        print(f"\n  polygrad.torch.scaled_dot_product_attention compared with {SDPA_PEER}")


@pytest.mark.parametrize("is_causal", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 70, 8), (3, 33, 16), (50, 4), (2, 2, 2, 9, 4)])
def test_exact_matches_pytorch_to_1e_10_in_double(is_causal, shape):
    tensors = random_qkv(shape)
    ours = outputs_and_gradients(
        lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=is_causal), tensors)
    theirs = outputs_and_gradients(
        lambda q, k, v: reference_sdpa(q, k, v, is_causal=is_causal), tensors)
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, theirs):
        assert a.shape == b.shape == tensors[0].shape, name
        assert relative_error(a, b) <= 1e-10, name


def test_positional_arguments_and_defaults_are_pytorchs():
    q, k, v = random_qkv((2, 30, 8), requires_grad=False)
    # attn_mask, dropout_p, is_causal, scale in PyTorch's order; not causal and 1/sqrt(E) unless
    # asked.
    assert relative_error(pt.scaled_dot_product_attention(q, k, v, None, 0.0, True, 0.25),
                          reference_sdpa(q, k, v, is_causal=True, scale=0.25)) <= 1e-12
    assert relative_error(pt.scaled_dot_product_attention(q, k, v),
                          reference_sdpa(q, k, v, scale=1 / math.sqrt(8))) <= 1e-12
    assert relative_error(pt.scaled_dot_product_attention(q, k, v),
                          reference_sdpa(q, k, v, is_causal=True)) > 1e-3


def test_grouped_query_attention_shares_each_key_value_head_with_its_group():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 8, 40, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 40, 4, generator=gen, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    ours = outputs_and_gradients(
        lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                         enable_gqa=True), (q, k, v))
    theirs = outputs_and_gradients(
        lambda q, k, v: reference_sdpa(q, k, v, is_causal=True, enable_gqa=True), (q, k, v))
    for name, a, b in zip(("o", "dq", "dk", "dv"), ours, theirs):
        assert a.shape == b.shape, name
        assert relative_error(a, b) <= 1e-10, name
    assert ours[2].shape == k.shape  # the group's gradients summed into its key/value head


@pytest.mark.parametrize("is_causal", [True, False])
def test_exact_passes_gradcheck(is_causal):
    tensors = random_qkv((1, 2, 10, 4), seed=5)
    assert gradcheck(lambda q, k, v: pt.scaled_dot_product_attention(q, k, v,
                                                                     is_causal=is_causal),
                     tensors)


def test_polynomial_method_with_a_fixed_plan_passes_gradcheck():
    tensors = random_qkv((1, 2, 16, 4), seed=6)
    with torch.no_grad():  # |scale q . k| <= 2 for these rows, inside the bound fixed below
        for t in tensors[:2]:
            t *= 0.5
    assert gradcheck(lambda q, k, v: pt.scaled_dot_product_attention(
        q, k, v, is_causal=True, method="poly", degree=5, bound=2.0), tensors)


def test_polynomial_method_within_its_certified_error_of_pytorch():
    q, k, v = random_qkv((1, 2, 300, 8), seed=8, requires_grad=False)
    q, k = (torch.nn.functional.normalize(t, dim=-1) for t in (q, k))
    o = pt.scaled_dot_product_attention(q, k, v, is_causal=True, scale=2.0, method="poly",
                                        epsilon=1e-4, bound=2.0)
    error = relative_error(o, reference_sdpa(q, k, v, is_causal=True, scale=2.0))
    assert 0 < error <= 1e-3  # an approximation within a few times epsilon, yet not exact


@pytest.mark.parametrize("arguments, message", [
    (dict(attn_mask=torch.zeros(6, 6)), "attn_mask: polygrad supports no explicit mask"),
    (dict(dropout_p=0.1), r"dropout_p=0.1: .* pass dropout_p=0.0"),
    (dict(epsilon=1e-4), "epsilon set the polynomial method, which method='exact' does not use"),
    (dict(route="paper", chunk=32), "route, chunk set the polynomial method"),
    (dict(method="poly", chunk=0, bound=1.0), "chunk must be a positive int"),
])
def test_what_polygrad_does_not_do_is_refused_by_name(arguments, message):
    q, k, v = random_qkv((1, 2, 6, 4), requires_grad=False)
    with pytest.raises(ValueError, match=message):
        pt.scaled_dot_product_attention(q, k, v, **arguments)


@pytest.mark.parametrize("shapes, message", [
    (((1, 2, 6, 4), (1, 2, 5, 4), (1, 2, 5, 4)), "must have query's length"),
    (((1, 2, 6, 4), (1, 2, 6, 4), (1, 2, 6, 8)), "one head width for all three"),
    (((1, 4, 6, 4), (1, 2, 6, 4), (1, 2, 6, 4)), r"fewer heads need enable_gqa=True"),
    (((3, 4), (3, 4), (3, 4)), None),  # accepted: [length, width]
    (((4,), (4,), (4,)), "at least 2 dimensions"),
])
def test_shapes(shapes, message):
    q, k, v = (torch.randn(s, dtype=torch.float64) for s in shapes)
    if message is None:
        assert pt.scaled_dot_product_attention(q, k, v).shape == shapes[0]
    else:
        with pytest.raises(ValueError, match=message):
            pt.scaled_dot_product_attention(q, k, v)


def test_grouped_query_heads_must_divide():
    q = torch.randn(1, 3, 6, 4)
    k = v = torch.randn(1, 2, 6, 4)
    with pytest.raises(ValueError, match="one number of heads that divides query's"):
        pt.scaled_dot_product_attention(q, k, v, enable_gqa=True)


@pytest.mark.parametrize("call", [
    lambda q, k, v: pt.scaled_dot_product_attention(q, k, v, is_causal=True),
    lambda q, k, v: pt.attention(q, k, v),
])
def test_a_second_order_gradient_is_refused_naming_create_graph(call):
    q, k, v = random_qkv((1, 2, 6, 4))
    o = call(q, k, v)
    with pytest.raises(RuntimeError, match="no second-order gradient.*create_graph=True"):
        torch.autograd.grad(o.square().sum(), (q, k, v), create_graph=True)
    # A first-order gradient of the same graph still works.
    assert all(g.shape == q.shape for g in torch.autograd.grad(o.square().sum(), (q, k, v)))
