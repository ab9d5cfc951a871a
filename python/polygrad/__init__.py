"""polygrad's attention core from Python.

``polygrad.torch`` is the PyTorch API: ``attention()``, a ``torch.autograd.Function`` whose
backward pass is polygrad's, and the ``Attention`` module. ``polygrad._core`` works on NumPy
arrays and needs no PyTorch.

Errors are raised as these exception types (all subclasses of ``polygrad.Error``, itself a
``RuntimeError``): ``ShapeError`` and ``NumericError`` (also ``ValueError``: a wrong shape, a NaN
or infinity in the input) and ``PlanError`` (a request that cannot be met, such as a causal
polynomial plan whose bound would come from the whole sequence).
"""

from ._core import Error, HeadPlan, NumericError, PlanError, ShapeError

__all__ = ["Error", "HeadPlan", "NumericError", "PlanError", "ShapeError"]
