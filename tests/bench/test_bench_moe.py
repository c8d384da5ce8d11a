"""The mixture-of-experts benchmark runs a few iterations of both models and writes its
table and JSON; the trainer logs the experts' aux loss and dropped tokens."""

import json

from bench import moe


def test_runs_a_few_iterations_and_writes_json(tmp_path, capsys):
    out = tmp_path / "moe.json"
    assert moe.main(["--iters", "12", "--experts", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dense MLP" in printed and "4 experts, top-2" in printed
    rows = json.loads(out.read_text())["rows"]
    dense, experts = rows["dense MLP"], rows["4 experts, top-2"]
    assert experts["parameters"] > dense["parameters"]
    assert dense["dropped_last_batch"] is None and experts["dropped_last_batch"] >= 0
    assert all(row["val_loss"] > 0 and row["ms_per_iter"] > 0 for row in rows.values())


def test_the_trainer_logs_the_experts(tmp_path):
    from tinygpt.train import TrainConfig, Trainer
    config = TrainConfig(out_dir=str(tmp_path / "run"), max_iters=3, eval_interval=3,
                         eval_iters=1, log_interval=1, n_layer=1, n_embd=16, n_head=2,
                         block_size=8, batch_size=4, n_expert=4, expert_capacity=0.5,
                         processes=1)
    lines = []
    Trainer(config, log=lines.append).run()
    records = [json.loads(line) for line in open(tmp_path / "run" / "log.jsonl")
               if '"train"' in line]
    assert records and all(r["aux_loss"] > 0 and r["dropped"] > 0 for r in records)
    assert any("experts: aux loss" in line for line in lines)
