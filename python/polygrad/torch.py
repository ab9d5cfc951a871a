"""polygrad attention for PyTorch: exact or polynomial-method attention with polygrad's backward.

``scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
scale=None, enable_gqa=False, *, method="exact", ...)`` has the signature and semantics of
``torch.nn.functional.scaled_dot_product_attention``, so that swapping one for the other is one
line; what polygrad does not implement (an explicit mask, dropout, keys of another length) is an
error naming the argument. ``attention(q, k, v)`` is the older spelling: it computes softmax(scale q k^T + mask) v per head, like
``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``
(PyTorch 2.0 and later), on CPU tensors [B, H, n, d_h] or [H, n, d_h]. Its gradient is
polygrad's: the exact FlashAttention-style backward, or the polynomial method's (route
"adjoint": the exact gradient of the approximate forward; route "paper": the paper's formulas),
design.md sections 2-4. Differences from scaled_dot_product_attention: ``causal`` defaults to
True, there is no attention mask or dropout, and k and v have q's length.

Inputs: float32 or float64 CPU tensors of one dtype and one shape. Non-contiguous tensors are
copied to contiguous ones (as most PyTorch operators do); everything else that polygrad cannot
use -- a CUDA tensor, float16 or bfloat16, integers, mismatched dtypes -- raises TypeError or
ValueError saying what to change. polygrad's own errors arrive as polygrad.ShapeError (a
ValueError), polygrad.NumericError (a ValueError: NaN or infinity in the input or gradient) and
polygrad.PlanError (a request that cannot be met).
"""

import math

import torch
from . import _core

__all__ = ["scaled_dot_product_attention", "attention", "attention_with_plans", "Attention"]

_METHODS = ("exact", "poly", "auto")
_ROUTES = ("adjoint", "paper")
_FAMILIES = ("chebyshev", "taylor")


class _AttentionFunction(torch.autograd.Function):
    """o = attention(q, k, v) on [B, H, n, d_h]; backward through polygrad.

    ``options`` are the keywords of _core.forward; ``sink`` (a list) receives the SavedAttention,
    whose plans() the caller reads.
    """

    @staticmethod
    def forward(ctx, q, k, v, options, sink):
        o, saved = _core.forward(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(),
                                 **options)
        o = torch.from_numpy(o)
        ctx.polygrad_saved = saved
        ctx.save_for_backward(q, k, v, o)
        sink.append(saved)
        return o

    @staticmethod
    def backward(ctx, grad_o):
        # The autograd engine runs a backward pass with gradients enabled exactly when it was
        # asked for create_graph=True, i.e. for a gradient that can itself be differentiated.
        if torch.is_grad_enabled():
            raise RuntimeError(
                "polygrad.torch attention has no second-order gradient: its backward pass is "
                "polygrad's own kernel, which autograd cannot differentiate, so backward("
                "create_graph=True) / torch.autograd.grad(..., create_graph=True) (a gradient "
                "penalty, gradgradcheck, a Hessian-vector product) cannot go through it; use "
                "create_graph=False, or torch.nn.functional.scaled_dot_product_attention where "
                "second derivatives are needed")
        q, k, v, o = ctx.saved_tensors
        grad_o = grad_o.to(o.dtype).contiguous()  # an expanded gradient (of a sum) is strided
        dq, dk, dv = ctx.polygrad_saved.backward(q.detach().numpy(), k.detach().numpy(),
                                                 v.detach().numpy(), o.numpy(), grad_o.numpy())
        return torch.from_numpy(dq), torch.from_numpy(dk), torch.from_numpy(dv), None, None


