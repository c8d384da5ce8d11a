"""The host a benchmark ran on, for the header of its table: the CPU model, NumPy's BLAS
library and version (and OPENBLAS_CORETYPE where it forces OpenBLAS's kernels), NumPy's
version and the thread counts (tinygpt's, BLAS's, PyTorch's),
so that figures from different machines are never mixed up. Not a benchmark itself:
`python -m bench train` and `generate` print `header_lines(host_info(torch))`.

Imports: numpy, tinygpt's fast-kernel thread controls, the standard library. Never imported
by the package.
"""

import os
import platform

import numpy as np

from tinygpt.autograd.fast import blas, threads

CPUINFO = "/proc/cpuinfo"
# OpenBLAS's x86 core names whose kernels use at most AVX2.
AVX2_CORES = ("haswell", "zen", "sandybridge", "nehalem", "core2", "prescott", "atom")
# The /proc/cpuinfo fields that name the CPU, by architecture (x86, then ARM and others).
CPU_FIELDS = ("model name", "Model", "Hardware", "cpu model", "Processor")


def cpu_model(cpuinfo=CPUINFO):
    """The CPU's model name: the first of CPU_FIELDS in `cpuinfo` (Linux), else what
    `platform` knows (processor, else machine), else "unknown CPU"."""
    try:
        with open(cpuinfo, errors="replace") as f:
            fields = {}
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip(), value.strip())
        for key in CPU_FIELDS:
            if key in fields:
                return " ".join(fields[key].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def numpy_blas():
    """(name, version) of the BLAS NumPy was built against, from `numpy.show_config`;
    (None, None) where NumPy does not say."""
    try:
        config = np.show_config(mode="dicts")
        found = config["Build Dependencies"]["blas"]
        return found.get("name"), found.get("version")
    except Exception:          # older NumPy: no mode argument or another layout
        return None, None


def cpu_flags(cpuinfo=CPUINFO):
    """The first CPU's feature flags in `cpuinfo` (Linux, x86: "avx2", "avx512f", ...), or
    an empty set."""
    try:
        with open(cpuinfo, errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def host_info(torch=None):
    """A dict of what the header shows: cpu, cores (usable), avx512 (whether the CPU has
    AVX-512F), blas, blas_version, blas_config (OpenBLAS's own run-time description, or
    None), openblas_coretype (the OPENBLAS_CORETYPE variable, which makes OpenBLAS load
    the kernels it names instead of choosing them for the CPU; None when unset), numpy,
    tinygpt_threads, blas_threads (None where they cannot be read), torch and
    torch_threads (None without `torch`, the imported module)."""
    name, version = numpy_blas()
    return dict(cpu=cpu_model(), cores=threads.usable_cores(),
                avx512="avx512f" in cpu_flags(), blas=name, blas_version=version,
                blas_config=blas.blas_config(),
                openblas_coretype=os.environ.get("OPENBLAS_CORETYPE") or None,
                numpy=np.__version__,
                tinygpt_threads=threads.get_num_threads(),
                blas_threads=blas.get_blas_num_threads(),
                torch=None if torch is None else torch.__version__,
                torch_threads=None if torch is None else torch.get_num_threads())


def header_lines(info):
    """The header of a benchmark table, from `host_info`'s dict: two lines."""
    def known(value):
        return "unknown" if value is None else value

    blas_text = f"{known(info['blas'])} {known(info['blas_version'])}"
    if info.get("blas_config"):
        blas_text += f" ({info['blas_config']})"
    forced = info.get("openblas_coretype")
    if forced:
        blas_text += f"; OPENBLAS_CORETYPE={forced} chooses its kernels"
        if info.get("avx512") and forced.lower() in AVX2_CORES:
            blas_text += " (AVX2 kernels on a CPU with AVX-512: unset it for OpenBLAS's own choice)"
    torch_text = ("PyTorch not measured" if info.get("torch") is None else
                  f"PyTorch {info['torch']} {info['torch_threads']} threads")
    return [f"host: {info['cpu']}, {info['cores']} usable cores; NumPy {info['numpy']}, "
            f"BLAS {blas_text}",
            f"threads: tinygpt {info['tinygpt_threads']}, BLAS "
            f"{known(info['blas_threads'])} (held to 1 inside tinygpt's kernels), "
            f"{torch_text}; OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"]
