"""Each bad input raises the documented exception, with a message that says what to change."""

import math

import pytest
import torch

import polygrad
import polygrad.torch as pt
from reference import random_qkv


def qkv(shape=(1, 2, 8, 4), dtype=torch.float64):
    return random_qkv(shape, dtype=dtype, requires_grad=False)


def test_polygrad_errors_are_python_exceptions_of_the_documented_types():
    assert issubclass(polygrad.Error, RuntimeError)
    assert issubclass(polygrad.ShapeError, ValueError)
    assert issubclass(polygrad.ShapeError, polygrad.Error)
    assert issubclass(polygrad.NumericError, ValueError)
    assert issubclass(polygrad.PlanError, polygrad.Error)


def test_mismatched_shapes():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="one shape"):
        pt.attention(q, k[:, :, :5], v)


def test_mismatched_shapes_reach_the_core_as_shape_error():
    q, k, v = qkv()
    with pytest.raises(polygrad.ShapeError, match=r"k has shape \[1, 2, 5, 4\] but q has"):
        polygrad._core.forward(q.numpy(), k[:, :, :5].contiguous().numpy(), v.numpy(),
                               causal=True, scale=1.0)


def test_wrong_number_of_dimensions():
    with pytest.raises(ValueError, match=r"\[batch, heads, n, head_dim\] or \[heads, n, head_dim\]"):
        pt.attention(*(t[0, 0] for t in qkv()))


def test_mismatched_dtypes():
    q, k, v = qkv()
    with pytest.raises(TypeError, match=r"one dtype.*\.to\(q\.dtype\)"):
        pt.attention(q, k.float(), v)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_says_convert_to_float(dtype):
    with pytest.raises(TypeError, match=r"q\.float\(\)"):
        pt.attention(*qkv(dtype=dtype))


def test_integer_tensors():
    with pytest.raises(TypeError, match="float32 or float64"):
        pt.attention(*(torch.ones(1, 2, 8, 4, dtype=torch.int64) for _ in range(3)))


def test_not_a_tensor():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        pt.attention(q.numpy(), k, v)


def test_a_tensor_on_another_device_is_refused_with_the_fix():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"on meta; polygrad runs on the CPU: pass q\.cpu\(\)"):
        pt.attention(q.to("meta"), k, v)


def test_a_non_contiguous_tensor_is_copied_and_gives_the_same_result():
    q, k, v = qkv((1, 8, 2, 4))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # [1, 2, 8, 4], not contiguous
    assert not qt.is_contiguous()
    o = pt.attention(qt, kt, vt)
    assert torch.equal(o, pt.attention(qt.contiguous(), kt.contiguous(), vt.contiguous()))


def test_the_core_refuses_a_non_contiguous_array():
    q, k, v = qkv()
    strided = q.numpy()[:, :, ::2]
    with pytest.raises(polygrad.ShapeError, match="not C-contiguous"):
        polygrad._core.forward(strided, strided, strided, causal=True, scale=1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_input_names_its_index(bad):
    q, k, v = qkv()
    k[0, 1, 5, 2] = bad
    with pytest.raises(polygrad.NumericError, match=r"k contains .* at index \[0, 1, 5, 2\]"):
        pt.attention(q, k, v)


def test_non_finite_output_gradient_names_its_index():
    q, k, v = random_qkv((1, 2, 8, 4))
    o = pt.attention(q, k, v)
    grad = torch.zeros_like(o)
    grad[0, 0, 3, 1] = math.nan
    with pytest.raises(polygrad.NumericError, match=r"grad_output contains NaN at index \[0, 0, 3, 1\]"):
        o.backward(grad)


def test_causal_polynomial_plan_from_the_data_is_refused_naming_the_keywords():
    with pytest.raises(polygrad.PlanError) as refusal:
        pt.attention(*qkv(), method="poly")
    message = str(refusal.value)
    assert "QK normalisation (qk_norm=tau) or a fixed bound (bound=R)" in message
    assert "set allow_causal_data_bound=True" in message
    assert "PolyOptions" not in message and "TransformerConfig" not in message


def test_an_uncertifiable_request_names_only_keywords_python_has():
    # R = 100 cannot be certified in double at any degree: the remedies are the keywords, and
    # neither the maximum degree nor the memory budget, which polygrad.torch does not expose.
    with pytest.raises(polygrad.PlanError) as refusal:
        pt.attention(*qkv(), method="poly", bound=100.0)
    message = str(refusal.value)
    assert "epsilon=" in message
    assert "max_degree" not in message and "memory budget" not in message
    assert "PolyOptions" not in message


def test_the_opt_in_is_reported_in_the_plan():
    _, plans = pt.attention_with_plans(*qkv(), method="poly",
                                       allow_causal_data_bound=True)
    assert not plans[0][0].exactly_causal
    assert "NOT exactly causal" in plans[0][0].describe()


def test_impossible_plan():
    with pytest.raises(polygrad.PlanError, match="degree"):
        pt.attention(*qkv(), method="poly", qk_norm=60.0, epsilon=1e-12)


@pytest.mark.parametrize("options, message", [
    (dict(method="fast"), "method must be one of"),
    (dict(method="poly", route="reverse", qk_norm=1.0), "route must be one of"),
    (dict(method="poly", family="legendre", qk_norm=1.0), "family must be one of"),
    (dict(method="poly", degree=0, qk_norm=1.0), "degree must be a positive int"),
    (dict(method="poly", epsilon=2.0, qk_norm=1.0), r"epsilon must lie in \(0, 1\)"),
    (dict(method="poly", bound=-1.0), "bound must be finite and positive"),
    (dict(qk_norm=0.0), "qk_norm .* must be finite and positive"),
    (dict(qk_norm=2.0, scale=0.5), "qk_norm fixes the scale"),
    (dict(scale=math.inf), "scale must be finite and positive"),
    (dict(degree=4), "method='exact' does not use"),
    (dict(audit=-1, method="poly", qk_norm=1.0), "audit must be an int >= 0"),
    (dict(threads=0), "threads must be a positive int"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        pt.attention(*qkv(), **options)


def test_backward_with_arrays_of_another_shape():
    q, k, v = qkv()
    o, saved = polygrad._core.forward(q.numpy(), k.numpy(), v.numpy(), causal=True, scale=1.0)
    small = q[:, :, :4].contiguous().numpy()
    with pytest.raises(polygrad.ShapeError, match="in backward, but the forward pass had"):
        saved.backward(small, small, small, small, small)


def test_unknown_module_option():
    with pytest.raises(TypeError, match=r"unknown attention options \['casual'\]"):
        pt.Attention(casual=True)


def test_empty_sequence():
    q, k, v = (torch.zeros(1, 2, 0, 4, dtype=torch.float64) for _ in range(3))
    with pytest.raises(polygrad.ShapeError, match=r"at least one entry in every dimension, got shape \[1, 2, 0, 4\]"):
        pt.attention(q, k, v)
