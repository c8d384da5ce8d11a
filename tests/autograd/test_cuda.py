"""The op suite on CUDA (CuPy) against NumPy: every case of `tinygpt.autograd.checks` run on
device="cuda" gives the CPU's forward values and gradients in float64 and float32, and
passes its gradient check there. Skips, with the reason, where CuPy or a GPU is missing.
"""

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import Tensor, backend, gradcheck
from tinygpt.autograd.checks import CASES, GRADCHECK_OPTIONS, RANDOM_CASES, inputs_on

pytestmark = pytest.mark.cuda

# float32 on two devices differs by summation order in reductions and BLAS: a few ulps of
# the operands' magnitude.
CROSS_DEVICE_TOLERANCE = {np.float64: (1e-10, 1e-12), np.float32: (1e-4, 1e-5)}


@pytest.fixture(scope="module", autouse=True)
def cuda():
    try:
        backend.array_module_for_device("cuda")
    except RuntimeError as e:
        pytest.skip(f"CUDA unavailable: {e}")


def run(fn, inputs, upstream):
    """Outputs and input gradients of fn on `inputs`, as NumPy arrays."""
    outs = fn(*inputs)
    outs = (outs,) if isinstance(outs, Tensor) else tuple(outs)
    total = None
    for y, u in zip(outs, upstream):
        term = (y * Tensor(backend.to_device(u.astype(y.dtype), y.device))).sum()
        total = term if total is None else total + term
    total.backward()
    grads = [t.grad.numpy() if t.grad is not None else None for t in inputs if t.requires_grad]
    return [y.numpy() for y in outs], [y.device for y in outs], grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(set(CASES) - RANDOM_CASES))
def test_case_on_cuda_matches_numpy(name, dtype):
    fn, inputs = CASES[name](np.random.default_rng(0))
    with tg.no_grad():
        probe = fn(*inputs)
    probe = (probe,) if isinstance(probe, Tensor) else probe
    rng = np.random.default_rng(1)
    upstream = [rng.standard_normal(y.shape) for y in probe]
    cpu_outs, _, cpu_grads = run(fn, inputs_on(inputs, "cpu", dtype), upstream)
    gpu_outs, devices, gpu_grads = run(fn, inputs_on(inputs, "cuda", dtype), upstream)
    assert all(d == "cuda" for d in devices), f"{name}: an output left the GPU: {devices}"
    rtol, atol = CROSS_DEVICE_TOLERANCE[dtype]
    for a, b in zip(gpu_outs, cpu_outs):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
    for a, b in zip(gpu_grads, cpu_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_check_on_cuda(name):
    fn, inputs = CASES[name](np.random.default_rng(0))
    assert gradcheck(fn, inputs_on(inputs, "cuda"), **GRADCHECK_OPTIONS.get(name, {}))


def test_attention_masks_on_cuda_match_numpy():
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 2, 5, 4)) for _ in range(3))
    allowed = rng.random((5, 5)) < 0.6
    allowed[1] = False                                   # a fully blocked row: zeros
    additive = rng.standard_normal((1, 1, 5, 5))
    for mask, causal in ((None, True), (allowed, False), (additive, False), (allowed, True)):
        results = []
        for device in ("cpu", "cuda"):
            tensors = [tg.tensor(a, dtype=tg.float64, device=device, requires_grad=True)
                       for a in (q, k, v)]
            m = None if mask is None else tg.tensor(mask, device=device)
            out = F.scaled_dot_product_attention(*tensors, attn_mask=m, is_causal=causal)
            out.sum().backward()
            results.append([out.numpy()] + [t.grad.numpy() for t in tensors])
        for a, b in zip(*results):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_dropout_on_cuda_keeps_the_mask_for_a_seed_and_scales():
    x = tg.ones(100_000, device="cuda")
    tg.manual_seed(3)
    a = F.dropout(x, 0.25).numpy()
    tg.manual_seed(3)
    b = F.dropout(x, 0.25).numpy()
    np.testing.assert_array_equal(a, b)
    assert abs((a == 0).mean() - 0.25) < 0.01
    assert set(np.unique(a).tolist()) == {0.0, np.float32(1 / 0.75)}


def test_embedding_and_cross_entropy_scatter_on_cuda():
    weight = tg.tensor(np.random.default_rng(0).standard_normal((7, 3)), device="cuda",
                       requires_grad=True)
    idx = tg.tensor([[0, 3, 3], [6, 3, 0]], device="cuda")
    F.embedding(idx, weight).sum().backward()
    counts = np.bincount(np.array([0, 3, 3, 6, 3, 0]), minlength=7)[:, None]
    np.testing.assert_array_equal(weight.grad.numpy(), np.broadcast_to(counts, (7, 3)))
    # Ids from the host are checked there, before they go to the GPU.
    with pytest.raises(IndexError, match="index 9"):
        F.embedding([9], weight)
    with pytest.raises(IndexError, match="target 7"):
        F.cross_entropy(tg.randn(2, 7, device="cuda"), [1, 7])


def test_device_mix_names_both_devices():
    with pytest.raises(RuntimeError, match=r"'cpu' and 'cuda'"):
        tg.randn(3) + tg.randn(3, device="cuda")


@pytest.mark.parametrize("source, target", [("cpu", "cuda"), ("cuda", "cpu")])
def test_to_moves_the_value_forward_and_the_gradient_back(source, target):
    x = tg.tensor([1.0, -2.0, 3.0], device=source, requires_grad=True)
    y = x.to(target)
    assert y.device == target and y.requires_grad
    assert type(y.data) is type(tg.zeros(1, device=target).data)
    (y * y).sum().backward()
    assert x.grad.device == source
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, -4.0, 6.0])


def test_comparisons_take_host_data_and_refuse_another_device():
    x = tg.tensor([1.0, 2.0, 3.0], device="cuda")
    for other in (np.array([2.0, 2.0, 2.0]), [2.0, 2.0, 2.0], np.float32(2.0), 2):
        for result, expected in ((x < other, [1, 0, 0]), (x <= other, [1, 1, 0]),
                                 (x > other, [0, 0, 1]), (x >= other, [0, 1, 1]),
                                 (x == other, [0, 1, 0]), (x != other, [1, 0, 1])):
            assert result.device == "cuda" and result.dtype == tg.bool_
            np.testing.assert_array_equal(result.numpy(), np.array(expected, dtype=bool))
    with pytest.raises(RuntimeError, match=r"'cuda' and 'cpu'"):
        x < tg.tensor([2.0, 2.0, 2.0])
