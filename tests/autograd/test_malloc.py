"""Importing tinygpt leaves the process's allocator alone; the trainer's explicit call tunes
it. Checked in fresh processes through glibc's own statistics (mallinfo2): a 16 MB array
gets its own mapping from the kernel under malloc's defaults, and comes from the heap once
`keep_freed_memory()` has run."""

import ctypes
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

PROBE = textwrap.dedent("""
    import ctypes, sys
    class Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    import numpy as np
    import tinygpt
    {action}
    before = libc.mallinfo2().hblkhd
    a = np.ones(1 << 21)                      # 16 MB
    print(libc.mallinfo2().hblkhd - before)   # bytes in new kernel mappings
""")


def _glibc_with_mallinfo2():
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _glibc_with_mallinfo2(),
                                reason="needs glibc's mallinfo2 (Linux)")


def mapped_bytes(action, env=None):
    import os
    out = subprocess.run([sys.executable, "-c", PROBE.format(action=action)], cwd=REPO,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TINYGPT_SYSTEM_MALLOC": "", **(env or {})})
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


def test_importing_tinygpt_leaves_malloc_as_it_was():
    assert mapped_bytes("pass") >= 1 << 24


def test_the_trainer_tunes_malloc_explicitly():
    tune = "from tinygpt.autograd.fast import malloc; assert malloc.keep_freed_memory()"
    assert mapped_bytes(tune) == 0
    trainer = ("from tinygpt.train import Trainer, TrainConfig\n"
               "import tempfile; Trainer(TrainConfig(out_dir=tempfile.mkdtemp(), max_iters=1, "
               "n_layer=1, n_embd=8, n_head=1, block_size=8, batch_size=2, "
               "save_checkpoints=False))")
    assert mapped_bytes(trainer) == 0


def test_tinygpt_system_malloc_keeps_the_defaults_even_for_the_trainer():
    tune = "from tinygpt.autograd.fast import malloc; assert not malloc.keep_freed_memory()"
    assert mapped_bytes(tune, env={"TINYGPT_SYSTEM_MALLOC": "1"}) >= 1 << 24