def _check_tensor(t, name):
    """t as a contiguous CPU tensor of 4 dimensions (a leading batch of 1 added to 3)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(f"{name} is on {t.device}; polygrad runs on the CPU: pass {name}.cpu() "
                         f"(and move the result back with .to('{t.device}'))")
    if t.layout != torch.strided:
        raise ValueError(f"{name} has layout {t.layout}; polygrad needs dense tensors: pass "
                         f"{name}.to_dense()")
    if t.dtype not in (torch.float32, torch.float64):
        hint = (f"{name}.float() (polygrad has no half-precision kernels)"
                if t.dtype in (torch.float16, torch.bfloat16) else f"{name}.float() or {name}.double()")
        raise TypeError(f"{name} has dtype {t.dtype}; polygrad computes in float32 or float64: "
                        f"pass {hint}")
    if t.dim() not in (3, 4):
        raise ValueError(f"{name} must be [batch, heads, n, head_dim] or [heads, n, head_dim], "
                         f"got {t.dim()} dimensions of shape {tuple(t.shape)}")
    return t.contiguous()


# The keywords that steer the polynomial method, with the value each takes when not given. A
# call with method="exact" that gives any of them is refused rather than silently ignored.
_POLY_DEFAULTS = dict(route="adjoint", family="chebyshev", degree=None, epsilon=1e-3, bound=None,
                      audit=0, allow_causal_data_bound=False, chunk=64)


def _options(*, causal, method, threads, **poly):
    """The keywords of _core.forward, each checked; ``poly`` holds _POLY_DEFAULTS' keywords, None
    where the caller left them out."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if method == "exact":
        given = [name for name in _POLY_DEFAULTS if poly[name] is not None]
        if given:
            raise ValueError(f"{', '.join(given)} set the polynomial method, which "
                             f"method='exact' does not use: pass method='poly' or 'auto', or "
                             f"leave {'them' if len(given) > 1 else 'it'} out")
    poly = {name: _POLY_DEFAULTS[name] if value is None else value for name, value in poly.items()}
    route, family, degree, epsilon = poly["route"], poly["family"], poly["degree"], poly["epsilon"]
    bound, audit, chunk = poly["bound"], poly["audit"], poly["chunk"]
    if route not in _ROUTES:
        raise ValueError(f"route must be one of {_ROUTES}, got {route!r}")
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {_FAMILIES}, got {family!r}")
    if degree is not None and (not isinstance(degree, int) or degree < 1):
        raise ValueError(f"degree must be a positive int (or None: the smallest degree whose "
                         f"certified error is <= epsilon), got {degree!r}")
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must lie in (0, 1), got {epsilon!r}")
    if bound is not None and not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be finite and positive (or None), got {bound!r}")
    if not isinstance(audit, int) or audit < 0:
        raise ValueError(f"audit must be an int >= 0 (query rows per head), got {audit!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int (rows per causal chunk), got {chunk!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int (or None: OpenMP's default), "
                         f"got {threads!r}")
    return dict(causal=bool(causal), method=method, route=route, family=family,
                degree=degree or 0, epsilon=float(epsilon), bound=float(bound or 0.0),
                audit=audit, allow_causal_data_bound=bool(poly["allow_causal_data_bound"]),
                chunk=chunk, threads=threads or 0)


def attention_with_plans(q, k, v, *, causal=True, method="exact", route=None, family=None,
                         degree=None, epsilon=None, bound=None, qk_norm=None, scale=None,
                         audit=None, allow_causal_data_bound=None, threads=None, chunk=None):
    """(o, plans): attention() and its head plans, plans[b][h] a polygrad.HeadPlan."""
    tensors = [_check_tensor(t, name) for t, name in ((q, "q"), (k, "k"), (v, "v"))]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1:
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype} and "
                        f"{v.dtype}: convert them with .to(q.dtype)")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"q, k and v must have one shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")
    q, k, v = tensors
    if qk_norm is not None:
        if scale is not None:
            raise ValueError("qk_norm fixes the scale (it is tau): pass scale=None with qk_norm")
        if not (math.isfinite(qk_norm) and qk_norm > 0):
            raise ValueError(f"qk_norm (tau) must be finite and positive, got {qk_norm!r}")
        # Unit rows of q and k, through PyTorch's autograd; every score then lies in [-tau, tau].
        q = torch.nn.functional.normalize(q, dim=-1)
        k = torch.nn.functional.normalize(k, dim=-1)
        scale, score_bound = float(qk_norm), float(qk_norm)
    else:
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and positive, got {scale!r}")
        score_bound = 0.0
    options = _options(causal=causal, method=method, route=route, family=family, degree=degree,
                       epsilon=epsilon, bound=bound, audit=audit,
                       allow_causal_data_bound=allow_causal_data_bound, threads=threads,
                       chunk=chunk)
    options.update(scale=scale, score_bound=score_bound)
    unbatched = q.dim() == 3
    if unbatched:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    sink = []
    o = _AttentionFunction.apply(q, k, v, options, sink)  # refusals name these keywords
    return (o.squeeze(0) if unbatched else o), sink[0].plans()


