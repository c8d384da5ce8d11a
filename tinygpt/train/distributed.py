"""Process groups: the ranks of a run that every one of them trains, launched by MPI
(floor 6). Imports: autograd (the thread settings), the standard library, numpy; mpi4py
only when a run asks for MPI.

`mpiexec -n 4 python -m tinygpt train ...` starts four processes, the ranks 0..3 of one
run. Each runs the whole training loop on batches of its own; they meet in collectives:

    all_reduce_(array)      every rank's array summed, in place, on every rank
    broadcast_(array, root) root's array copied into every rank's
    all_gather(obj)         [rank 0's obj, rank 1's obj, ...] on every rank (small objects)
    reduce_scatter_(array, shard)   the sum of every rank's array, cut in world_size equal
                            pieces: piece r into rank r's `shard` (ZeRO, zero.py)
    all_gather_(array)      piece r of rank r's array into every rank's, in place
    broadcast(obj, root)    root's obj on every rank

A collective returns once every rank has called it, so each rank must call the same ones
in the same order. `ProcessGroup()` is the group of one process (each collective returns
its input); `MPIGroup` runs them over an MPI communicator (mpi4py); `init_process_group`
chooses from the environment the launcher sets, as torchrun's variables tell PyTorch.

No wait is unbounded. MPI's collectives have no time limit and a rank that died or stopped
leaves the others waiting inside one for ever, so a watchdog thread watches each
collective: when one has waited `timeout` seconds (default 60, or $TINYGPT_WORKER_TIMEOUT;
or 20 times this rank's own work since the last collective when that is longer), or a
rank on this machine has exited or been stopped, it writes an error naming the rank to
stderr and ends the whole run (MPI_Abort). A killed rank is often noticed by the launcher
first: MPICH's mpiexec then ends every rank within a second, and its banner names a process
by its PID (the killed one, or the one it ended first), which rank 0's first log line maps
to a rank (`describe`); Open MPI's mpiexec names the rank itself, and lets the watchdog
say it too. Either way no rank is left waiting, and the last checkpoint is whole (rank 0
writes it atomically, and alone).
"""

import contextlib
import os
import socket
import sys
import threading
import time

import numpy as np

from ..autograd.fast import blas as fast_blas
from ..autograd.fast import threads as fast_threads
from .parallel import TIMEOUT_STEPS, worker_timeout

# What launchers set in each rank's environment: MPICH's Hydra (PMI_*, MPI_LOCAL*) and
# Open MPI (OMPI_COMM_WORLD_*). Only the world size is read before MPI starts.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")
CHOICES = ("auto", "none", "mpi")
WATCH_INTERVAL = 0.1        # seconds between the watchdog's looks at a waiting collective
FLUSH_GRACE = 0.5           # seconds between the watchdog's message and MPI_Abort


class DistributedError(RuntimeError):
    """A rank of a distributed run failed or stopped answering. `ranks`: which ones."""

    def __init__(self, message, ranks=()):
        super().__init__(message)
        self.ranks = tuple(ranks)


def launched_size(environ=None):
    """The number of ranks an MPI launcher started (its environment variables), or 0 when
    this process was not started by one."""
    environ = os.environ if environ is None else environ
    for name in SIZE_VARIABLES:
        text = environ.get(name, "")
        if text.isdigit():
            return int(text)
    return 0


def resolve(distributed, environ=None):
    """'mpi' or 'none' for a `--distributed` setting: 'auto' is 'mpi' when an MPI
    launcher started more than one rank, else 'none'."""
    if distributed not in CHOICES:
        raise ValueError(f"distributed must be one of {', '.join(CHOICES)}, got {distributed!r}")
    if distributed == "auto":
        return "mpi" if launched_size(environ) > 1 else "none"
    return distributed


