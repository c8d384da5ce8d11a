"""Under an MPI launcher, a command other than `train` (which reports its ranks' errors
itself) runs the same on every rank: its error is printed once, by rank 0; every rank
still exits with the error's status."""

import pytest

from tinygpt.cli import main as cli_main


@pytest.mark.parametrize("size, rank", [("PMI_SIZE", "PMI_RANK"),
                                        ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")])
def test_an_error_is_printed_by_rank_0_only(tmp_path, capsys, monkeypatch, size, rank):
    args = ["cloze", "--data", str(tmp_path / "missing.txt"), "--out_dir", str(tmp_path / "t")]
    monkeypatch.setenv(size, "2")
    monkeypatch.setenv(rank, "1")
    assert cli_main(args) == 1
    assert capsys.readouterr().err == ""
    monkeypatch.setenv(rank, "0")
    assert cli_main(args) == 1
    err = capsys.readouterr().err
    assert "missing.txt" in err and err.count("\n") == 1


def test_without_a_launcher_every_error_is_printed(tmp_path, capsys, monkeypatch):
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_RANK", "1")         # a rank without a world size: not a launch
    assert cli_main(["cloze", "--data", str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err
