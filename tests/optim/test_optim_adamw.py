"""AdamW: a step computed by hand from the formula, PyTorch's AdamW over several steps with
parameter groups, float32 staying float32, state save/load, parameter groups, bad arguments."""

import math
import pickle

import numpy as np
import pytest

import tinygpt as tg
from conftest import assert_close
from tinygpt.optim import SGD, AdamW, configure_param_groups


def _param(array, device="cpu"):
    return tg.tensor(np.asarray(array), device=device, requires_grad=True)


def _set_grad(p, array):
    p.grad = tg.tensor(np.asarray(array, dtype=p.dtype), device=p.device)


def test_adamw_matches_a_hand_computed_step():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(3)]
    lrs = [1e-2, 5e-3, 2e-2]              # the rate changes between steps, as a schedule does
    beta1, beta2, eps, wd = 0.8, 0.95, 1e-6, 0.1

    p = _param(w0)
    opt = AdamW([p], lr=lrs[0], betas=(beta1, beta2), eps=eps, weight_decay=wd)

    # The reference: the textbook formula, one line per equation, in float64.
    w, m, v = w0.copy(), np.zeros_like(w0), np.zeros_like(w0)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        w = w - lr * wd * w
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)

        opt.param_groups[0]["lr"] = lr
        _set_grad(p, g)
        opt.step()
        assert_close(p.numpy(), w)
    state = opt.state[p]
    assert state["step"] == 3
    assert_close(state["exp_avg"], m)
    assert_close(state["exp_avg_sq"], v)


def test_first_step_moves_each_weight_by_lr_times_the_sign_of_its_gradient():
    # With bias correction, step 1 gives m_hat = g and v_hat = g^2: the update is
    # lr * g / (|g| + eps), about lr * sign(g) whatever the gradient's scale.
    p = _param(np.zeros(4))
    opt = AdamW([p], lr=0.1, eps=1e-12, weight_decay=0.0)
    _set_grad(p, [3.0, -1e-3, 250.0, -7.0])
    opt.step()
    assert_close(p.numpy(), [-0.1, 0.1, -0.1, 0.1])


def test_adamw_matches_torch_over_several_steps_with_param_groups():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    shapes = [(5, 3), (3,), (2, 2, 2)]
    inits = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(6)]

    ours = [_param(a) for a in inits]
    theirs = [torch.tensor(a, requires_grad=True) for a in inits]
    kwargs = dict(lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
    opt = AdamW([{"params": ours[:1] + ours[2:], "weight_decay": 0.1},
                 {"params": ours[1:2], "weight_decay": 0.0, "lr": 1e-2}], **kwargs)
    ref = torch.optim.AdamW([{"params": theirs[:1] + theirs[2:], "weight_decay": 0.1},
                             {"params": theirs[1:2], "weight_decay": 0.0, "lr": 1e-2}],
                            **kwargs)
    for step_grads in grads:
        for group, ref_group in zip(opt.param_groups, ref.param_groups):
            group["lr"] = ref_group["lr"] = ref_group["lr"] * 0.9   # a decaying schedule
        for p, t, g in zip(ours, theirs, step_grads):
            _set_grad(p, g)
            t.grad = torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        assert_close(p.numpy(), t.detach().numpy())


def test_float32_parameters_and_state_stay_float32(device):
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((8, 8)).astype(np.float32)
    p = _param(w0, device)
    data_array = p.data
    opt = AdamW([p], lr=1e-2, weight_decay=0.1)
    reference = _param(w0.astype(np.float64))
    ref_opt = AdamW([reference], lr=1e-2, weight_decay=0.1)
    for step in range(3):
        g = rng.standard_normal((8, 8)).astype(np.float32)
        _set_grad(p, g)
        _set_grad(reference, g.astype(np.float64))
        opt.step()
        ref_opt.step()
        if step == 0 and device == "cuda":
            # On a GPU the first step moves the parameter into AdamW's flat buffer.
            assert p.data.base is not None
            data_array = p.data
    assert p.data is data_array, "the update must be in place"
    assert p.dtype == np.float32
    assert opt.state[p]["exp_avg"].dtype == np.float32
    assert opt.state[p]["exp_avg_sq"].dtype == np.float32
    assert p.device == device and opt.state[p]["exp_avg"].shape == (8, 8)
    # float32 arithmetic, not float64 cast down at the end, yet close to the float64 run.
    assert_close(p.numpy(), reference.numpy(), dtype=np.float32)


def test_state_arrays_are_updated_in_place():
    p = _param(np.ones(3))
    opt = AdamW([p])
    _set_grad(p, [1.0, 2.0, 3.0])
    opt.step()
    m, v = opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]
    _set_grad(p, [1.0, 2.0, 3.0])
    opt.step()
    assert opt.state[p]["exp_avg"] is m and opt.state[p]["exp_avg_sq"] is v
    assert opt.state[p]["step"] == 2


