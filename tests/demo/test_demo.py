"""The main job end to end: `polypsynth demo --profile quick` on the phantom (a few minutes)."""

import json

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.evaluate.report import SECTIONS

pytestmark = pytest.mark.slow


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--profile", "quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["lines"]) == 6 and summary["lines"][0].startswith("report: ")
    for line in summary["lines"]:
        assert line in result.output

    results = json.loads((out / "report" / "results.json").read_text())
    names = [c["name"] for c in results["checkpoints"]]
    assert len(names) >= 4  # the iteration-wise analysis
    for name in names:
        kids = results["kid"]["efficientnet"][name]  # Table 2's four comparisons and the two margins
        assert {k for k in kids if k.startswith("syn_")} == {
            "syn_AD_vs_real_AD",
            "syn_AD_vs_real_NON_AD",
            "syn_NON_AD_vs_real_NON_AD",
            "syn_NON_AD_vs_real_AD",
        }
        assert set(kids) - {k for k in kids if k.startswith("syn_")} == {"margin_AD", "margin_NON_AD"}
        assert (out / "bundles" / name / "manifest.json").is_file()
        for c in ("AD", "NON_AD"):
            assert len(list((out / "samples" / name / c).glob("*.png"))) == 16
    # The fidelity ceiling: every real test image once through the run's autoencoder.
    tests = {c: len(list((out / "phantom" / "classif" / "test" / c).glob("*.png"))) for c in ("AD", "NON_AD")}
    assert {c: len(list((out / "reconstructions" / c).glob("*.png"))) for c in tests} == tests
    ceiling = results["fidelity_ceiling"]
    assert ceiling["images"] == tests and all(0.0 <= ceiling[c] <= 1.0 for c in tests)
    assert (
        f"autoencoder ceiling AD {ceiling['AD']:.2f}, NON_AD {ceiling['NON_AD']:.2f}" in summary["lines"][4]
    )
    more = results["classification"]["controls"]["more_real"]  # the power control, in the summary
    assert summary["lines"][3].startswith(
        "power control, gain from the second half of the real training data"
    )
    assert f"{more['mean']:+.3f} [{more['ci95'][0]:+.3f}, {more['ci95'][1]:+.3f}]" in summary["lines"][3]
    md = (out / "report" / "report.md").read_text()
    for section in SECTIONS:  # every section of the report
        assert f"## {section}" in md
    stages = {
        json.loads((c / "polypsynth.json").read_text())["stage"]
        for c in (out / "train" / "checkpoints").iterdir()
    }
    assert stages == {"autoencoder", "pretrain", "finetune"}

    # A second run reuses every finished step.
    again = CliRunner().invoke(main, ["demo", "--profile", "quick", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["timings"]["train"] < 5
