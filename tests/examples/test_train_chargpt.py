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
