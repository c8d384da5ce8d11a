"""ZeRO stage 1's sharded AdamW (tinygpt/train/zero.py) without MPI: N ranks as N threads
of this process, meeting in collectives of shared memory, against one AdamW on the mean
gradient with clip_grad_norm_; uneven pieces (3 ranks), two decay groups with their own
learning rates, a parameter no rank reached; checkpoints read back at another rank count;
the optimizer state each rank holds; the settings --zero 1 refuses."""

import threading

import numpy as np
import pytest

import tinygpt as tg
from tinygpt.nn import Parameter
from tinygpt.optim import AdamW, clip_grad_norm_
from tinygpt.train import TrainConfig
from tinygpt.train.distributed import ProcessGroup
from tinygpt.train.zero import ZeroAdamW, optimizer_state_bytes

SHAPES = [(5, 3), (7,), (4, 4), (3,), (2, 5)]      # 2-d: decayed; 1-d: not
STEPS, MAX_NORM = 6, 0.5


class ThreadGroup(ProcessGroup):
    """Rank `rank` of `shared.world` threads; the collectives meet at a barrier."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.world_size = shared, rank, shared.world

    def _exchange(self, value):
        self.shared.slots[self.rank] = value
        self.shared.barrier.wait()
        got = list(self.shared.slots)
        self.shared.barrier.wait()
        return got

    def all_reduce_(self, array, what=""):
        array[...] = sum(self._exchange(array.copy()))
        return array

    def reduce_scatter_(self, array, shard, what=""):
        total = sum(self._exchange(array.copy()))
        shard[...] = total[self.rank * shard.size:(self.rank + 1) * shard.size]
        return shard

    def all_gather_(self, array, what=""):
        size = array.size // self.world_size
        pieces = self._exchange(array[self.rank * size:(self.rank + 1) * size].copy())
        for r, piece in enumerate(pieces):
            array[r * size:(r + 1) * size] = piece
        return array

    def all_gather(self, obj, what=""):
        return self._exchange(obj)


class Shared:
    def __init__(self, world):
        self.world, self.slots = world, [None] * world
        self.barrier = threading.Barrier(world, timeout=30)


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(tg.tensor(rng.standard_normal(s))) for s in SHAPES]


def make_adamw(params):
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1, "lr": 0.05},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": 0.02}]
    return AdamW(groups, betas=(0.9, 0.99))


def rank_grads(step, rank):
    """Rank `rank`'s gradients at `step`; parameter 3 gets none at steps 1 and 2 (no rank
    reaches it, as an unused expert)."""
    rng = np.random.default_rng(1000 * step + rank)
    return [None if (i == 3 and step in (1, 2)) else rng.standard_normal(s) * 3.0
            for i, s in enumerate(SHAPES)]


def reference(world, steps, params=None, state=None, first=0):
    """One AdamW on the ranks' mean gradient, clipped: (params, optimizer) after `steps`
    (from step `first` with the weights `params` and the state_dict `state` if given)."""
    params = make_params() if params is None else params
    opt = make_adamw(params)
    if state is not None:
        opt.load_state_dict(state)
    for step in range(first, steps):
        grads = [rank_grads(step, r) for r in range(world)]
        for i, p in enumerate(params):
            if grads[0][i] is not None:
                p.grad = tg.tensor(sum(g[i] * (1.0 / world) for g in grads))
        clip_grad_norm_(params, MAX_NORM)
        opt.step()
        opt.zero_grad()
    return params, opt


def run_ranks(world, first, last, loaded=None, max_norm=MAX_NORM):
    """ZeRO over `world` threads from step `first` to `last`, every rank starting from the
    state_dict `loaded` (with its weights) when given. Returns each rank's (params,
    optimizer, gathered state_dict, state bytes)."""
    shared, results, errors = Shared(world), [None] * world, []

    def rank(r):
        try:
            params = make_params()
            if loaded is not None:
                for p, w in zip(params, loaded[0]):
                    p.data[...] = w
            opt = ZeroAdamW(make_adamw(params), ThreadGroup(shared, r), max_norm)
            if loaded is not None:
                opt.load_state_dict(loaded[1])
            where = {id(p): i for i, p in enumerate(params)}
            for step in range(first, last):
                grads = rank_grads(step, r)
                mine = [grads[where[id(p)]] for p in opt.params]
                for p, g in zip(opt.params, mine):
                    p.grad = None if g is None else tg.tensor(g)
                reached = [g is not None for g in mine]
                opt.reduce_gradients(reached, 1.0 / world)
                assert all(p.grad is None for p in params)
                opt.step()
                opt.zero_grad()
            results[r] = (params, opt, opt.state_dict(), optimizer_state_bytes(opt))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
            shared.barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_same_state(a, b, tol):
    assert a["param_groups"] == b["param_groups"]
    assert sorted(a["state"]) == sorted(b["state"])
    for i in a["state"]:
        assert a["state"][i]["step"] == b["state"][i]["step"]
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_allclose(a["state"][i][name], b["state"][i][name], rtol=tol,
                                       atol=tol, err_msg=f"{i} {name}")


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_adamw_equals_adamw_on_the_mean_gradient(world):
    want, opt = reference(world, STEPS)
    results = run_ranks(world, 0, STEPS)
    total = sum(int(np.prod(s)) for s in SHAPES)
    for params, zero, state, held in results:
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.numpy(), w.numpy(), rtol=1e-12, atol=1e-12)
        assert_same_state(state, opt.state_dict(), 1e-12)
        # Each rank holds m and v for its piece only: ceil(P / N) numbers each.
        assert held == 2 * -(-total // world) * 8
        assert zero.whole_state_bytes() == optimizer_state_bytes(opt) == 2 * total * 8
    # The parameter nobody reached for two steps is two steps behind, as in AdamW.
    index = [id(p) for g in opt.param_groups for p in g["params"]].index(id(want[3]))
    assert opt.state_dict()["state"][index]["step"] == STEPS - 2


def test_the_comparison_can_fail_without_clipping():
    """The clipping binds in these steps: ZeRO without it is not the reference."""
    want, _ = reference(2, STEPS)
    unclipped = run_ranks(2, 0, STEPS, max_norm=0.0)[0][0]
    assert not np.allclose(unclipped[0].numpy(), want[0].numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("before, after", [(2, 3), (3, 2), (2, 1)])
def test_a_checkpoint_of_one_rank_count_resumes_at_another(before, after):
    """The gathered state of `before` ranks at step 3, read back by `after` ranks (1: plain
    AdamW), continues as the reference does with `after` ranks' gradients."""
    first = run_ranks(before, 0, 3)
    weights = [p.numpy().copy() for p in first[0][0]]
    state = first[0][2]
    for _, _, other, _ in first[1:]:
        assert_same_state(other, state, 0.0)            # every rank gathered the same
    assert_same_state(state, reference(before, 3)[1].state_dict(), 1e-12)
    # The reference: AdamW from the same point on `after` ranks' mean gradients.
    params = make_params()
    for p, w in zip(params, weights):
        p.data[...] = w
    params, opt = reference(after, STEPS, params, state, first=3)
    if after == 1:
        return                  # plain AdamW read the gathered state (above)
    for got, zero, gathered, _ in run_ranks(after, 3, STEPS, loaded=(weights, state)):
        for p, w in zip(got, params):
            np.testing.assert_allclose(p.numpy(), w.numpy(), rtol=1e-12, atol=1e-12)
        assert_same_state(gathered, opt.state_dict(), 1e-12)


