"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as PyTorch (floor 4).

For each parameter p with gradient g, at step t = 1, 2, ...:

    p   <- p * (1 - lr * weight_decay)            decoupled decay, before the Adam step
    m   <- beta1 * m + (1 - beta1) * g            first moment (mean of g)
    v   <- beta2 * v + (1 - beta2) * g^2          second moment (mean of g^2)
    m_hat = m / (1 - beta1^t)                     bias corrections: m and v start at 0
    v_hat = v / (1 - beta2^t)
    p   <- p - lr * m_hat / (sqrt(v_hat) + eps)

The decay is "decoupled": it shrinks p directly rather than being added to g (which Adam
would then rescale by 1/sqrt(v_hat), decaying rarely-updated weights the most).

`adamw_reference` below is these lines, one for one: the update under
`tg.use_reference_ops()` (`--reference_ops true`). By default a step runs the fast
versions beside it (adamw_fast.py: the bias corrections folded into two scalars, blocks
on tinygpt's threads on the CPU, one fused kernel over flat buffers on a GPU, see
adamw_flat.py), each tested equal to the reference (tests/optim/test_adamw_fast.py).
Imports: autograd (backend, function), optim.optimizer, optim.adamw_fast, optim.adamw_flat.
"""

from ..autograd import backend
from ..autograd.function import reference_ops_enabled
from . import adamw_fast
from .adamw_flat import FlatAdamW
from .optimizer import Optimizer, _check_number, int8_hint


class AdamW(Optimizer):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01).

    The defaults are PyTorch's. Any group's "lr" may be changed between steps (a schedule
    does `group["lr"] = lr`). State per parameter: "step" (an int), "exp_avg" (m) and
    "exp_avg_sq" (v), arrays of the parameter's shape, dtype and device.

    >>> opt = AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    >>> loss.backward(); opt.step(); opt.zero_grad()
    """

    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self._validate_group(defaults)
        super().__init__(params, defaults)
        self._flat = FlatAdamW()        # the GPU's flat buffers, made by the first step

    def _validate_group(self, group):
        _check_number("lr", group["lr"])
        _check_number("eps", group["eps"])
        _check_number("weight_decay", group["weight_decay"])
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            _check_number(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
        group["betas"] = tuple(betas)

    def _update(self, group, p, g, state, scratch):
        """The update of one parameter: the reference, `adamw_reference`."""
        self._init_state(p.data, state)
        beta1, beta2 = group["betas"]
        adamw_reference(backend.array_module(p.data), p.data, g, state["exp_avg"],
                        state["exp_avg_sq"], state["step"], float(group["lr"]), float(beta1),
                        float(beta2), float(group["eps"]), float(group["weight_decay"]))

    @staticmethod
    def _init_state(w, state):
        """Create the moments (zeros) on the first step; count the step."""
        if not state:
            xp = backend.array_module(w)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(w)
            state["exp_avg_sq"] = xp.zeros_like(w)
        state["step"] += 1

    def _update_all(self, items):
        """Every parameter's update: the reference (`_update` for each) under
        `tg.use_reference_ops()`, else the fast versions (adamw_fast.py)."""
        if reference_ops_enabled() or not items:
            return super()._update_all(items)
        return adamw_fast.update_all(self, items)


def adamw_reference(xp, p, g, m, v, t, lr, beta1, beta2, eps, weight_decay):
    """Step t of AdamW for the array p with gradient g and moments m, v, in place: the
    module docstring's formula, one line per equation (as PyTorch's AdamW orders them)."""
    p *= 1.0 - lr * weight_decay                        # decoupled decay, first
    m[...] = beta1 * m + (1.0 - beta1) * g
    v[...] = beta2 * v + (1.0 - beta2) * g * g
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    p -= lr * (m_hat / (xp.sqrt(v_hat) + eps))


def configure_param_groups(named_params, weight_decay):
    """Split parameters into a decayed group and an undecayed one, as nanoGPT does.

    Tensors with 2 or more dimensions (the weights of matmuls and embeddings) are decayed;
    those with fewer (biases, LayerNorm gains and biases) are not: shrinking a gain or a
    bias towards 0 does not regularise anything. Parameters with requires_grad=False are
    left out, and a tensor listed under two names (tied weights) is kept once.

    named_params: (name, tensor) pairs, e.g. `model.named_parameters()`, or a dict.
    Returns [{"params": decayed, "weight_decay": weight_decay},
             {"params": undecayed, "weight_decay": 0.0}], ready for `AdamW(groups, ...)`.
    """
    weight_decay = _check_number("weight_decay", weight_decay)
    if hasattr(named_params, "items"):
        named_params = named_params.items()
    decay, no_decay, seen = [], [], set()
    for item in named_params:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(
                f"configure_param_groups expects (name, tensor) pairs such as "
                f"model.named_parameters(), got {type(item).__name__}")
        name, p = item
        if int8_hint(p):
            raise TypeError(f"configure_param_groups: {name} has dtype {p.dtype}{int8_hint(p)}")
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
