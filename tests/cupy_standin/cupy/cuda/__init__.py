"""cupy.cuda on the stand-in: one device, whose work is always done (NumPy is synchronous)."""

from . import runtime  # noqa: F401


class Device:
    """cupy.cuda.Device: device 0 of one."""

    def __init__(self, device=None):
        if device not in (None, 0):
            raise ValueError(f"the CuPy stand-in has one device (0), got {device!r}")
        self.id = 0

    def synchronize(self):
        """Wait for the device's queued work: none is ever queued here."""

    def use(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def compute_capability(self):
        return "00"

    @property
    def mem_info(self):
        return (0, 0)

    def __repr__(self):
        return "<CUDA Device 0>"


def get_device_id():
    return 0


def is_available():
    return True


def get_current_stream():
    return Stream()


class Stream:
    """A stream whose work is done as soon as it is asked for; `ptr` is its handle (0, the
    default stream's)."""

    null = None
    ptr = 0

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


Stream.null = Stream()
