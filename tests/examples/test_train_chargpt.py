"""examples/train_chargpt.py runs end to end on the embedded corpus and learns."""

import importlib.util
import re
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_chargpt.py"


def test_train_chargpt_example_learns_and_samples(capsys):
    spec = importlib.util.spec_from_file_location("train_chargpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--iters", "40", "--eval_every", "20", "--eval_iters", "4",
                 "--sample_tokens", "40"])
    out = capsys.readouterr().out
    losses = [float(v) for v in re.findall(r"val loss (\d+\.\d+)", out)]
    assert len(losses) == 3
    assert losses[-1] < losses[0] - 0.3          # it learned something
    assert len(out.strip().splitlines()[-1]) > 0   # and sampled text


def test_train_chargpt_on_the_reference_ops_gives_the_same_losses(capsys):
    """--reference_ops true runs every op and AdamW on their reference code: the printed
    losses are the default run's (4 decimals), and the first line says which code ran."""
    import tinygpt as tg
    spec = importlib.util.spec_from_file_location("train_chargpt", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["--iters", "10", "--eval_every", "5", "--eval_iters", "2", "--sample_tokens", "5"]
    outs = []
    for flag in ("false", "true"):
        with tg.use_reference_ops(False):       # the process's ops restored afterwards
            module.main(argv + ["--reference_ops", flag])
        outs.append(capsys.readouterr().out)
    assert outs[0].startswith("ops: fast kernels") and outs[1].startswith("ops: reference")
    losses = [re.findall(r"(train|val) loss (\d+\.\d+)", out) for out in outs]
    assert len(losses[0]) == 6 and losses[0] == losses[1]