def test_one_rank_is_refused():
    params = make_params()
    with pytest.raises(ValueError, match="2 or more ranks"):
        ZeroAdamW(make_adamw(params), ProcessGroup(), 1.0)


def test_the_settings_zero_cannot_honour_are_refused(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"zero 1 cannot run with one process \(start 2"):
        TrainConfig(zero=1)
    with pytest.raises(ValueError, match="zero must be 0 .* or 1 .*got 2; stage 2 is not"):
        TrainConfig(zero=2)
    monkeypatch.setenv("PMI_SIZE", "1")
    with pytest.raises(ValueError, match="one process"):
        TrainConfig(zero=1, distributed="mpi")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert TrainConfig(zero=1).zero == 1            # 2 ranks: fine
    for values, named in [(dict(dtype="float16"), "dtype float16"),
                          (dict(device="cuda"), "device 'cuda'"),
                          (dict(stats=True), "--stats")]:
        with pytest.raises(ValueError, match="zero 1 cannot run with") as info:
            TrainConfig(zero=1, **values)
        assert named in str(info.value) and "one process" not in str(info.value)
    monkeypatch.delenv("PMI_SIZE")
    with pytest.raises(ValueError, match=r"--processes 2 \(forked processes"):
        TrainConfig(zero=1, processes=2)


def test_the_command_line_refuses_zero_in_one_process_before_writing(tmp_path, capsys,
                                                                    monkeypatch):
    from tinygpt.cli import main
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    status = main(["train", "--zero", "1", "--out_dir", str(tmp_path / "run")])
    assert status != 0
    assert "zero 1 cannot run with one process" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
