"""cupy.cuda.runtime on the stand-in: one device, no driver."""

is_hip = False


def getDeviceCount():
    return 1


def getDevice():
    return 0


def getDeviceProperties(device):
    return {"name": b"CuPy stand-in (NumPy)", "totalGlobalMem": 0, "multiProcessorCount": 0,
            "major": 0, "minor": 0}


def runtimeGetVersion():
    return 0


def driverGetVersion():
    return 0


def deviceSynchronize():
    pass
