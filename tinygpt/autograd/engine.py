"""The backward pass (floor 2).

Notation used in every op: `dy` is the gradient of the final scalar L with respect to
an op's output, dL/dy; `dx`, `dw`, `db` are dL/dx, dL/dw, dL/db for its inputs.

`backward(root)` visits the graph in reverse topological order, so each tensor's
gradient is complete (summed over every use) before it flows on to its inputs. The
order is built with an explicit stack, never recursion, so a chain of 100,000 ops works
at any recursion limit. Imports: backend, function (for the tracer hook).
"""

from .backend import array_module
from .function import get_tracer

_FREED = ("this tensor's graph was freed by an earlier backward(); call backward("
          "retain_graph=True) the first time to go through it twice")


def topological_order(root, every_input=False, freed_message=_FREED):
    """The tensors of root's graph, each after all of its inputs (root last): an
    iterative depth-first search with post-order emission.

    By default only inputs that need a gradient are followed (what backward walks);
    `every_input=True` follows constants, indices and masks too (what a drawing shows),
    in input order.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        # Marked when expanded, not when pushed: a tensor pushed earlier by one consumer
        # and reached again from a later consumer must still be emitted after that one.
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is None:
            continue
        parents = ctx.parents
        if parents is None:
            raise RuntimeError(freed_message)
        if every_input:
            # Reversed, so the first input is expanded (and numbered) first.
            stack.extend((p, False) for p in reversed(parents) if id(p) not in visited)
        else:
            stack.extend((p, False) for p, need in zip(parents, ctx.needs_grad)
                         if need and id(p) not in visited)
    return order


def backward(root, grad=None, retain_graph=False):
    """Accumulate dL/d(leaf) into `.grad` for every leaf of `root`'s graph (L = root,
    or the dot product of root with `grad` when root is not a scalar)."""
    from .tensor import Tensor  # engine is imported by tensor.py; import at call time
    if not root.requires_grad:
        raise RuntimeError(
            "backward() on a tensor that does not require grad: no input of its graph has "
            "requires_grad=True (or it was computed under no_grad)")
    xp_data = root.data
    if grad is None:
        if xp_data.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a one-element output, got shape "
                f"{tuple(root.shape)}; pass grad= of that shape (for example ones)")
        grad = array_module(xp_data).ones_like(xp_data)
    else:
        grad = grad.data if isinstance(grad, Tensor) else grad
        if tuple(grad.shape) != tuple(root.shape):
            raise ValueError(
                f"backward(): grad of shape {tuple(grad.shape)} does not match the output's "
                f"shape {tuple(root.shape)}")
        if type(grad) is not type(xp_data):
            raise RuntimeError(
                f"backward(): grad is on another device than the output ({root.device})")
    grads = {id(root): grad}
    # The caller's grad array counts as handed out: a leaf reached by it unchanged (x + 0)
    # gets a copy, so updating x.grad in place never writes into the caller's tensor.
    handed_out = {id(grad)}
    tracer = get_tracer()      # a `trace()` in progress times each op's backward
    for node in reversed(topological_order(root)):
        dy = grads.pop(id(node), None)
        if dy is None:
            continue
        if node._hooks:
            for hook in node._hooks:
                new = hook(Tensor(dy))
                if new is not None:
                    dy = new.data if isinstance(new, Tensor) else new
        ctx = node._ctx
        if ctx is None or node._retains_grad:
            _accumulate_leaf(node, dy, handed_out)
            if ctx is None:
                continue
        if ctx.parents is None:
            raise RuntimeError(_FREED)
        dxs = ctx.backward(ctx, dy) if tracer is None else tracer.backward(ctx, dy)
        for parent, need, dx in zip(ctx.parents, ctx.needs_grad, dxs):
            if not need or dx is None:
                continue
            key = id(parent)
            previous = grads.get(key)
            # Out of place: dx may be the very array another input received (add passes
            # dy to both) or a read-only broadcast view.
            grads[key] = dx if previous is None else previous + dx
        if not retain_graph:
            # Free the graph: drop the inputs and the saved arrays (the activations).
            ctx.parents = None
            ctx.saved = None


def _accumulate_leaf(node, dy, handed_out):
    """node.grad += dy, making sure the array stored in .grad is one this tensor owns
    (not a view, not shared with another leaf) so that in-place updates are safe."""
    from .tensor import Tensor
    if dy.shape != node.data.shape:
        dy = dy.reshape(node.data.shape)
    if dy.dtype != node.data.dtype:
        dy = dy.astype(node.data.dtype)
    if node.grad is None:
        if id(dy) in handed_out or dy.base is not None or not getattr(
                dy.flags, "writeable", True):
            dy = dy.copy()
        handed_out.add(id(dy))
        node.grad = Tensor(dy)
    else:
        node.grad.data += dy
