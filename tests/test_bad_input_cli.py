"""Every bad data input of the foundation issue through the CLI: exit 2, one line naming the file
(and line where there is one), and nothing written."""

from __future__ import annotations

import pytest

from afrocomet.cli import main

GOOD = "tweet\tlabel\nnice day\tpositive\nbad day\tnegative\nok day\tneutral\n"


@pytest.mark.parametrize(
    "train, line, needle",
    [
        (b"", None, "empty"),
        ("tweet\tsentiment\nnice\tpositive\n".encode(), 1, "label"),
        ("tweet\tlabel\nnice day\tpositive\textra\n".encode(), 2, "column"),
        ("tweet\tlabel\n   \tpositive\n".encode(), 2, "empty"),
        (b"tweet\tlabel\nnice \xff day\tpositive\n", 2, "UTF-8"),
        ("tweet\tlabel\nnice day\tpositive\nbad day\tnegative\n".encode(), None, "label"),  # no neutral in train
    ],
    ids=["empty-file", "no-label-column", "wrong-columns", "empty-text", "not-utf8",
         "label-sets-differ"],
)
def test_bad_tsv(tmp_path, capsys, train, line, needle):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(train)
    test = tmp_path / "test.tsv"
    test.write_text(GOOD, encoding="utf-8")
    out = tmp_path / "out"
    code = main(["run", "--quick", "--quiet", "--train", str(bad), "--test", str(test), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and str(bad) in err[0] and needle.lower() in err[0].lower(), err
    if line is not None:
        assert f"{bad}:{line}:" in err[0]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["test.tsv", "train.tsv"]


def test_missing_file_lists_what_exists(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.tsv").write_text(GOOD, encoding="utf-8")
    code = main(["run", "--quick", "--quiet", "--train", str(tmp_path / "data" / "train.tsv"),
                 "--test", str(tmp_path / "data" / "test.tsv"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "train.tsv" in err[0] and "test.tsv" in err[0]
    assert not (tmp_path / "out").exists()


def test_missing_language_folder_lists_what_exists(tmp_path, capsys):
    (tmp_path / "hau").mkdir()
    for split in ("train", "dev", "test"):
        (tmp_path / "hau" / f"{split}.tsv").write_text(GOOD, encoding="utf-8")
    code = main(["run", "--quick", "--quiet", "--data-dir", str(tmp_path), "-l", "hau,yor", "--out",
                 str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "yor" in err[0] and "hau" in err[0]
    assert not (tmp_path / "out").exists()


def test_unknown_label_in_afrisenti_layout_lists_allowed(tmp_path, capsys):
    (tmp_path / "hau").mkdir()
    for split in ("dev", "test"):
        (tmp_path / "hau" / f"{split}.tsv").write_text(GOOD, encoding="utf-8")
    bad = tmp_path / "hau" / "train.tsv"
    bad.write_text(GOOD + "so so\tgreat\n", encoding="utf-8")
    code = main(["run", "--quick", "--quiet", "--data-dir", str(tmp_path), "-l", "hau", "--out", str(tmp_path / "out")])
    warning, *err = capsys.readouterr().err.strip().splitlines()  # the files are not AfriSenti's: one warning
    assert warning.startswith("afrocomet: warning: ") and "differ from AfriSenti" in warning
    assert code == 2 and len(err) == 1 and f"{bad}:5:" in err[0] and "negative, neutral, positive" in err[0], err
    assert not (tmp_path / "out").exists()
