"""Every differentiable op, grouped by kind; importing this package registers them all."""

from . import attention, elementwise, fused, matmul, reduce, rotary, shape  # noqa: F401
