"""The interface both kinds of data parallelism give the trainer (parallel_api.py), tested
on each: the fork path (DataParallel) and DistributedDataParallel in one process, on the
CPU and on device "cuda" through NCCL's calls (the CuPy stand-in without a GPU). Then the
pieces of a distributed run that need no second rank: settings, rank streams, errors that
travel between ranks, process states. The runs with real ranks: test_distributed.py."""

import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygpt as tg
from tinygpt import GPT, GPTConfig
from tinygpt.autograd.transfers import count_transfers
from tinygpt.train import DataParallel, DistributedDataParallel, ProcessGroup, TrainConfig
from tinygpt.train import distributed
from tinygpt.train.ddp import (agree, check_same_settings, gather_rank_states, portable,
                               rank_streams, shared_error)
from tinygpt.train.distributed import DistributedError, process_state
from tinygpt.train.nccl import NCCLCommunicator

V, T = 11, 8


def model(dtype="float64", device="cpu", seed=0):
    tg.manual_seed(seed)
    config = GPTConfig(block_size=T, vocab_size=V, n_layer=1, n_head=2, n_embd=16, bias=True)
    return GPT(config).to(dtype).to(device)


def batches(rows, micro, device="cpu"):
    rng = np.random.default_rng(0)
    return [(tg.tensor(rng.integers(0, V, (rows, T)), device=device),
             tg.tensor(rng.integers(0, V, (rows, T)), device=device)) for _ in range(micro)]


def one_process(m, data):
    total = 0.0
    for x, y in data:
        _, loss = m(x, y)
        (loss / len(data)).backward()
        total += loss.item() / len(data)
    grads = [None if p.grad is None else p.grad.numpy().copy() for p in m.parameters()]
    m.zero_grad()
    return total, grads


def local_step(m):
    """What the trainer gives DistributedDataParallel: its own micro-batch loop."""
    def step(data):
        total = None
        for x, y in data:
            _, loss = m(x, y)
            (loss / len(data)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        total = total / len(data)
        return total if total.device != "cpu" else total.item()
    return step


def make(kind, m):
    if kind == "fork":
        if not hasattr(os, "fork"):
            pytest.skip("needs os.fork")
        return DataParallel(m, 2)
    return DistributedDataParallel(m, ProcessGroup(), local_step(m))


@pytest.mark.parametrize("kind", ["fork", "ddp"])
def test_the_step_gives_the_gradient_of_the_mean_loss(kind):
    m = model()
    m.transformer.wpe.weight.requires_grad = False         # frozen: no gradient
    data = batches(4, 2)
    want_loss, want = one_process(m, data)
    with make(kind, m) as parallel:
        assert parallel.world_size == 1
        loss = parallel.forward_backward(data)
        got = [None if p.grad is None else p.grad.numpy() for p in m.parameters()]
        with parallel.all_threads():
            pass
    parallel.close()                                        # twice is fine
    assert loss == pytest.approx(want_loss, rel=1e-12)
    assert m.transformer.wpe.weight.grad is None
    for g, w in zip(got, want):
        assert (g is None) == (w is None)
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["fork", "ddp"])
def test_an_error_in_the_step_reaches_the_caller_without_gradients(kind):
    m = model()
    data = batches(4, 1)
    data[0][0].data[-1, 0] = V + 3                          # a token id outside the vocabulary
    with make(kind, m) as parallel:
        with pytest.raises(ValueError, match=f"token id {V + 3}"):
            parallel.forward_backward(data)
        assert all(p.grad is None for p in m.parameters())


def test_a_parameter_no_batch_reached_keeps_no_gradient():
    m = model()
    unused = m.transformer.h[0].mlp.c_fc.bias
    ddp = DistributedDataParallel(m, ProcessGroup(), lambda data: 1.5)
    m.transformer.wte.weight.grad = tg.tensor(np.ones(m.transformer.wte.weight.shape))
    assert ddp.forward_backward([]) == 1.5
    assert unused.grad is None
    np.testing.assert_array_equal(m.transformer.wte.weight.grad.numpy(), 1.0)


def test_the_gpu_step_reduces_on_the_device_without_reading_back(cuda=None):
    m = model(dtype="float32", device="cuda")
    data = batches(4, 2, device="cuda")
    reference = model(dtype="float32", device="cuda")
    want_loss, want = one_process(reference, data)
    group = ProcessGroup()
    ddp = DistributedDataParallel(m, group, local_step(m))
    assert isinstance(ddp.communicator, NCCLCommunicator)
    with count_transfers() as counted:
        loss = ddp.forward_backward(data)
    assert counted.total == 0, counted.report()
    assert isinstance(loss, tg.Tensor) and loss.device == "cuda"
    assert float(loss.item()) == pytest.approx(want_loss, rel=1e-6)
    for p, w in zip(m.parameters(), want):
        np.testing.assert_allclose(p.grad.numpy(), w, rtol=1e-5, atol=1e-7)
    ddp.close()
    assert ddp.communicator is None


