"""Bad input gets a clear error that names what was wrong and what was expected: shapes,
indices and class ids with their valid range, devices, dtypes, option values.
"""

import re
import sys

import numpy as np
import pytest

import tinygpt as tg
import tinygpt.nn.functional as F
from tinygpt.autograd import Tensor, backend
from tinygpt.autograd.ops.elementwise import AddOp


def shapes_named(*shapes):
    """A regex that matches a message naming every shape, in order."""
    return ".*".join(re.escape(str(tuple(s))) for s in shapes)


# --- shapes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow"])
def test_binary_ops_name_both_shapes_that_do_not_broadcast(op):
    a, b = tg.rand(2, 3) + 0.5, tg.rand(4) + 0.5
    call = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
            "div": lambda: a / b, "pow": lambda: a ** b}[op]
    with pytest.raises(ValueError, match=f"^{op}: .*" + shapes_named((2, 3), (4,))):
        call()


def test_where_names_all_three_shapes():
    with pytest.raises(ValueError, match=shapes_named((2, 3), (4,), (3,))):
        tg.where(tg.randn(2, 3) > 0, tg.randn(4), tg.randn(3))


def test_masked_fill_names_the_mask_and_input_shapes():
    with pytest.raises(ValueError, match=shapes_named((4,), (2, 3))):
        tg.randn(2, 3).masked_fill(tg.randn(4) > 0, 0.0)
    with pytest.raises(ValueError, match=shapes_named((5, 2, 3), (2, 3))):
        tg.randn(2, 3).masked_fill(tg.zeros(5, 2, 3) > 0, 0.0)


@pytest.mark.parametrize("shape_a,shape_b", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)),
                                             ((2, 3, 4), (5, 4, 2)), ((), (3,))])
def test_matmul_names_both_shapes(shape_a, shape_b):
    with pytest.raises(ValueError, match=shapes_named(shape_a, shape_b)):
        tg.randn(*shape_a) @ tg.randn(*shape_b)


def test_linear_names_the_input_and_weight_shapes():
    with pytest.raises(ValueError, match=shapes_named((2, 3), (4, 5))):
        F.linear(tg.randn(2, 3), tg.randn(4, 5))
    with pytest.raises(ValueError, match=r"bias of shape \(5,\).*\(4,\)"):
        F.linear(tg.randn(2, 3), tg.randn(4, 3), tg.randn(5))


def test_shape_ops_name_the_shapes():
    with pytest.raises(ValueError, match=shapes_named((2, 3), (4, 2))):
        tg.randn(2, 3).reshape(4, 2)
    with pytest.raises(ValueError, match=shapes_named((2, 3), (4, 3))):
        tg.randn(2, 3).expand(4, 3)
    with pytest.raises(ValueError, match=shapes_named((2, 3), (2, 4))):
        tg.cat([tg.randn(2, 3), tg.randn(2, 4)])
    with pytest.raises(ValueError, match=shapes_named((2, 3), (2, 4))):
        tg.stack([tg.randn(2, 3), tg.randn(2, 4)])
    with pytest.raises(ValueError, match=r"\(0, 0\).*\(2, 3\)"):
        tg.randn(2, 3).permute(0, 0)


def test_layer_norm_and_attention_name_the_shapes():
    with pytest.raises(ValueError, match=shapes_named((2, 3), (4,))):
        F.layer_norm(tg.randn(2, 3), (4,))
    with pytest.raises(ValueError, match=r"weight of shape \(4,\), expected \(3,\)"):
        F.layer_norm(tg.randn(2, 3), (3,), weight=tg.randn(4))
    with pytest.raises(ValueError, match=shapes_named((1, 1, 2, 3), (1, 1, 2, 4))):
        F.scaled_dot_product_attention(tg.randn(1, 1, 2, 3), tg.randn(1, 1, 2, 4),
                                       tg.randn(1, 1, 2, 4))


def test_cross_entropy_names_the_logits_and_targets_shapes():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2,\).*\(3,\)"):
        F.cross_entropy(tg.randn(2, 4), tg.tensor([1, 2, 3]))


def test_backward_gradient_shape_is_named():
    y = tg.randn(2, requires_grad=True) * 2.0
    with pytest.raises(ValueError, match=shapes_named((3,), (2,))):
        y.backward(tg.ones(3))


# --- indices and class ids ------------------------------------------------------------------
@pytest.mark.parametrize("bad", [5, -4])
def test_integer_array_index_out_of_range_names_it_and_the_range(bad):
    with pytest.raises(IndexError, match=rf"index {bad} .*size 3.*\[-3, 2\]"):
        tg.randn(3)[tg.tensor([0, bad])]