class ProcessGroup:
    """The group of one process: rank 0 of 1, whose collectives return their input. The
    base of `MPIGroup`, so that a trainer calls the same methods alone or in a group."""

    rank, world_size, local_rank, local_size = 0, 1, 0, 1
    backend = "none"

    @property
    def is_main(self):
        """Whether this rank logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    def all_reduce_(self, array, what="an all-reduce"):
        """Sum `array` over the ranks, in place; returns it. `what` names the collective in
        an error."""
        return array

    def broadcast_(self, array, root=0, what="a broadcast"):
        """Copy root's `array` into every rank's, in place; returns it."""
        return array

    def all_gather(self, obj, what="a gather"):
        """[each rank's obj] in rank order, on every rank (pickled: keep them small)."""
        return [obj]

    def broadcast(self, obj, root=0, what="a broadcast"):
        """root's obj, on every rank."""
        return obj

    def reduce_scatter_(self, array, shard, what="a reduce-scatter"):
        """Sum `array` (world_size pieces of shard's size) over the ranks and write this
        rank's piece of the sum into `shard`; returns shard."""
        shard[...] = array
        return shard

    def all_gather_(self, array, what="an all-gather"):
        """In place: piece r of `array` (world_size equal pieces) from rank r, on every
        rank; returns it."""
        return array

    def describe(self):
        """One line saying who the ranks are."""
        return "1 process"

    def abort(self, status=1):
        """End every rank of the run now, with exit status `status`."""
        os._exit(status)

    def close(self):
        """Stop the watchdog (a group of one has none)."""


class MPIGroup(ProcessGroup):
    """The ranks of an MPI communicator (`mpi4py.MPI.COMM_WORLD` by default), with a
    watchdog on every collective (see the module docstring).

    timeout: the least seconds a collective may wait (default `worker_timeout()`).
    """

    backend = "mpi"

    def __init__(self, comm=None, timeout=None):
        from mpi4py import MPI     # starts MPI (MPI_Init) on first import
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.timeout = worker_timeout() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        # Who is where, for messages and for the watchdog's look at ranks on this machine.
        self.peers = self.comm.allgather((socket.gethostname(), os.getpid()))
        self._waiting = None            # (what, since, patience) while in a collective
        self._last_end = time.monotonic()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="tinygpt-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # --- collectives ------------------------------------------------------------------------
    def all_reduce_(self, array, what="an all-reduce"):
        with self._collective(what):
            self.comm.Allreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM)
        return array

    def broadcast_(self, array, root=0, what="a broadcast"):
        with self._collective(what):
            self.comm.Bcast(array, root=root)
        return array

    def all_gather(self, obj, what="a gather"):
        with self._collective(what):
            return self.comm.allgather(obj)

    def broadcast(self, obj, root=0, what="a broadcast"):
        with self._collective(what):
            return self.comm.bcast(obj, root=root)

    def reduce_scatter_(self, array, shard, what="a reduce-scatter"):
        with self._collective(what):
            self.comm.Reduce_scatter_block(array, shard, op=self.MPI.SUM)
        return shard

    def all_gather_(self, array, what="an all-gather"):
        with self._collective(what):
            self.comm.Allgather(self.MPI.IN_PLACE, array)
        return array

    @contextlib.contextmanager
    def _collective(self, what):
        start = time.monotonic()
        # A slower rank may legitimately take as long as this one worked, many times over.
        patience = max(self.timeout, TIMEOUT_STEPS * (start - self._last_end))
        with self._lock:
            self._waiting = (what, start, patience)
        try:
            yield
        finally:
            with self._lock:
                self._waiting = None
            self._last_end = time.monotonic()

    # --- the watchdog -----------------------------------------------------------------------
    def _watch(self):
        while not self._closed.wait(WATCH_INTERVAL):
            with self._lock:
                waiting = self._waiting
            if waiting is None:
                continue
            what, since, patience = waiting
            problem = self.check_peers()
            waited = time.monotonic() - since
            if problem is None and waited > patience:
                problem = (f"{what} has waited {waited:.0f} s for the other ranks (a rank "
                           "stuck, stopped or lost on another machine?)")
            if problem is not None:
                self._fail(problem)

    def check_peers(self):
        """A sentence naming a rank on this machine that has exited or is stopped
        (SIGSTOP), or None. Ranks on other machines are not looked at."""
        host = socket.gethostname()
        for rank, (their_host, pid) in enumerate(self.peers):
            if rank == self.rank or their_host != host:
                continue
            state = process_state(pid)
            if state in (None, "Z", "X"):
                return f"rank {rank} (pid {pid}) has exited (killed, or out of memory?)"
            if state in ("T", "t"):
                return f"rank {rank} (pid {pid}) is stopped (SIGSTOP?)"
        return None

    def _fail(self, problem):
        """Say what happened and end the run: the ranks are out of step, and a rank inside
        a collective cannot be reached any other way."""
        message = (f"tinygpt: error: rank {self.rank}: {problem}; ending every rank (the "
                   "last checkpoint is kept)\n")
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        time.sleep(FLUSH_GRACE)         # the launcher forwards it before it ends the ranks
        self.abort(1)

    # --- the rest ---------------------------------------------------------------------------
    def describe(self):
        hosts = sorted({host for host, _ in self.peers})
        return (f"{self.world_size} MPI ranks on {len(hosts)} machine"
                f"{'s' if len(hosts) > 1 else ''} ("
                + ", ".join(f"rank {r}: pid {pid} on {host}"
                            for r, (host, pid) in enumerate(self.peers)) + ")")

    def abort(self, status=1):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        self.comm.Abort(status)

    def close(self):
        self._closed.set()


def process_state(pid):
    """The state letter of a process on this machine (R, S, T, Z, ...; /proc), or None
    when there is no such process. Where /proc is missing, 'R' (taken as alive)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else "R"
    except OSError:
        return "R"
    return text.rpartition(")")[2].split()[0] if ")" in text else "R"


def init_process_group(distributed="auto", timeout=None):
    """The process group of this run: an `MPIGroup` for 'mpi' (or 'auto' under an MPI
    launcher), else the group of one process. Each rank's tinygpt and BLAS threads are
    the cores shared out among the ranks on its machine."""
    if resolve(distributed) == "none":
        return ProcessGroup()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise ImportError("distributed 'mpi' needs mpi4py and an MPI library: pip install "
                          "'tinygpt[mpi]' (mpi4py and MPICH)") from None
    group = MPIGroup(timeout=timeout)
    if group.local_size > 1:
        each = max(1, fast_threads.usable_cores() // group.local_size)
        fast_threads.set_num_threads(each)
        fast_blas.set_blas_num_threads(each)
    return group


def rank_seed(seed, rank, stream):
    """A 63-bit seed for `rank`'s own random stream `stream` of a run seeded `seed`
    (its spawn of the seed, as numpy.random.SeedSequence spawns)."""
    sequence = np.random.SeedSequence(seed, spawn_key=(stream, rank))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))
