"""The convergence study: budget choice, outputs of a tiny real run, one-line errors."""

from __future__ import annotations

import csv

import pytest

from jaxadv.experiments import convergence as CV


def _row(attack, budget, snr, success=100.0):
    return {"model": "m", "attack": attack, "budget": budget, "snr_median": snr,
            "success_pct": success}  # fmt: skip


def test_choose_the_smallest_budget_within_tolerance_of_ten_times_it():
    rows = [_row("a", 10, 50.0), _row("a", 30, 59.5), _row("a", 100, 60.0), _row("a", 300, 60.2)]
    (pick,) = CV.choose(rows, tolerance=1.0)
    # 10 -> 100: 10 dB apart; 30 -> 300: 0.7 dB: chosen
    assert pick["budget"] == 30 and pick["snr_median_10x"] == 60.2
    # a budget whose success is below its 10x budget's is not chosen
    rows = [_row("a", 10, 60.0, 80.0), _row("a", 100, 60.0, 100.0)]
    assert CV.choose(rows, 1.0)[0]["budget"] is None
    # no 10x budget: nothing can be chosen
    assert CV.choose([_row("a", 10, 60.0), _row("a", 30, 60.0)], 1.0)[0]["budget"] is None


def test_tiny_study_writes_its_tables_and_figure(tmp_path):
    out = tmp_path / "conv"
    CV.main(["--attacks", "deepfool", "--budgets", "1,10", "--clips", "2", "--slots", "2",
             "--out", str(out), "--no-progress", "--no-cache"])  # fmt: skip
    with open(out / "convergence.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["attack"], int(r["budget"])) for r in rows] == [("deepfool", 1), ("deepfool", 10)]
    assert all(int(r["clips"]) == 2 for r in rows)
    # DeepFool never takes more steps than its budget
    assert float(rows[0]["steps_mean"]) <= 1.0 and float(rows[1]["steps_mean"]) <= 10.0
    assert (out / "convergence.png").stat().st_size > 1000
    assert "| vgg13 | deepfool |" in (out / "choice.md").read_text()
    # a second run into the same folder is refused, the files are kept
    before = (out / "convergence.csv").read_bytes()
    with pytest.raises(SystemExit) as e:
        CV.main(["--attacks", "deepfool", "--budgets", "1", "--clips", "1", "--out", str(out)])
    assert e.value.code == 2 and (out / "convergence.csv").read_bytes() == before


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--budgets", "0,10"], "budgets must be integers >= 1"),
        (["--budgets", "ten"], "expected comma-separated integers"),
        (["--attacks", "noise"], "'noise' has no budget"),
    ],
)
def test_bad_flags_are_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        CV.main([*argv, "--out", str(tmp_path / "o"), "--no-cache"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0], err
