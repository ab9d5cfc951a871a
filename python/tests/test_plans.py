"""The head plans of a call are readable afterwards: from attention_with_plans and the module."""

import torch

import polygrad
import polygrad.torch as pt
from reference import random_qkv


def test_plans_per_sequence_and_head():
    q, k, v = random_qkv((2, 3, 100, 8), requires_grad=False)
    _, plans = pt.attention_with_plans(q, k, v, method="poly", degree=5, qk_norm=2.0, audit=16)
    assert len(plans) == 2 and all(len(heads) == 3 for heads in plans)
    plan = plans[1][2]
    assert isinstance(plan, polygrad.HeadPlan)
    assert (plan.method, plan.route, plan.family) == ("poly", "adjoint", "chebyshev")
    assert plan.degree == 5 and plan.rank == 1287  # C(8 + 5, 5)
    assert plan.bound == 2.0 and plan.bound_source == "qk-norm" and plan.certified
    assert plan.exactly_causal and plan.causal
    assert plan.n == 100 and plan.head_dim == 8
    assert plan.audit_rows == 16 and 0 < plan.audit_error < 1e-2
    assert 0 < plan.exp_error < plan.output_error


def test_exact_plans():
    _, plans = pt.attention_with_plans(*random_qkv((2, 50, 4), requires_grad=False))
    assert len(plans) == 1 and [p.method for p in plans[0]] == ["exact", "exact"]
    assert plans[0][0].exact_cost > 0


def test_auto_chooses_exact_where_the_polynomial_costs_more():
    # n = 64 with a rank of 1287 features: the polynomial would cost far more than exact.
    _, plans = pt.attention_with_plans(*random_qkv((1, 2, 64, 8), requires_grad=False),
                                       method="auto", degree=5, qk_norm=2.0)
    assert [p.method for p in plans[0]] == ["exact", "exact"]
    assert plans[0][0].poly_cost > plans[0][0].exact_cost
    # Decided by predicted seconds, with the rates CTest fixes (POLYGRAD_RATES=table).
    assert 0 < plans[0][0].exact_seconds < plans[0][0].poly_seconds
    assert plans[0][0].rates_source
    assert "predicted" in plans[0][0].describe()


def test_auto_says_why_a_head_has_no_polynomial_plan():
    # Causal with no bound: the polynomial plan is refused, exact runs, and the plan says why.
    _, plans = pt.attention_with_plans(*random_qkv((1, 1, 64, 4), requires_grad=False),
                                       method="auto")
    assert plans[0][0].method == "exact"
    assert "bound R taken from the data" in plans[0][0].poly_refused
    assert "no polynomial plan" in plans[0][0].describe()


def test_module_keeps_the_last_plans():
    layer = pt.Attention(method="poly", route="paper", degree=4, qk_norm=1.0, causal=False)
    q, k, v = random_qkv((1, 2, 30, 4))
    o = layer(q, k, v)
    o.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    assert [p.route for p in layer.plans[0]] == ["paper", "paper"]
    assert layer.describe().startswith("sequence 0 head 0: poly paper chebyshev g=4")
    assert "method='poly'" in repr(layer)
