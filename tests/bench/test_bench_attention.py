"""The attention benchmark runs at tiny sizes and writes its table and JSON (its figures
are the benchmark's business, not the tests')."""

import json

from bench import attention


def test_runs_at_tiny_sizes_and_writes_json(tmp_path, capsys):
    out = tmp_path / "attention.json"
    assert attention.main(["--padding-B", "3", "--padding-T", "16", "--lengths", "32", "48",
                           "--window", "8", "--steps", "1", "--rounds", "1",
                           "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "right-padded, with mask" in printed and "dense / banded" in printed
    results = json.loads(out.read_text())
    assert results["padding"]["mask_ms"] > 0 and 0 < results["padding"]["padded_fraction"] < 1
    assert [row["T"] for row in results["banded"]["rows"]] == [32, 48]
    assert results["banded"]["window"] == 8
