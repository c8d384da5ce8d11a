"""Data parallelism over the CPU's cores: one batch split over processes (floor 6).

The gradient of a mean loss over a batch is the weighted sum of the gradients of its parts:
with the B rows cut into shards of b_0, b_1, ... rows and loss_k the mean loss of shard k,

    loss = sum_k (b_k / B) loss_k        so        dloss/dw = sum_k (b_k / B) dloss_k/dw.

`DataParallel(model, processes)` forks processes - 1 workers, each a copy of the model.
Every step the calling process keeps shard 0 and sends shard k to worker k; each runs
forward and backward on its own shard, seeding backward with b_k / B (divided by the
number of micro-batches under gradient accumulation); the workers write their gradients
into shared memory, and the calling process adds them to its own, in rank order. Clipping
and the optimizer step then run in the calling process alone, on the summed gradient.

The parameters themselves live in shared memory too: the optimizer updates them in place
and every worker reads the new values at its next step, so nothing is sent back.

Why processes and not threads: two threads running Python share one interpreter lock,
and each hand-off of it between them costs a wake-up; two processes each run their own
interpreter on their own core with nothing to hand over but the gradients (one copy and
one add of the parameters' size per step). It is what PyTorch's DistributedDataParallel
does across GPUs, here across the cores of one machine.

Sums in another order round differently: the gradients match a one-process step to float
rounding (tested), not bit for bit. Runs stay reproducible: the workers' dropout masks
come from seeds drawn from tinygpt's generator in the calling process, whose state the
checkpoints save. Needs the CPU and `os.fork`; `python -m tinygpt train` uses it by
default on Linux only (`auto_processes`).

No wait is unbounded. A worker that dies is noticed at once (its pipe closes); one that
stops answering (stopped with SIGSTOP, stuck, swapping) is given `timeout` seconds
(default 60, or $TINYGPT_WORKER_TIMEOUT), or 20 times the time this process took for its
own shard when that is longer; then it is killed, the others are stopped, and
WorkerError names it. Workers ignore Ctrl-C and SIGTERM (the calling process decides what
to do: a signal to the whole process group interrupts the run, not its workers) and end
when the calling process does, however it ends: their pipe reads end of file.
"""

import contextlib
import mmap
import os
import signal
import socket
import struct
import sys
import time
import traceback
import weakref
from multiprocessing import Pipe

import numpy as np

from .. import validate
from ..autograd import backend
from ..autograd.fast import blas as fast_blas
from ..autograd.fast import threads as fast_threads
from ..autograd.tensor import Tensor
from ..memory import peak_rss_mb
from .parallel_api import DataParallelBase

ALIGN = 64                  # bytes: each parameter's slot starts on a cache line
WORKER_TIMEOUT = 60.0       # seconds a worker may take to answer, at least
TIMEOUT_STEPS = 20          # ... or this many times this process's own shard time
STOP_GRACE = 10.0           # seconds a worker gets to end after "stop", before SIGKILL


def worker_timeout():
    """The least time a worker may take to answer: $TINYGPT_WORKER_TIMEOUT, else 60 s."""
    text = os.environ.get("TINYGPT_WORKER_TIMEOUT")
    if not text:
        return WORKER_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"TINYGPT_WORKER_TIMEOUT must be a number of seconds > 0, got {text!r}")
    return value


def shard_sizes(batch_size, processes):
    """Rows of each process's shard: as equal as can be, the first ones one larger."""
    base, extra = divmod(batch_size, processes)
    return [base + (k < extra) for k in range(processes)]


def auto_processes(threads, batch_size, device="cpu"):
    """The processes to split a batch over when none are asked for: two on Linux where
    there are at least two threads to give them (one each, or more inside each), for a
    batch of at least two rows on the CPU; else one. Two processes of one thread measured
    1.5 times as fast per step as one process of two threads at the small GPT (no
    interpreter lock to pass between them); more than two: not measured. Not by default
    elsewhere: macOS's own BLAS (Accelerate) is not safe to use in a forked child."""
    cpu = backend.normalize_device(device) == "cpu"
    linux = sys.platform.startswith("linux") and hasattr(os, "fork")
    return 2 if cpu and linux and threads >= 2 and batch_size >= 2 else 1


