"""Untrusted files cannot exhaust memory or crash the reader: checkpoints are checked from
the zip directory and the .npy headers before any array is read, a config's size is checked
against its file and the machine before a model is built, and every malformed weight file
gives one ValueError naming the file and the problem. The crafted files are made here."""

import io
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygpt as tg
from runs import corpus, env
from tinygpt.model import pretrained, safetensors
from tinygpt.model.checkpoint import CheckpointError
from tinygpt.train import TrainConfig, Trainer, load_for_inference

CONFIG = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)


def write_checkpoint(path):
    """A real checkpoint of a one-step run, at `path` (a file in its own folder)."""
    config = TrainConfig(data=corpus(path.parent), out_dir=str(path.parent / "run"),
                         max_iters=1, eval_interval=1, eval_iters=1, n_layer=1, n_head=2,
                         n_embd=8, block_size=8, batch_size=2, processes=1)
    Trainer(config, log=lambda line: None).run()
    os.replace(path.parent / "run" / "ckpt.npz", path)
    return path


def npy_bytes(array=None, header=None, data=b""):
    """A .npy member: an array's, or a given header dict with the given data bytes."""
    out = io.BytesIO()
    if array is not None:
        np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
        return out.getvalue()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + data


def rewrite(path, members=None, meta=None, compressed=()):
    """Rebuild the checkpoint at `path` with some members replaced (name -> .npy bytes, or
    None to drop it), its JSON changed by `meta(dict)`, and the named members deflated."""
    with zipfile.ZipFile(path) as z:
        contents = {info.filename[:-4]: z.read(info) for info in z.infolist()}
    if meta is not None:
        document = json.loads(np.lib.format.read_array(io.BytesIO(contents["__tinygpt__"]))
                              .tobytes())
        text = meta(document)
        text = text if isinstance(text, str) else json.dumps(document)
        contents["__tinygpt__"] = npy_bytes(np.frombuffer(text.encode(), np.uint8))
    for name, data in (members or {}).items():
        if data is None:
            contents.pop(name)
        else:
            contents[name] = data
    with zipfile.ZipFile(path, "w") as z:
        for name, data in contents.items():
            kind = zipfile.ZIP_DEFLATED if name in compressed else zipfile.ZIP_STORED
            z.writestr(name + ".npy", data, compress_type=kind)
    return path


def refused(path, match):
    with pytest.raises(CheckpointError, match=match) as error:
        load_for_inference(path)
    assert str(path) in str(error.value)
    return error.value


# --- 6. checkpoints: checked before any array is read -------------------------------------------
def test_a_compressed_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "ckpt.npz")
    # 64 MB of zeros that deflate to 64 kB, claiming to be the token embedding.
    bomb = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (16 * 2**20,)},
                     data=bytes(64 * 2**20))
    rewrite(path, {"model/transformer.wte.weight": bomb},
            compressed={"model/transformer.wte.weight"})
    assert os.path.getsize(path) < 2**20
    reads = []
    monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: reads.append(a))
    refused(path, "is compressed")
    assert reads == []                          # not one array was read


def test_members_whose_header_lies_about_their_size_are_refused(tmp_path):
    path = write_checkpoint(tmp_path / "ckpt.npz")
    liar = npy_bytes(header={"descr": "<f4", "fortran_order": False, "shape": (10**12,)},
                     data=bytes(16))
    rewrite(path, {"model/transformer.wpe.weight": liar})
    refused(path, r"declares shape \(1000000000000,\)")
    rewrite(path, {"model/transformer.wpe.weight": npy_bytes(np.zeros((9, 8), np.float32))})
    refused(path, r"transformer\.wpe\.weight has shape \(9, 8\), the config implies \(8, 8\)")
    rewrite(path, {"optim/evil": npy_bytes(np.zeros(3))})
    refused(path, "unexpected array 'optim/evil'")
    obj = npy_bytes(header={"descr": "|O", "fortran_order": False, "shape": (1,)}, data=b"")
    rewrite(path, {"optim/evil": obj})
    refused(path, "checkpoints hold numbers only")