def test_nccl_refuses_more_ranks_than_gpus_and_other_dtypes():
    from tinygpt.train.nccl import use_local_gpu

    class TwoOnOneGPU(ProcessGroup):
        local_rank, local_size = 1, 2

    with pytest.raises(ValueError, match="2 ranks run on this machine but it has 1 GPU"):
        use_local_gpu(TwoOnOneGPU())
    communicator = NCCLCommunicator(ProcessGroup())
    ints = tg.tensor(np.arange(4), device="cuda").data
    with pytest.raises(TypeError, match="NCCL reduces float16, float32, float64"):
        communicator.all_reduce_(ints)


# --- settings and the environment -----------------------------------------------------------
def test_the_launch_is_found_from_the_environment():
    assert distributed.launched_size({}) == 0
    assert distributed.launched_size({"PMI_SIZE": "4"}) == 4
    assert distributed.launched_size({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert distributed.resolve("auto", {"PMI_SIZE": "2"}) == "mpi"
    assert distributed.resolve("auto", {"PMI_SIZE": "1"}) == "none"
    assert distributed.resolve("auto", {}) == "none"
    assert distributed.resolve("mpi", {}) == "mpi"
    with pytest.raises(ValueError, match="distributed must be one of auto, none, mpi, got 'gloo'"):
        TrainConfig(distributed="gloo")
    with pytest.raises(ValueError, match="processes=2 forks processes inside each MPI rank"):
        TrainConfig(distributed="mpi", processes=2)
    assert TrainConfig(distributed="mpi").resolved_processes() == 1
    assert isinstance(distributed.init_process_group("none"), ProcessGroup)


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'tinygpt\[mpi\]'"):
        distributed.init_process_group("mpi")


def test_each_rank_has_streams_of_its_own():
    assert rank_streams(1337, 0) == (1337, None)            # rank 0: one process's streams
    one, two = rank_streams(1337, 1), rank_streams(1337, 2)
    assert len({one[0], one[1], two[0], two[1], 1337}) == 5
    assert rank_streams(1337, 1) == one                     # and they repeat


class FakeRank(ProcessGroup):
    """Rank `rank` of `size`, whose collectives return what a test gives them."""

    def __init__(self, rank, size, gathered=None, sent=None):
        self.rank, self.world_size = rank, size
        self.gathered, self.sent = gathered, sent

    def all_gather(self, obj, what=""):
        return [obj if r == self.rank else g for r, g in enumerate(self.gathered)]

    def broadcast(self, obj, root=0, what=""):
        return obj if root == self.rank else self.sent


def test_the_first_failed_ranks_error_is_raised_everywhere_naming_it():
    error = ValueError("token id 99 is outside the vocabulary")
    # On the failed rank: its own error (with its traceback), named.
    raised = shared_error(FakeRank(1, 2), [1], error)
    assert raised is error and str(raised) == "rank 1: token id 99 is outside the vocabulary"
    assert raised.collective
    # On another rank: the copy it was sent.
    raised = shared_error(FakeRank(0, 3, sent=portable(ValueError("bad"))), [1, 2], None)
    assert isinstance(raised, ValueError) and raised.collective
    assert str(raised) == "rank 1 (ranks 1, 2 failed; the first one's error:): bad"
    # Something that does not pickle travels as a DistributedError with its type and text.
    class Local(Exception):
        pass
    sent = portable(Local("odd"))
    assert isinstance(sent, DistributedError) and str(sent) == "Local: odd"
    assert pickle.loads(pickle.dumps(sent)).args == sent.args


def test_set_up_failures_and_settings_are_agreed_on():
    agree(FakeRank(0, 2, gathered=[None, None]), None, "the set-up")      # nobody failed
    with pytest.raises(FileNotFoundError, match="^rank 1: no such file"):
        agree(FakeRank(0, 2, gathered=[None, FileNotFoundError("no such file")]), None, "x")
    check_same_settings(FakeRank(0, 2, gathered=[None, {"a": 1}]), {"a": 1})
    with pytest.raises(ValueError, match=r"rank 1 has a 2 \(rank 0: 1\), b None \(rank 0: 3\)"):
        check_same_settings(FakeRank(0, 2, gathered=[None, {"a": 2}]), {"a": 1, "b": 3})


def test_checkpoints_keep_the_streams_of_ranks_this_run_lacks():
    class Sampler:
        def state_dict(self):
            return {"mine": True}

    saved = [{"rank": 1}, {"rank": 2}, {"rank": 3}]
    two = FakeRank(0, 2, gathered=[None, {"rank": "1 now"}])
    states = gather_rank_states(two, Sampler(), saved)
    assert states == [{"rank": "1 now"}, {"rank": 2}, {"rank": 3}]


def test_process_states_tell_exited_and_stopped_processes():
    assert process_state(os.getpid()) in ("R", "S")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        os.kill(child.pid, signal.SIGSTOP)
        for _ in range(500):                    # up to 5 s for the kernel to stop it
            if process_state(child.pid) in ("T", "t"):
                break
            time.sleep(0.01)
        assert process_state(child.pid) in ("T", "t")
    finally:
        child.kill()
        child.wait()
    assert process_state(child.pid) is None