def attention(q, k, v, *, causal=True, method="exact", route=None, family=None, degree=None,
              epsilon=None, bound=None, qk_norm=None, scale=None, audit=None,
              allow_causal_data_bound=None, threads=None, chunk=None):
    """softmax(scale q k^T + causal mask) v for each head of q, k, v ([B, H, n, d_h] or
    [H, n, d_h], float32 or float64 CPU tensors), differentiable through polygrad's backward.

    method: "exact" (tiled exact attention), "poly" (the polynomial method in every head) or
        "auto" (per head, whichever polygrad predicts faster: design.md section 6).
    qk_norm: tau; q and k rows are normalised to unit length and the scale is tau, so every
        score lies in [-tau, tau] (a certified bound for the polynomial method).
    scale: the factor c of the scores; 1 / sqrt(head_dim) when None (as PyTorch's).
    threads: OpenMP threads (None: OpenMP's default).

    The polynomial method's keywords (None: the default in brackets; any of them given with
    method="exact" is a ValueError, since exact attention would ignore it):
    route: the polynomial backward, "adjoint" (exact gradient of the approximate forward) or
        "paper" (the paper's formulas) ["adjoint"].
    family, degree, epsilon: the polynomial approximating exp: "chebyshev" or "taylor"
        ["chebyshev"], a fixed degree, or (degree None) the smallest degree whose certified
        relative error is <= epsilon [1e-3].
    bound: R, a bound on every |score| fixed in advance. Without it R comes from qk_norm or, not
        causal, from the data; causal with R from the data is a polygrad.PlanError unless
        allow_causal_data_bound [False] (then row i depends weakly on later rows through R).
    audit: query rows per head compared against exact attention (the plans' audit_error) [0].
    chunk: rows per causal chunk [64].
    """
    o, _ = attention_with_plans(q, k, v, causal=causal, method=method, route=route,
                                family=family, degree=degree, epsilon=epsilon, bound=bound,
                                qk_norm=qk_norm, scale=scale, audit=audit,
                                allow_causal_data_bound=allow_causal_data_bound,
                                threads=threads, chunk=chunk)
    return o


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 method="exact", route=None, family=None, degree=None,
                                 epsilon=None, bound=None, audit=None,
                                 allow_causal_data_bound=None, threads=None, chunk=None):
    """``torch.nn.functional.scaled_dot_product_attention`` computed by polygrad, with the same
    positional arguments, defaults and result, and polygrad's backward pass.

    query [..., L, E], key [..., S, E], value [..., S, E]: float32 or float64 CPU tensors with
    the same leading dimensions (the last but two is the heads dimension; with enable_gqa, key
    and value may have fewer heads, a divisor of query's, each shared by a group of consecutive
    query heads as in PyTorch). Returns [..., L, E].

    What polygrad does not implement is a ValueError naming the argument: an attn_mask (only
    is_causal's lower-triangular mask is supported), dropout_p other than 0, keys of another
    length than the queries (L != S) and values of another width than the keys.

    The keywords after ``*`` are polygrad's: method "exact" (the default: what PyTorch computes,
    to rounding), "poly" or "auto", and the polynomial method's keywords, as in attention(). A
    polynomial method with is_causal needs a bound R fixed in advance (``bound=``; for example
    scale * max |q| * max |k| when query and key rows have bounded norms).
    """
    if attn_mask is not None:
        raise ValueError("attn_mask: polygrad supports no explicit mask, only the causal one: "
                         "pass attn_mask=None, with is_causal=True for a lower-triangular mask")
    if dropout_p != 0.0:
        raise ValueError(f"dropout_p={dropout_p!r}: polygrad's attention has no dropout: pass "
                         f"dropout_p=0.0")
    for t, name in ((query, "query"), (key, "key"), (value, "value")):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have at least 2 dimensions ([..., length, width]), "
                             f"got shape {tuple(t.shape)}")
    if key.shape[-2] != query.shape[-2] or value.shape[-2] != query.shape[-2]:
        raise ValueError(f"key and value have length {key.shape[-2]} and {value.shape[-2]}, query "
                         f"{query.shape[-2]}: polygrad attends within one sequence, so key and "
                         f"value must have query's length (L == S)")
    if key.shape[-1] != query.shape[-1] or value.shape[-1] != query.shape[-1]:
        raise ValueError(f"query, key and value have widths {query.shape[-1]}, {key.shape[-1]} "
                         f"and {value.shape[-1]}: polygrad needs one head width for all three")
    if enable_gqa and query.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        heads, kv_heads = query.shape[-3], key.shape[-3]
        if kv_heads == 0 or heads % kv_heads or value.shape[-3] != kv_heads:
            raise ValueError(f"enable_gqa: query has {heads} heads, key {kv_heads} and value "
                             f"{value.shape[-3]}: key and value need one number of heads that "
                             f"divides query's")
        # Each key/value head serves a group of heads // kv_heads consecutive query heads;
        # autograd sums the group's gradients back into it.
        key = key.repeat_interleave(heads // kv_heads, dim=-3)
        value = value.repeat_interleave(heads // kv_heads, dim=-3)
    if key.shape != query.shape or value.shape != query.shape:
        hint = (" (key and value with fewer heads need enable_gqa=True)"
                if query.dim() >= 3 and key.shape[:-3] == query.shape[:-3] else "")
        raise ValueError(f"query, key and value must have one shape, got {tuple(query.shape)}, "
                         f"{tuple(key.shape)} and {tuple(value.shape)}{hint}")
    # polygrad takes [B, H, n, E]; leading dimensions other than that are independent heads.
    shape = query.shape
    if query.dim() != 4:
        query, key, value = (t.reshape(1, -1, shape[-2], shape[-1]) for t in (query, key, value))
    o, _ = attention_with_plans(query, key, value, causal=is_causal, method=method, route=route,
                                family=family, degree=degree, epsilon=epsilon, bound=bound,
                                scale=scale, audit=audit,
                                allow_causal_data_bound=allow_causal_data_bound, threads=threads,
                                chunk=chunk)
    return o.reshape(shape)


class Attention(torch.nn.Module):
    """attention() as a module with fixed options; ``plans`` holds the last call's head plans
    (plans[b][h], a polygrad.HeadPlan) and ``describe()`` prints them a line per head."""

    def __init__(self, **options):
        super().__init__()
        unknown = set(options) - set(attention_with_plans.__kwdefaults__)
        if unknown:
            raise TypeError(f"unknown attention options {sorted(unknown)}; the options are "
                            f"{sorted(attention_with_plans.__kwdefaults__)}")
        self.options = options
        self.plans = []

    def forward(self, q, k, v):
        o, self.plans = attention_with_plans(q, k, v, **self.options)
        return o

    def describe(self):
        return "\n".join(f"sequence {b} head {h}: {plan.describe()}"
                         for b, heads in enumerate(self.plans) for h, plan in enumerate(heads))

    def extra_repr(self):
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
