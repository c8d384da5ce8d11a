"""Every differentiable op, grouped by kind; importing this package registers them all."""

from . import attention, elementwise, matmul, nn, reduce, shape  # noqa: F401
