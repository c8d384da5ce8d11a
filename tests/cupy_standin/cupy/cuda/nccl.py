"""cupy.cuda.nccl on the stand-in: NCCL's calls on a communicator of one rank (the stand-in
has one device), checking what real NCCL needs of its arguments: the unique id of
`get_unique_id`, a rank below the communicator's size, addresses and element counts, one
of NCCL's data types, the sum, a stream handle. With one rank an all-reduce or a broadcast
leaves the data as it is (a separate receive buffer gets a copy). What it cannot catch:
anything about two or more GPUs, NCCL's speed, asynchronous errors."""

import ctypes

NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32, NCCL_INT64, NCCL_UINT64 = range(6)
NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 6, 7, 8
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
_SIZES = {NCCL_INT8: 1, NCCL_UINT8: 1, NCCL_INT32: 4, NCCL_UINT32: 4, NCCL_INT64: 8,
          NCCL_UINT64: 8, NCCL_FLOAT16: 2, NCCL_FLOAT32: 4, NCCL_FLOAT64: 8}
_ID_LENGTH = 128


class NcclError(RuntimeError):
    pass


def get_unique_id():
    return tuple(range(_ID_LENGTH))


class NcclCommunicator:
    def __init__(self, ndev, commId, rank):
        if not (isinstance(commId, tuple) and len(commId) == _ID_LENGTH):
            raise NcclError("invalid unique id (not from get_unique_id)")
        if ndev != 1 or rank != 0:
            raise NcclError(f"the stand-in has one device: ndev 1, rank 0; got {ndev}, {rank}")
        self.ndev, self.rank, self.destroyed = ndev, rank, False

    def _check(self, pointers, count, datatype, stream):
        if self.destroyed:
            raise NcclError("the communicator was destroyed")
        if datatype not in _SIZES:
            raise NcclError(f"invalid data type {datatype!r}")
        if not (isinstance(count, int) and count >= 0):
            raise NcclError(f"invalid count {count!r}")
        if not all(isinstance(p, int) and p > 0 for p in pointers):
            raise NcclError(f"invalid buffer address in {pointers!r}")
        if not isinstance(stream, int):
            raise NcclError(f"invalid stream {stream!r}")
        return count * _SIZES[datatype]

    def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
        size = self._check((sendbuf, recvbuf), count, datatype, stream)
        if op not in (NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN):
            raise NcclError(f"invalid reduction {op!r}")
        if sendbuf != recvbuf:
            ctypes.memmove(recvbuf, sendbuf, size)

    def bcast(self, buff, count, datatype, root, stream):
        self._check((buff,), count, datatype, stream)
        if root != 0:
            raise NcclError(f"invalid root {root!r} for one rank")

    def destroy(self):
        self.destroyed = True

    def abort(self):
        self.destroyed = True
