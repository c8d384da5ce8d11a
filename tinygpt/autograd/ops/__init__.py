"""Every differentiable op, grouped by kind; importing this package registers them all."""

from . import attention, elementwise, matmul, nn, reduce, rotary, shape  # noqa: F401
