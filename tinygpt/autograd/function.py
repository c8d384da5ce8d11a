"""The op base class, the op registry and `no_grad` (floor 2).

An op is a subclass of `Function` with two static methods that work on raw backend
arrays, never on Tensors:

    forward(ctx, *arrays, **params)  -> output array
    backward(ctx, dy)                -> one gradient array (or None) per input array

`ctx` is the op instance itself: forward stores on it what backward needs (`ctx.save`),
and the engine stores on it the input tensors (`ctx.parents`) and which of them want a
gradient (`ctx.needs_grad`). `Function.apply` runs forward and, when a gradient is wanted,
links the output tensor to its ctx: that link is the graph. Imports: backend, tensor.
"""

import threading

from . import backend

OPS = {}                    # name -> Function subclass: every differentiable op
_state = threading.local()  # grad mode and tracer, per thread as in PyTorch


def register(name):
    """Class decorator: add an op to the registry under `name` (gradient-checked by the tests)."""
    def wrap(cls):
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        cls.name = name
        OPS[name] = cls
        return cls
    return wrap


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


class no_grad:
    """Context manager (and decorator) under which no op records a graph.

    >>> with tg.no_grad():
    ...     y = model(x)          # y.requires_grad is False, nothing is kept for backward
    """

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.grad_enabled = False

    def __exit__(self, *exc):
        _state.grad_enabled = self.prev

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)
        wrapped.__name__ = fn.__name__
        wrapped.__doc__ = fn.__doc__
        return wrapped


class enable_grad(no_grad):
    """Context manager that turns graph recording back on inside `no_grad`."""

    def __enter__(self):
        self.prev = is_grad_enabled()
        _state.grad_enabled = True


def get_tracer():
    """The active tracer (see `trace`), or None."""
    return getattr(_state, "tracer", None)


def set_tracer(tracer):
    _state.tracer = tracer


class Function:
    """Base of every op; an instance is the ctx of one call (see the module docstring)."""

    __slots__ = ("parents", "needs_grad", "saved", "__dict__")
    name = "function"

    def save(self, *arrays):
        """Keep arrays for backward (only the ones it needs: memory is the activations)."""
        self.saved = arrays

    @staticmethod
    def forward(ctx, *arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, dy):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on Tensors `inputs` (all on one device) and return the output Tensor.

        Non-tensor arguments (axes, shapes, flags) go in `params` and reach forward as
        keyword arguments.
        """
        ctx = cls()
        kind = type(inputs[0].data)
        requires_grad = False
        for t in inputs:
            if type(t.data) is not kind:
                _device_mismatch(cls.name, inputs)
            if t.requires_grad:
                requires_grad = True
        if requires_grad and getattr(_state, "grad_enabled", True):
            ctx.needs_grad = tuple([t.requires_grad for t in inputs])
        else:
            requires_grad = False
            ctx.needs_grad = None
        tracer = getattr(_state, "tracer", None)
        if tracer is None:
            out = cls.forward(ctx, *[t.data for t in inputs], **params)
        else:
            out = tracer.forward(cls, ctx, inputs, params)
        # Build the output without Tensor.__init__'s checks: the op made a valid array.
        result = _new_tensor(Tensor)
        if type(out) is not kind:
            out = backend.array_module(inputs[0].data).asarray(out)
        result.data = out
        result.grad = None
        result.requires_grad = requires_grad
        result._hooks = None
        result._retains_grad = False
        result.name = None
        if requires_grad:
            ctx.parents = inputs
            result._ctx = ctx
        else:
            result._ctx = None
        return result


def _device_mismatch(name, inputs):
    devices = [t.device for t in inputs]
    first = devices[0]
    other = next(d for d in devices if d != first)
    raise RuntimeError(
        f"{name}: expected all tensors on one device, got {first!r} and {other!r}; "
        f"move them with .to(device) first")


_new_tensor = object.__new__


from .tensor import Tensor  # noqa: E402  (tensor.py imports this module first)