def test_parameters_without_gradient_are_skipped():
    a, b = _param(np.ones(2)), _param(np.ones(2))
    opt = AdamW([a, b], lr=0.1)
    _set_grad(a, [1.0, 1.0])
    opt.step()
    assert b not in opt.state and a in opt.state
    np.testing.assert_array_equal(b.numpy(), np.ones(2))


def _run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            _set_grad(p, g)
        opt.step()


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    inits = [rng.standard_normal((4, 3)), rng.standard_normal(3)]
    grads = [[rng.standard_normal(a.shape) for a in inits] for _ in range(6)]

    straight = [_param(a) for a in inits]
    opt = AdamW(configure_param_groups({"w": straight[0], "b": straight[1]}, 0.1), lr=1e-2)
    _run(opt, straight, grads[:3])
    saved = pickle.loads(pickle.dumps(opt.state_dict()))   # what a checkpoint does
    saved_params = [p.numpy() for p in straight]
    _run(opt, straight, grads[3:])

    resumed = [_param(a) for a in saved_params]
    opt2 = AdamW(configure_param_groups({"w": resumed[0], "b": resumed[1]}, 0.5), lr=1.0)
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["weight_decay"] == 0.1 and opt2.param_groups[0]["lr"] == 1e-2
    _run(opt2, resumed, grads[3:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_state_dict_holds_numpy_copies():
    p = _param(np.ones(3))
    opt = AdamW([p])
    _set_grad(p, [1.0, 2.0, 3.0])
    opt.step()
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"} and sd["param_groups"][0]["params"] == [0]
    assert isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    sd["state"][0]["exp_avg"][:] = 99.0
    assert not np.any(opt.state[p]["exp_avg"] == 99.0)


def _stepped_adamw(params):
    opt = AdamW(params)
    for p in params:
        _set_grad(p, np.ones(p.shape))
    opt.step()
    return opt


@pytest.mark.parametrize("case, match", [
    ("fewer_params", "parameter group 0 has 2 parameter"),
    ("other_shape", r"shape \(4,\).*shape \(3,\)"),
    ("more_groups", "2 parameter group"),
    ("sgd_state", "momentum_buffer"),
    ("not_a_state_dict", "not an optimizer state dict"),
])
def test_mismatched_state_dict_raises_and_changes_nothing(case, match):
    params = [_param(np.ones(3)), _param(np.ones(2))]
    source = [_param(np.ones(3)), _param(np.ones(2))]
    if case == "other_shape":
        source = [_param(np.ones(4)), _param(np.ones(2))]
    if case == "fewer_params":
        params = params[:1]
    sd = _stepped_adamw(source).state_dict()
    if case == "more_groups":
        sd = AdamW([{"params": source[:1]}, {"params": source[1:]}]).state_dict()
    if case == "sgd_state":
        sgd = SGD(source, lr=0.1, momentum=0.9)
        sgd.step()
        sd = sgd.state_dict()
        sd["param_groups"][0] = {"params": [0, 1], "lr": 0.1}
    if case == "not_a_state_dict":
        sd = {"model": 1}
    opt = _stepped_adamw(params)
    before = {k: {n: np.array(v) for n, v in entries.items()}
              for k, entries in opt.state_dict()["state"].items()}
    lr = opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(sd)
    after = opt.state_dict()["state"]
    assert opt.param_groups[0]["lr"] == lr
    for k in before:
        for n in before[k]:
            np.testing.assert_array_equal(before[k][n], after[k][n])


def test_configure_param_groups_decays_matrices_only():
    w = _param(np.ones((3, 2)))
    emb = _param(np.ones((5, 3)))
    b = _param(np.ones(3))
    gain = _param(np.ones(3))
    frozen = tg.ones(3, 3)                            # requires_grad=False: left out
    named = [("fc.weight", w), ("wte.weight", emb), ("fc.bias", b), ("ln.weight", gain),
             ("lm_head.weight", emb), ("frozen", frozen)]     # emb twice: tied
    decay, no_decay = configure_param_groups(named, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(w), id(emb)]
    assert [id(p) for p in no_decay["params"]] == [id(b), id(gain)]

    # With zero gradients Adam's update is 0, so only the decay moves anything.
    opt = AdamW([decay, no_decay], lr=0.5)
    for p in (w, emb, b, gain):
        _set_grad(p, np.zeros(p.shape))
    opt.step()
    assert_close(w.numpy(), np.full((3, 2), 1 - 0.5 * 0.1))
    assert_close(b.numpy(), np.ones(3))
    assert_close(gain.numpy(), np.ones(3))


def test_zero_grad():
    p = _param(np.ones(3))
    opt = AdamW([p])
    _set_grad(p, [1.0, 2.0, 3.0])
    grad_array = p.grad.data
    opt.zero_grad(set_to_none=False)
    assert p.grad.data is grad_array and not grad_array.any()
    opt.zero_grad()
    assert p.grad is None


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=-1e-3), r"lr must be a finite number >= 0\.0, got -0\.001"),
    (dict(lr=math.nan), "lr must be .*, got nan"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\] must be a finite number in \[0\.0, 1\.0\), got 1\.0"),
    (dict(betas=(0.9, -0.1)), r"betas\[1\] must be .*, got -0\.1"),
    (dict(betas=(0.9,)), "pair"),
    (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_bad_hyper_parameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([_param(np.ones(2))], **kwargs)


def test_bad_hyper_parameter_in_a_group_raises():
    with pytest.raises(ValueError, match="lr must be .*, got -1.0"):
        AdamW([{"params": [_param(np.ones(2))], "lr": -1.0}])
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        AdamW([{"params": [_param(np.ones(2))], "momentum": 0.9}])


def test_bad_parameters_raise():
    p = _param(np.ones(2))
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([])
    with pytest.raises(TypeError, match="single Tensor"):
        AdamW(p)
    with pytest.raises(TypeError, match="only optimize Tensors"):
        AdamW([np.ones(2)])
    with pytest.raises(TypeError, match="int64"):
        AdamW([tg.tensor([1, 2])])
    with pytest.raises(ValueError, match="more than one parameter group"):
        AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="not a leaf"):
        AdamW([p * 2])
    with pytest.raises(TypeError, match="number"):
        AdamW([p], lr="0.1")