def test_an_optimizer_array_of_no_parameters_shape_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "ckpt.npz")

    def bigger(document):
        name = document["optimizer"]["state"]["__items__"][0][1]["exp_avg"]["__array__"]
        rewrite_member[name] = npy_bytes(np.zeros((4096, 4096), np.float32))

    rewrite_member = {}
    rewrite(path, meta=bigger)
    rewrite(path, rewrite_member)
    refused(path, r"has shape \(4096, 4096\), the shape of no parameter")


def test_deeply_nested_json_is_refused_not_a_recursion_error(tmp_path):
    path = write_checkpoint(tmp_path / "ckpt.npz")
    rewrite(path, meta=lambda d: json.dumps(d)[:-1] + ', "x": ' + "[" * 100_000
            + "]" * 100_000 + "}")
    refused(path, "not JSON")


def load_with_little_memory(tmp_path, code, limit_gb=3):
    """Run `code` in a child whose address space is limited: a loader that allocates what
    a crafted file asks for fails there (MemoryError) instead of swapping this machine."""
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_gb} << 30, "
               f"{limit_gb} << 30))\n")
    return subprocess.run([sys.executable, "-c", prelude + code], env=env(tmp_path),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS: Linux")
def test_a_million_layers_in_a_checkpoint_are_refused_from_the_sizes(tmp_path):
    path = write_checkpoint(tmp_path / "ckpt.npz")

    def huge(document):
        document["model_config"]["n_layer"] = 1_000_000

    rewrite(path, meta=huge)
    done = load_with_little_memory(tmp_path, (
        "from tinygpt.train import load_for_inference\n"
        "from tinygpt.model.checkpoint import CheckpointError\n"
        f"try:\n    load_for_inference({str(path)!r})\n"
        "except CheckpointError as e:\n    print(e)\n"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "n_layer=1000000" in done.stdout and "describes" in done.stdout


# --- 7. pretrained folders: the config against its file and the machine ---------------------------
def hf_folder(folder, config=None, tensors=None):
    folder.mkdir(exist_ok=True)
    model = tg.GPT(tg.GPTConfig(**CONFIG))
    weights = pretrained.hf_state_dict(model) if tensors is None else tensors
    safetensors.save_file(weights, folder / "model.safetensors")
    hf = pretrained.config_to_hf(model.config)
    hf.update(config or {})
    (folder / "config.json").write_text(json.dumps(hf))
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS: Linux")
def test_a_million_layers_in_config_json_are_refused_from_the_sizes(tmp_path):
    folder = hf_folder(tmp_path / "hf", {"n_layer": 1_000_000})
    done = load_with_little_memory(tmp_path, (
        "from tinygpt.model.pretrained import load_pretrained\n"
        f"try:\n    load_pretrained({str(folder)!r})\n"
        "except ValueError as e:\n    print(e)\n"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "n_layer=1000000" in done.stdout and "does not belong" in done.stdout


def test_a_model_larger_than_the_machine_is_refused(tmp_path):
    # A sparse file: terabytes long, nothing on disk. Its one tensor tiles the data section,
    # so only the size of the model config.json describes can refuse it.
    folder = tmp_path / "hf"
    folder.mkdir()
    size = 1 << 42                                  # 4 TiB of "data"
    header = json.dumps({"junk": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    header += " " * (-len(header) % 8)
    path = folder / "model.safetensors"
    with open(path, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header.encode())
        try:
            f.truncate(8 + len(header) + size)
        except OSError:
            pytest.skip("this file system has no sparse files")
    hf = pretrained.config_to_hf(tg.GPTConfig(**{**CONFIG, "vocab_size": 1 << 30,
                                                 "n_embd": 512, "n_head": 8}))
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="more than this machine's"):
        pretrained.load_pretrained(folder)


# --- 8. safetensors: one ValueError naming the file, whatever the bytes ---------------------------
def raw_safetensors(path, header_text, data=b""):
    header = header_text.encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + data)
    return path


@pytest.mark.parametrize("header, match", [
    ("[" * 100_000, "nests too deeply"),
    (json.dumps({"w": {"dtype": "F32", "shape": [1] * 100, "data_offsets": [0, 4]}}),
     "100 dimensions"),
    (json.dumps({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}),
     "unknown dtype"),
], ids=["100000 [", "100 dimensions", "a list as dtype"])
def test_malformed_safetensors_headers_give_one_value_error(tmp_path, header, match):
    path = raw_safetensors(tmp_path / "model.safetensors", header, bytes(4))
    for load in (safetensors.load_file, safetensors.load_metadata):
        with pytest.raises(ValueError, match=match) as error:
            load(path)
        assert str(path) in str(error.value)
    hf_folder(tmp_path)
    raw_safetensors(tmp_path / "model.safetensors", header, bytes(4))
    with pytest.raises(ValueError, match=match):
        pretrained.load_pretrained(tmp_path)


def valid_safetensors():
    out = io.BytesIO()
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.int64)}
    header = {}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": {"f": "F32", "i": "I64"}[array.dtype.kind],
                        "shape": list(array.shape), "data_offsets": [offset,
                                                                     offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header).encode()
    out.write(len(text).to_bytes(8, "little") + text)
    for array in tensors.values():
        out.write(array.tobytes())
    return out.getvalue()


edits = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)


@settings(max_examples=60)
@given(edits=edits, cut=st.integers(0, 10_000), text=st.sampled_from(
    ["", "[", "{}", '{"a":', "[[[[", '"x"', "1e999", '{"a": {"dtype": "F32"}}']))
def test_fuzzed_safetensors_files_never_crash_the_reader(tmp_path_factory, edits, cut, text):
    data = bytearray(valid_safetensors())
    for where, value in edits:
        data[where % len(data)] = value
    if text:                                     # splice JSON fragments into the header
        where = 8 + cut % max(1, int.from_bytes(data[:8], "little") % len(data))
        data[where:where] = text.encode()
    data = bytes(data[:len(data) - cut % 7])
    path = tmp_path_factory.mktemp("fuzz") / "w.safetensors"
    path.write_bytes(data)
    try:
        safetensors.load_file(path)
    except ValueError as e:
        assert str(path) in str(e)


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("original") / "ok.npz").read_bytes()


@settings(max_examples=30)
@given(edits=edits, cut=st.integers(0, 50_000))
def test_fuzzed_checkpoints_never_crash_the_reader(tmp_path_factory, checkpoint_bytes, edits,
                                                   cut):
    folder = tmp_path_factory.mktemp("fuzz")
    data = bytearray(checkpoint_bytes)
    for where, value in edits:
        data[where % len(data)] = value
    path = folder / "ckpt.npz"
    path.write_bytes(bytes(data[:len(data) - cut % len(data)]))
    try:
        load_for_inference(path)
    except CheckpointError as e:
        assert str(path) in str(e)


def test_every_json_reader_refuses_deep_nesting_naming_the_file(tmp_path):
    from tinygpt.data import BPETokenizer
    from tinygpt.data.tokenizers import load_tokenizer
    from tinygpt.train.stats import read_log
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\n")
    for read in (BPETokenizer.load, load_tokenizer,
                 lambda p: BPETokenizer.from_encoder_files(p, tmp_path / "vocab.bpe")):
        with pytest.raises(ValueError, match="deep.json"):
            read(deep)
    log = tmp_path / "log.jsonl"
    log.write_text('{"event": "eval", "iter": 0}\n' + "[" * 100_000 + "\n")
    assert len(read_log(log)["eval"]) == 1        # the crafted line is skipped


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)


@settings(max_examples=40)
@given(key=st.sampled_from(["model_config", "model_aliases", "optimizer", "tokenizer",
                            "train_config", "iter_num", "sampler", "rng", "history", "data"]),
       value=json_values)
def test_crafted_json_in_a_checkpoint_gives_one_value_error(tmp_path_factory, checkpoint_bytes,
                                                            key, value):
    # Any value where the trainer expects another: refused with a ValueError on resume
    # (or, where harmless, resumed), never another exception.
    folder = tmp_path_factory.mktemp("crafted")
    (folder / "ckpt.npz").write_bytes(checkpoint_bytes)     # its data file is still there
    rewrite(folder / "ckpt.npz", meta=lambda document: document.__setitem__(key, value))
    try:
        Trainer(TrainConfig(out_dir=str(folder), resume=True), log=lambda line: None,
                given={"out_dir", "resume"}).close()
    except ValueError as e:
        assert "Traceback" not in str(e)
