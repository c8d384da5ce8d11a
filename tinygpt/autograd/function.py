"""The op base class, the op registry and `no_grad` (floor 2).

An op is a subclass of `Function` with two static methods that work on raw backend
arrays, never on Tensors:

    forward(ctx, *arrays, **params)  -> output array
    backward(ctx, dy)                -> one gradient array (or None) per input array

`ctx` is the op instance itself: forward stores on it what backward needs (`ctx.save`),
and the engine stores on it the input tensors (`ctx.parents`) and which of them want a
gradient (`ctx.needs_grad`). `Function.apply` runs forward and, when a gradient is wanted,
links the output tensor to its ctx: that link is the graph.

Reference ops and fast kernels. Every op registered here is a reference implementation:
plain array code that follows its docstring's formula. An op may also have fast kernels
for a device (`register_kernel`: blocked, multi-threaded CPU code in `autograd/fast/`),
each a subclass of the reference with the same name, tested equal to it. `apply` runs
the fast kernel of the inputs' device where there is one, unless `use_reference_ops()`
(or the environment variable TINYGPT_REFERENCE_OPS=1) asks for the references
everywhere. Imports: backend, tensor.
"""

import os
import threading

import numpy as np

from . import backend

OPS = {}                    # name -> Function subclass: every differentiable op (the reference)
KERNELS = {}                # name -> {device: fast kernel class}
_state = threading.local()  # grad mode and tracer, per thread as in PyTorch
# Fast kernels are chosen by default; TINYGPT_REFERENCE_OPS=1 starts with the references.
_fast = {"on": os.environ.get("TINYGPT_REFERENCE_OPS", "0") in ("", "0")}


def register(name):
    """Class decorator: add an op to the registry under `name` (gradient-checked by the tests)."""
    def wrap(cls):
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        cls.name = name
        cls.kernels = KERNELS.setdefault(name, {})
        OPS[name] = cls
        return cls
    return wrap


def register_kernel(name, devices=("cpu",), dtypes=None):
    """Class decorator: a fast kernel for the registered op `name` on `devices`. The class
    must subclass that op's reference class (so it keeps its name and docstring contract)
    and is run by `apply` in its place on those devices while fast kernels are on, for
    inputs of `dtypes` only (the dtype of the op's first floating input; None: any), the
    reference running the others."""
    def wrap(cls):
        reference = OPS.get(name)
        if reference is None:
            raise ValueError(f"fast kernel {cls.__name__} for {name!r}: no op is registered "
                             f"under that name (register the reference op first)")
        if not issubclass(cls, reference):
            raise TypeError(f"fast kernel {cls.__name__} must subclass the reference op "
                            f"{reference.__name__}")
        for device in devices:
            if device not in ("cpu", "cuda"):
                raise ValueError(f"fast kernel {cls.__name__}: unknown device {device!r}")
            if device in reference.kernels:
                raise ValueError(f"op {name!r} has two fast kernels for {device!r}: "
                                 f"{reference.kernels[device].__name__} and {cls.__name__}")
            reference.kernels[device] = cls
        cls.dtypes = None if dtypes is None else frozenset(np.dtype(d) for d in dtypes)
        return cls
    return wrap


class use_reference_ops:
    """Run every op on its reference implementation (enabled=True) or on the fast kernels
    where they exist (enabled=False, the default state). Takes effect at once, for the
    whole process; used as a context manager, it restores the previous state on exit.

    >>> tg.use_reference_ops()              # from now on, plain reference code everywhere
    >>> with tg.use_reference_ops(False):   # fast kernels inside this block only
    ...     loss = model(x, y)[1]
    """

    def __init__(self, enabled=True):
        self.previous = _fast["on"]
        _fast["on"] = not enabled

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _fast["on"] = self.previous


def reference_ops_enabled():
    """True when every op runs its reference implementation (see `use_reference_ops`)."""
    return not _fast["on"]


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
    kernels = None          # {device: fast kernel class}, set by `register`
    dtypes = None           # a fast kernel's input dtypes (None: any), set by `register_kernel`

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
        kind = type(inputs[0].data)
        impl = cls
        if cls.kernels and _fast["on"]:
            impl = cls.kernels.get("cpu" if kind is np.ndarray else "cuda", cls)
            if impl.dtypes is not None and _floating_dtype(inputs) not in impl.dtypes:
                impl = cls
        ctx = impl()
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
            out = impl.forward(ctx, *[t.data for t in inputs], **params)
        else:
            out = tracer.forward(impl, ctx, inputs, params)
        # Build the output without Tensor.__init__'s checks: the op made a valid array.
        result = _new_tensor(Tensor)
        if type(out) is not kind and not backend.is_array(out):
            # A NumPy scalar (a reduction over all of a NumPy array gives one) becomes a
            # 0-d array of the inputs' device; an array of the other device (`to_device`'s
            # output) stays where the op put it.
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


def _floating_dtype(inputs):
    """The dtype of the first floating input (a kernel's dtype restriction looks at it)."""
    for t in inputs:
        if t.data.dtype.kind == "f":
            return t.data.dtype
    return None


def _device_mismatch(name, inputs):
    devices = [t.device for t in inputs]
    first = devices[0]
    other = next(d for d in devices if d != first)
    raise RuntimeError(
        f"{name}: expected all tensors on one device, got {first!r} and {other!r}; "
        f"move them with .to(device) first")


_new_tensor = object.__new__


from .tensor import Tensor  # noqa: E402  (tensor.py imports this module first)