def test_loading_a_fresh_state_forgets_the_old_one():
    p = _param(np.ones(3))
    opt = _stepped_adamw([p])
    opt.load_state_dict(AdamW([_param(np.ones(3))]).state_dict())    # never stepped
    assert opt.state == {}
    # The next step is a first step again: lr * sign(g) with zeroed moments.
    before = p.numpy()
    opt.param_groups[0]["weight_decay"] = 0.0
    _set_grad(p, [5.0, -5.0, 5.0])
    opt.step()
    assert_close(p.numpy(), before - 1e-3 * np.array([1.0, -1.0, 1.0]), scale=1e3)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_blocks_on_threads_give_the_same_update_as_one_thread(threads, monkeypatch):
    from tinygpt.autograd.fast import threads as fast_threads
    from tinygpt.optim import adamw_fast
    rng = np.random.default_rng(3)
    shapes = [(5, 7), (3,), (4, 6)]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    # one stored transposed: a non-contiguous gradient is updated whole
    grads[1][2] = np.ascontiguousarray(grads[1][2].T).T

    def run(parallel_elements, block_elements):
        monkeypatch.setattr(adamw_fast, "PARALLEL_ELEMENTS", parallel_elements)
        monkeypatch.setattr(fast_threads, "BLOCK_ELEMENTS", block_elements)
        params = [_param(np.ones(s, dtype=np.float32)) for s in shapes]
        opt = AdamW([{"params": params[:2], "weight_decay": 0.1},
                     {"params": params[2:], "weight_decay": 0.0}], lr=0.01)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = tg.tensor(g)
            opt.step()
        return [p.numpy() for p in params] + [opt.state[p]["exp_avg_sq"] for p in params]

    previous = fast_threads.get_num_threads()
    fast_threads.set_num_threads(threads)
    try:
        blocked = run(parallel_elements=1, block_elements=4)    # every parameter in blocks
    finally:
        fast_threads.set_num_threads(previous)
    # The same folded arithmetic, one parameter at a time on this thread: bit for bit.
    # (Both against the reference formula: tests/optim/test_adamw_fast.py.)
    one_thread = run(parallel_elements=1 << 30, block_elements=4)
    for got, want in zip(blocked, one_thread):
        np.testing.assert_array_equal(got, want)


