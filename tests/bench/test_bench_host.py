"""The host header of the benchmarks' tables (`bench.host`): the CPU model, NumPy's
BLAS and its version, NumPy's version and the thread counts; no timing."""

import json
import platform

import numpy as np
import pytest

from tinygpt.autograd.fast import blas, threads
from bench import host

INFO = dict(cpu="Test CPU 9000", cores=3, blas="someblas", blas_version="1.2.3",
            blas_config="SomeBLAS 1.2.3 Zen; core Zen", numpy="9.9.9", tinygpt_threads=3,
            blas_threads=5, torch="7.7.7", torch_threads=4)


def test_cpu_model_reads_the_first_named_field_of_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n"
                       "model name\t: Intel(R) Xeon(R)   Platinum 8480C\nflags\t: avx512f\n"
                       "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\n")
    assert host.cpu_model(cpuinfo) == "Intel(R) Xeon(R) Platinum 8480C"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\n\nModel\t: Raspberry Pi 4 Model B\n")
    assert host.cpu_model(arm) == "Raspberry Pi 4 Model B"


def test_cpu_model_falls_back_to_platform_without_cpuinfo(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert host.cpu_model(tmp_path / "missing") == "riscv64"
    empty = tmp_path / "empty"
    empty.write_text("processor\t: 0\nmodel name\t:\n")
    assert host.cpu_model(empty) == "riscv64"


def test_host_info_reports_this_process(monkeypatch):
    previous = threads.get_num_threads()
    threads.set_num_threads(3)
    try:
        info = host.host_info()
    finally:
        threads.set_num_threads(previous)
    assert info["tinygpt_threads"] == 3 and info["numpy"] == np.__version__
    assert info["blas_threads"] == blas.get_blas_num_threads()
    assert info["cores"] == threads.usable_cores() and info["cpu"]
    assert info["torch"] is None and info["torch_threads"] is None
    name, version = host.numpy_blas()
    assert (info["blas"], info["blas_version"]) == (name, version)
    if blas.can_limit_blas_threads():      # an OpenBLAS: it describes itself
        assert "OpenBLAS" in info["blas_config"] and "core " in info["blas_config"]
    json.dumps(info)                        # goes into the benchmarks' JSON as it is


def test_host_info_reads_torchs_version_and_threads():
    class FakeTorch:
        __version__ = "7.7.7"

        @staticmethod
        def get_num_threads():
            return 6

    info = host.host_info(FakeTorch)
    assert (info["torch"], info["torch_threads"]) == ("7.7.7", 6)


@pytest.mark.parametrize("coretype, avx512, said", [
    (None, True, ""),
    ("SkylakeX", True, "; OPENBLAS_CORETYPE=SkylakeX chooses its kernels"),
    ("Haswell", False, "; OPENBLAS_CORETYPE=Haswell chooses its kernels"),
    ("Haswell", True, "; OPENBLAS_CORETYPE=Haswell chooses its kernels (AVX2 kernels on a "
                      "CPU with AVX-512: unset it for OpenBLAS's own choice)")])
def test_the_header_says_when_openblas_coretype_forces_the_kernels(coretype, avx512, said):
    first, _ = host.header_lines(dict(INFO, openblas_coretype=coretype, avx512=avx512))
    assert first == ("host: Test CPU 9000, 3 usable cores; NumPy 9.9.9, BLAS someblas 1.2.3 "
                     "(SomeBLAS 1.2.3 Zen; core Zen)" + said)


def test_host_info_reads_openblas_coretype_and_the_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert host.host_info()["openblas_coretype"] == "Haswell"
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    assert host.host_info()["openblas_coretype"] is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw\n\n"
                       "processor\t: 1\nflags\t\t: fpu\n")
    assert host.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512bw"}
    assert host.cpu_flags(tmp_path / "missing") == set()


def test_header_lines_name_the_cpu_blas_and_every_thread_count(monkeypatch):
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "5")
    first, second = host.header_lines(INFO)
    assert first == ("host: Test CPU 9000, 3 usable cores; NumPy 9.9.9, BLAS someblas 1.2.3 "
                     "(SomeBLAS 1.2.3 Zen; core Zen)")
    assert second == ("threads: tinygpt 3, BLAS 5 (held to 1 inside tinygpt's kernels), "
                      "PyTorch 7.7.7 4 threads; OPENBLAS_NUM_THREADS=5")


def test_header_lines_say_what_is_unknown_or_not_measured(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    info = dict(INFO, blas=None, blas_version=None, blas_config=None, blas_threads=None,
                torch=None, torch_threads=None)
    first, second = host.header_lines(info)
    assert first.endswith("BLAS unknown unknown")
    assert "BLAS unknown (held" in second and "PyTorch not measured" in second
    assert second.endswith("OPENBLAS_NUM_THREADS=unset")
