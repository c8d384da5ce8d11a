"""The GPU check's plumbing (`python -m bench gpu --tiny`), on whatever CUDA the
suite has (the CuPy stand-in without a GPU): every section runs and reports, the JSON
holds what the GPU run will be read for, a failing section is reported while the others
run, and the time budget skips what would start after it. The figures themselves need a
GPU."""

import json

import pytest

from conftest import CUPY_STANDIN

from bench import gpu

pytestmark = [pytest.mark.cuda, pytest.mark.usefixtures("cuda_device")]


def read(out):
    return json.loads((out / "gpu_check.json").read_text())


def test_every_section_runs_on_tiny_shapes_and_writes_its_results(tmp_path, capsys):
    assert gpu.main(["--tiny", "--out", str(tmp_path), "--no-torch"]) == 0
    results = read(tmp_path)
    sections = results["sections"]
    assert list(sections) == list(gpu.SECTIONS)
    assert all(entry["status"] == "ok" for entry in sections.values()), sections
    assert sections["gradcheck"]["failed"] == [] and sections["gradcheck"]["checks"] > 0
    for dtype, tolerance in (("float64", 1e-12), ("float32", 1e-5)):
        parity = sections["parity"][dtype]
        assert parity["loss_rel_err"] < tolerance and parity["grad_max_rel_err"] < tolerance
    assert sections["syncs"]["step_transfers"][-1] == 0
    if CUPY_STANDIN:                # one device: the two-rank NCCL check says why it skips
        assert sections["nccl"]["skipped"] == "needs 2 GPUs, this machine has 1"
    assert sections["syncs"]["generate_transfers"] <= sections["syncs"]["generate_tokens"]
    assert sections["tests"]["exit_code"] == 0 and "passed" in sections["tests"]["summary"]
    assert (tmp_path / "tests.log").read_text()
    assert sections["train"]["tiny"]["tinygpt_ms"] > 0
    precision = sections["precision"]
    assert precision["float16"]["loss_scale"] > 0 and precision["float32"]["loss_scale"] is None
    assert precision["speedup"] > 0 and precision["float16"]["val_loss"] > 0
    assert sections["generate"]["tinygpt_tokens_per_s"] > 0
    assert results["fuse_fallbacks"] == {}
    assert "done in" in (tmp_path / "gpu_check.log").read_text()


def test_a_failing_section_is_reported_and_the_rest_run(tmp_path, monkeypatch):
    def broken(report, *args):
        raise RuntimeError("out of GPU memory")

    monkeypatch.setattr(gpu, "parity", broken)
    status = gpu.main(["--tiny", "--out", str(tmp_path), "--no-torch",
                       "--sections", "versions,parity,syncs"])
    sections = read(tmp_path)["sections"]
    assert status == 1
    assert sections["parity"]["status"] == "failed"
    assert "out of GPU memory" in sections["parity"]["error"]
    assert sections["versions"]["status"] == sections["syncs"]["status"] == "ok"


def test_the_budget_skips_what_would_start_after_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu.main(["--tiny", "--budget", "0", "--sections", "versions,train",
                     "--no-torch"]) == 0
    sections = read(tmp_path)["sections"]
    assert all(e["status"] == "skipped" and "budget" in e["reason"] for e in sections.values())


def test_unknown_sections_are_named(capsys):
    with pytest.raises(SystemExit):
        gpu.main(["--sections", "versions,speed"])
    assert "speed" in capsys.readouterr().err


def test_pytorchs_kv_cache_generation_gives_tinygpts_greedy_tokens():
    torch = pytest.importorskip("torch")
    import tinygpt as tg
    from bench.torch_gpt import torch_gpt_class
    from tinygpt.model import GPT, GPTConfig
    config = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=40)
    tg.manual_seed(0)
    ours = GPT(config)
    theirs = torch_gpt_class()(config)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                            for k, v in ours.state_dict().items()})
    theirs.eval()
    prompt = [[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]]
    expected = ours.generate(tg.tensor(prompt), 12, do_sample=False).numpy()
    got = gpu.torch_generate_cached(torch, theirs, torch.tensor(prompt), 12).numpy()
    assert got.tolist() == expected.tolist()