def check_processes(processes, device="cpu"):
    """Raise a ValueError naming what is wrong with a `processes` setting."""
    validate.positive_integer("processes", processes)
    if processes > 1 and backend.normalize_device(device) != "cpu":
        raise ValueError(
            f"processes={processes} splits batches over CPU processes; on device "
            f"{device!r} use processes=1")
    if processes > 1 and not hasattr(os, "fork"):
        raise ValueError(
            f"processes={processes} needs os.fork, which this platform ({sys.platform}) "
            "lacks: use processes=1")


class _SharedArrays:
    """One anonymous shared memory map holding an array of each given shape and dtype;
    a process forked after it is made sees the same memory."""

    def __init__(self, like):
        offsets, end = [], 0
        for a in like:
            offsets.append(end)
            end += -(-a.nbytes // ALIGN) * ALIGN
        self.buffer = mmap.mmap(-1, max(end, ALIGN))
        self.arrays = [np.frombuffer(self.buffer, dtype=a.dtype, count=a.size,
                                     offset=off).reshape(a.shape)
                       for a, off in zip(like, offsets)]


class WorkerError(RuntimeError):
    """A data-parallel worker failed; the message holds its traceback."""


class DataParallel(DataParallelBase):
    """Forward and backward of a batch split over `processes` CPU processes (see the
    module docstring; the interface of parallel_api.py). Use as a context manager, or call
    `close()`:

        with DataParallel(model, processes=2) as dp:
            loss = dp.forward_backward([(x, y)])    # grads summed into the model's .grad
            clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()

    model:      a module whose `model(x, y)` returns (output, mean loss), on the CPU.
    processes:  processes in all, this one included (at least 1; 1 forks nothing).
    threads:    tinygpt and BLAS threads of each process while it runs (default: the
                usable cores shared out, at least one each); the calling process gets
                its own settings back at `close()` and inside `all_threads()`.
    timeout:    the least seconds a worker may take to answer (default `worker_timeout()`;
                see the module docstring).
    """

    def __init__(self, model, processes, threads=None, timeout=None):
        check_processes(processes)
        self.timeout = worker_timeout() if timeout is None else validate.real(
            "timeout (seconds)", timeout, minimum=0, low_open=True)
        self.model = model
        self.processes = processes
        self.params = list(model.parameters())
        for p in self.params:
            if backend.device_of(p.data) != "cpu":
                raise ValueError("DataParallel runs on the CPU; the model has parameters "
                                 f"on {backend.device_of(p.data)!r}")
        if threads is None:
            threads = max(1, fast_threads.usable_cores() // processes)
        self.threads = int(threads)
        self.workers = []                   # (pid, connection) of each worker
        self._shared_params, self._slots = None, []
        self._own_threads = (fast_threads.get_num_threads(), fast_blas.get_blas_num_threads())
        if processes == 1:
            return
        # The parameters move into shared memory (the calling process's too, so the
        # optimizer's in-place updates reach the workers); each worker gets a gradient slot.
        self._shared_params = _SharedArrays([p.data for p in self.params])
        for p, shared in zip(self.params, self._shared_params.arrays):
            shared[...] = p.data
            p.data = shared
        self._slots = [_SharedArrays([p.data for p in self.params]).arrays
                       for _ in range(processes - 1)]
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            for rank in range(1, processes):
                self._start_worker(rank)
        except BaseException:
            self.close()
            raise
        self._limit_threads(self.threads)
        self._finalizer = weakref.finalize(self, _stop_workers, list(self.workers))

    # --- the workers ----------------------------------------------------------------------
    def _start_worker(self, rank):
        theirs, ours = Pipe()
        pid = os.fork()
        if pid == 0:                                        # the worker
            code = 0
            try:
                ours.close()
                for _, conn in self.workers:                # the other workers' pipes
                    conn.close()
                # Ctrl-C and SIGTERM (to the whole group: a terminal, `timeout`, `kill --
                # -PGID`) are the calling process's to act on: it stops the run and then
                # the workers, which end on their own with it in any case (end of file).
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                self._limit_threads(self.threads)
                self._serve(theirs, self._slots[rank - 1])
            except BaseException:
                code = 1
            finally:
                os._exit(code)                              # never back into the caller
        theirs.close()
        _limit_send_time(ours, self.timeout)
        self.workers.append((pid, ours))

    def _serve(self, conn, slot):
        """The worker's loop: run each step it is sent until "stop" or the pipe closes."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] == "stop":
                return
            if message[0] == "rss":
                conn.send(("rss", peak_rss_mb()))
                continue
            _, training, seed, shards = message
            try:
                self.model.train(training)
                backend.manual_seed(seed)
                losses = self._run_shards(shards)
                for p, out in zip(self.params, slot):
                    if p.grad is None:
                        out[...] = 0
                    else:
                        np.copyto(out, p.grad.data)
                reply = ("done", losses)
            except Exception as exc:  # noqa: BLE001 - sent to the calling process
                reply = ("error", _picklable(exc, traceback.format_exc()))
            finally:
                self.model.zero_grad(set_to_none=True)
            conn.send(reply)

    def _run_shards(self, shards):
        """Forward and backward of each (x, y, weight); the unweighted losses."""
        losses = []
        for x, y, weight in shards:
            _, loss = self.model(Tensor(x), Tensor(y))
            losses.append(loss.item())
            loss.backward(np.asarray(weight, dtype=loss.data.dtype))
        return losses

    # --- one step -------------------------------------------------------------------------
    def forward_backward(self, batches):
        """Forward and backward of every (x, y) micro-batch of one step, each split over
        the processes; the model's parameters then hold the gradient of the mean of the
        micro-batches' losses (summed into any gradient already there). Returns that mean
        loss. x and y are (B, T) integer Tensors or arrays, B at least `processes`."""
        self._check_open()
        micro = len(batches)
        if micro == 0:
            raise ValueError("forward_backward needs at least one (x, y) batch")
        split = []
        for x, y in batches:
            x, y = _array(x), _array(y)
            if x.ndim < 1 or x.shape[:1] != y.shape[:1]:
                raise ValueError(f"x and y must have the same number of rows, got shapes "
                                 f"{x.shape} and {y.shape}")
            if len(x) < self.processes:
                raise ValueError(f"a batch of {len(x)} rows cannot be split over "
                                 f"{self.processes} processes: use batch_size >= processes")
            rows = np.cumsum([0] + shard_sizes(len(x), self.processes))
            split.append([(x[a:b], y[a:b], (b - a) / (len(x) * micro))
                          for a, b in zip(rows[:-1], rows[1:])])
        self._reshare_parameters()
        seeds = backend.generator("cpu").integers(0, 2**63, size=len(self.workers))
        for rank, (_, conn) in enumerate(self.workers, start=1):
            self._send(rank, conn, ("step", self.model.training, int(seeds[rank - 1]),
                                    [shards[rank] for shards in split]))
        error, weighted = None, 0.0
        start = time.perf_counter()
        try:
            own = self._run_shards([shards[0] for shards in split])
            weighted += sum(shards[0][2] * loss for shards, loss in zip(split, own))
        except Exception as exc:  # noqa: BLE001 - raised once the workers have answered
            error = exc
        # A worker's shard is the size of ours (one row more at most): give it much longer.
        patience = max(self.timeout, TIMEOUT_STEPS * (time.perf_counter() - start))
        try:
            for rank, (_, conn) in enumerate(self.workers, start=1):
                reply = self._receive(rank, conn, patience)
                if reply[0] == "error":
                    error = error or reply[1]
                else:
                    weighted += sum(shards[rank][2] * loss
                                    for shards, loss in zip(split, reply[1]))
        except BaseException:       # a lost worker, or Ctrl-C: this step adds nothing
            self.model.zero_grad(set_to_none=True)
            raise
        if error is not None:
            self.model.zero_grad(set_to_none=True)
            raise error
        for p, *slots in zip(self.params, *self._slots) if self._slots else ():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = Tensor(np.zeros_like(p.data))
            for slot in slots:
                np.add(p.grad.data, slot, out=p.grad.data)
        return weighted

    def _send(self, rank, conn, message):
        try:
            conn.send(message)
        except BlockingIOError:             # the send timed out: see _limit_send_time
            self._unresponsive(rank, self.timeout)
        except OSError:
            self._lost(rank)

    def _receive(self, rank, conn, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        try:
            if not conn.poll(timeout):
                self._unresponsive(rank, timeout)
            return conn.recv()
        except (EOFError, OSError):
            self._lost(rank)

    def _lost(self, rank):
        self.close()
        raise WorkerError(f"data-parallel worker {rank} has exited (killed, or out of "
                          "memory?); the other workers are stopped") from None

    def _unresponsive(self, rank, waited):
        pid = self.workers[rank - 1][0]
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)    # also ends a stopped (SIGSTOP) process
        self.close()
        raise WorkerError(f"data-parallel worker {rank} (pid {pid}) has not answered in "
                          f"{waited:.0f} s (stopped, or stuck?); it was killed and the other "
                          "workers stopped") from None

    def _reshare_parameters(self):
        """Put back into shared memory any parameter whose array was replaced (an
        assignment to `p.data`) since the last step, so the workers see it."""
        if self._shared_params is None:
            return
        for p, shared in zip(self.params, self._shared_params.arrays):
            if p.data is not shared:
                shared[...] = p.data
                p.data = shared

    # --- threads and the end --------------------------------------------------------------
    @staticmethod
    def _limit_threads(n):
        fast_threads.set_num_threads(n)
        fast_blas.set_blas_num_threads(n)

    def _restore_threads(self):
        threads, blas = self._own_threads
        fast_threads.set_num_threads(threads)
        fast_blas.set_blas_num_threads(blas)

    @contextlib.contextmanager
    def all_threads(self):
        """Context manager: the calling process's own thread settings inside it (for work
        it does alone while the workers wait, such as evaluation)."""
        if not self.workers:
            yield
            return
        self._restore_threads()
        try:
            yield
        finally:
            self._limit_threads(self.threads)

    def peak_rss_mb(self):
        """Peak resident memory of each process, this one first, in MB."""
        self._check_open()
        sizes = [peak_rss_mb()]
        for rank, (_, conn) in enumerate(self.workers, start=1):
            self._send(rank, conn, ("rss",))
            sizes.append(self._receive(rank, conn)[1])
        return sizes

    def _check_open(self):
        if self.workers is None:
            raise RuntimeError("this DataParallel is closed")

    def close(self):
        """Stop the workers and give the calling process its thread settings back."""
        if self.workers is None:
            return
        workers, self.workers = self.workers, None
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer.detach()
        _stop_workers(workers)
        if self.processes > 1:
            self._restore_threads()


def _stop_workers(workers, grace=STOP_GRACE):
    """Ask each worker to stop, give them `grace` seconds in all to end, kill the rest, and
    reap every one (no zombies, and never a wait without end on a stuck worker)."""
    for _, conn in workers:
        try:
            conn.send(("stop",))
        except (OSError, ValueError):
            pass
        conn.close()
    deadline = time.monotonic() + grace
    for pid, _ in workers:
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                break
            time.sleep(0.005)


def _limit_send_time(conn, seconds):
    """Make a send on `conn` fail (BlockingIOError) after `seconds` instead of blocking for
    ever when the worker does not read: a step's batches can be more than the pipe holds.
    The connection is a Unix socket pair; SO_SNDTIMEO bounds each write to it, and leaves
    reads blocking (a non-blocking socket would not)."""
    if not hasattr(socket, "SO_SNDTIMEO"):
        return
    with contextlib.suppress(OSError, ValueError):
        sock = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            whole = int(seconds)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("ll", whole, int((seconds - whole) * 1e6)))
        finally:
            sock.close()


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _picklable(exc, text):
    """exc with the worker's traceback in its message if it pickles, else a WorkerError."""
    import pickle
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001
        return WorkerError(f"in a data-parallel worker:\n{text}")
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} (in a data-parallel worker; its traceback:\n{text})",
                    ) + exc.args[1:]
    return exc