def test_plain_int_index_out_of_range_names_it_and_the_size():
    with pytest.raises(IndexError, match=r"5.*size 3"):
        tg.randn(3)[5]


def test_dim_out_of_range_names_it_and_the_range():
    with pytest.raises(IndexError, match=r"dimension 2 .*\[-2, 1\]"):
        tg.randn(2, 3).sum(dim=2)


@pytest.mark.parametrize("bad", [7, -1])
def test_embedding_index_out_of_range_names_it_and_the_table_size(bad):
    with pytest.raises(IndexError, match=rf"index {bad} .*5 rows.*\[0, 4\]"):
        F.embedding(tg.tensor([0, bad]), tg.randn(5, 2))


@pytest.mark.parametrize("bad", [4, -3])
def test_class_id_out_of_range_names_it_and_the_valid_range(bad):
    with pytest.raises(IndexError, match=rf"target {bad} .*\[0, 3\]"):
        F.cross_entropy(tg.randn(2, 4), tg.tensor([1, bad]))


def test_ignore_index_is_not_an_out_of_range_class_id():
    loss = F.cross_entropy(tg.randn(2, 4), tg.tensor([1, -100]))
    assert np.isfinite(loss.item())


def test_float_indices_are_refused():
    x = tg.randn(3)
    with pytest.raises(IndexError, match="1.5"):
        x[1.5]
    with pytest.raises(IndexError, match="float32"):
        x[tg.tensor([1.0])]
    with pytest.raises(TypeError, match="float32"):
        F.embedding(tg.tensor([1.0]), tg.randn(5, 2))
    with pytest.raises(TypeError, match="float32"):
        F.cross_entropy(tg.randn(2, 4), tg.tensor([1.0, 2.0]))


# --- dtypes ---------------------------------------------------------------------------------
def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        tg.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="int64"):
        tg.tensor([1, 2]).requires_grad_()
    with pytest.raises(TypeError, match="bool"):
        Tensor(np.array([True]), requires_grad=True)


def test_masks_and_conditions_must_be_boolean():
    with pytest.raises(TypeError, match="float32"):
        tg.where(tg.randn(3), tg.randn(3), tg.randn(3))
    with pytest.raises(TypeError, match="int64"):
        tg.randn(3).masked_fill(tg.tensor([1, 0, 1]), 0.0)


# --- option values --------------------------------------------------------------------------
def test_unknown_reduction_names_it_and_the_choices():
    with pytest.raises(ValueError, match=r"'avg'.*'mean'.*'sum'.*'none'"):
        F.cross_entropy(tg.randn(2, 4), tg.tensor([1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="'avg'"):
        F.nll_loss(tg.randn(2, 4), tg.tensor([1, 2]), reduction="avg")


def test_unknown_gelu_approximation_names_it_and_the_choices():
    with pytest.raises(ValueError, match=r"'exact'.*'none'.*'tanh'"):
        F.gelu(tg.randn(3), approximate="exact")


def test_dropout_probability_out_of_range():
    with pytest.raises(ValueError, match="1.5"):
        F.dropout(tg.randn(3), 1.5)
    with pytest.raises(ValueError, match="1.0"):
        F.scaled_dot_product_attention(*(tg.randn(1, 1, 2, 2) for _ in range(3)), dropout_p=1.0)


# --- devices --------------------------------------------------------------------------------
class OtherDeviceArray(np.ndarray):
    """Stands in for a CuPy array: an array type other than numpy.ndarray, which Tensor
    reports as living on 'cuda'. Only its type matters to the device check."""


def fake_cuda_tensor(values):
    t = Tensor(np.asarray(values, dtype=np.float32))
    t.data = t.data.view(OtherDeviceArray)
    return t


def test_device_mix_names_both_devices():
    x, fake = tg.randn(3), fake_cuda_tensor([1.0, 2.0, 3.0])
    assert fake.device == "cuda"
    with pytest.raises(RuntimeError, match=r"'cpu' and 'cuda'"):
        AddOp.apply(x, fake)
    with pytest.raises(RuntimeError, match=r"'cuda' and 'cpu'"):
        AddOp.apply(fake, x)


def test_index_on_another_device_names_both_devices():
    index = Tensor(np.array([0, 1]))
    index.data = index.data.view(OtherDeviceArray)
    with pytest.raises(RuntimeError, match=r"'cpu'.*'cuda'"):
        tg.randn(3)[index]


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="'tpu'"):
        tg.zeros(2, device="tpu")


def test_cuda_without_cupy_or_gpu_says_why(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setitem(sys.modules, "cupy", None)          # as if CuPy were not installed
    with pytest.raises(RuntimeError, match="device 'cuda' needs CuPy.*cupy-cuda12x>=14"):
        tg.zeros(2, device="cuda")
    assert not backend.cuda_available()
