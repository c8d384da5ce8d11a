"""The host a benchmark ran on, for the header of its table: the CPU model, NumPy's BLAS
library and version, NumPy's version and the thread counts (tinygpt's, BLAS's, PyTorch's),
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


def host_info(torch=None):
    """A dict of what the header shows: cpu, cores (usable), blas, blas_version,
    blas_config (OpenBLAS's own run-time description, or None), numpy, tinygpt_threads,
    blas_threads (None where they cannot be read), torch and torch_threads (None without
    `torch`, the imported module)."""
    name, version = numpy_blas()
    return dict(cpu=cpu_model(), cores=threads.usable_cores(), blas=name,
                blas_version=version, blas_config=blas.blas_config(), numpy=np.__version__,
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
    torch_text = ("PyTorch not measured" if info.get("torch") is None else
                  f"PyTorch {info['torch']} {info['torch_threads']} threads")
    return [f"host: {info['cpu']}, {info['cores']} usable cores; NumPy {info['numpy']}, "
            f"BLAS {blas_text}",
            f"threads: tinygpt {info['tinygpt_threads']}, BLAS "
            f"{known(info['blas_threads'])} (held to 1 inside tinygpt's kernels), "
            f"{torch_text}; OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}"]
