"""Gradients all-reduced across GPUs with NCCL (`cupy.cuda.nccl`), one GPU per rank (floor 6).
Imports: autograd (the backend); CuPy's NCCL module when one is made.

An MPI launch starts the ranks and gives each its rank and its rank on its machine (its
local rank); rank r uses that machine's GPU number local_rank (`use_local_gpu`, called
before anything is put on a GPU). The ranks then build one NCCL communicator: rank 0 makes
its unique id and the MPI group broadcasts it. `DistributedDataParallel` (ddp.py) reduces
its gradient buffer, which lives on the GPU, with `all_reduce_`: NCCL reads and writes GPU
memory directly, over NVLink or the network, so nothing passes through the host, and the
call only queues the work on the current stream (it is ordered with the kernels before and
after it, and the host does not wait).

The ranks' status exchange before each all-reduce (ddp.py) stays on the host, over MPI: a
rank that failed, stopped or died is noticed there, by the MPI group's watchdog, before
the others queue an all-reduce it would never join.
"""

from ..autograd import backend

# ncclDataType_t values, by NumPy dtype name.
NCCL_TYPES = {"float16": 6, "float32": 7, "float64": 8}
NCCL_SUM = 0


def use_local_gpu(group):
    """Make GPU number `group.local_rank` this process's current device; raise ValueError
    when this machine has fewer GPUs than ranks."""
    cupy = backend.array_module_for_device("cuda")
    count = cupy.cuda.runtime.getDeviceCount()
    if group.local_rank >= count:
        raise ValueError(f"{group.local_size} ranks run on this machine but it has {count} "
                         f"GPU{'s' if count != 1 else ''}: start one rank per GPU "
                         f"(mpiexec -n {count} per machine)")
    cupy.cuda.Device(group.local_rank).use()


class NCCLCommunicator:
    """An NCCL communicator over the ranks of `group` (each on its own GPU), with the
    collectives DistributedDataParallel uses on GPU arrays, in place."""

    def __init__(self, group):
        cupy = backend.array_module_for_device("cuda")
        try:
            nccl = backend.cupy_submodule("cuda.nccl")
        except ImportError:
            raise ImportError("gradients on GPUs are all-reduced with NCCL, which this CuPy "
                              "lacks: install a CuPy wheel built with NCCL (cupy-cuda12x) "
                              "and NCCL itself (pip install nvidia-nccl-cu12)") from None
        self.cupy, self.nccl, self.group = cupy, nccl, group
        uid = group.broadcast(nccl.get_unique_id() if group.rank == 0 else None, root=0,
                              what="NCCL's unique id")
        self.comm = nccl.NcclCommunicator(group.world_size, uid, group.rank)

    def _type(self, array):
        name = str(array.dtype)
        if name not in NCCL_TYPES:
            raise TypeError(f"NCCL reduces {', '.join(NCCL_TYPES)} arrays here, got {name}")
        if not array.flags.c_contiguous:
            raise ValueError("NCCL needs a contiguous array")
        return NCCL_TYPES[name]

    def all_reduce_(self, array, what="an all-reduce"):
        """Sum `array` (on this rank's GPU) over the ranks, in place, queued on the current
        stream; returns it."""
        kind = self._type(array)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.allReduce(array.data.ptr, array.data.ptr, array.size, kind, NCCL_SUM, stream)
        return array

    def broadcast_(self, array, root=0, what="a broadcast"):
        """Copy root's `array` into every rank's, in place, queued on the current stream."""
        kind = self._type(array)
        stream = self.cupy.cuda.get_current_stream().ptr
        self.comm.bcast(array.data.ptr, array.size, kind, root, stream)
        return array

    def close(self):
        """Free the communicator (once)."""
        if self.comm is not None:
            self.comm.destroy()
            self.comm = None