def test_a_bad_gradient_shape_raises_before_any_parameter_changes():
    a, b = _param(np.ones(3)), _param(np.ones(2))
    opt = AdamW([a, b], lr=0.1)
    _set_grad(a, np.ones(3))
    b.grad = tg.tensor(np.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2,\) has a gradient of shape \(3,\)"):
        opt.step()
    np.testing.assert_array_equal(a.numpy(), np.ones(3))
    assert opt.state.get(a) in (None, {})


def _groups(device, dtype=np.float32):
    rng = np.random.default_rng(4)
    shapes = [(5, 7), (3,), (4, 6), (6,)]
    params = [_param(rng.standard_normal(s).astype(dtype), device) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(4)]
    return params, grads


def _flat_run(params, grads, opt, reference):
    with tg.use_reference_ops(reference):
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                _set_grad(p, g)
            opt.step()
    return [p.numpy() for p in params] + [
        tg.Tensor(opt.state[p][k]).numpy() for p in params for k in ("exp_avg", "exp_avg_sq")]


@pytest.mark.parametrize("decay", [(0.1, 0.0), (0.0, 0.0)], ids=["two-runs", "one-run"])
def test_flat_buffers_on_a_gpu_give_the_reference_update(decay, device):
    results = []
    for reference in (True, False):
        params, grads = _groups(device)
        opt = AdamW([{"params": params[:2], "weight_decay": decay[0]},
                     {"params": params[2:], "weight_decay": decay[1]}], lr=0.01)
        results.append(_flat_run(params, grads, opt, reference))
        if device == "cuda" and not reference:
            base = params[0].data.base
            assert all(p.data.base is base for p in params)          # one flat buffer
            assert all(opt.state[p]["exp_avg"].base is not base for p in params)
    for got, want in zip(*results):
        assert_close(got, want, dtype=np.float32)


def test_flat_buffers_follow_replaced_arrays_and_missing_gradients(device):
    params, grads = _groups(device, np.float64)
    twin, _ = _groups(device, np.float64)
    opt, twin_opt = AdamW(params, lr=0.01), AdamW(twin, lr=0.01)
    _flat_run(params, grads[:1], opt, False)
    _flat_run(twin, grads[:1], twin_opt, True)
    # An array replaced from outside (a load, a move) is gathered again, not lost.
    for p in (params[2], twin[2]):
        p.data = p.data * 0 + 1
    saved = twin_opt.state_dict()
    opt.load_state_dict(saved)                                     # new moment arrays
    _flat_run(params, grads[1:3], opt, False)
    _flat_run(twin, grads[1:3], twin_opt, True)
    # A step where one parameter has no gradient: the others alone, one at a time.
    for group_params, o in ((params, opt), (twin, twin_opt)):
        for p, g in zip(group_params[:3], grads[3]):
            _set_grad(p, g)
        group_params[3].grad = None
        o.step()
    assert opt.state[params[3]]["step"] == 3 and opt.state[params[0]]["step"] == 4
    for a, b in zip(params, twin):
        assert_close(a.numpy(), b.numpy())
