"""The main job end to end: `polypsynth demo --profile quick` on the phantom (a few minutes), run
from a wheel of the project installed outside the repository, in a folder of its own, as a user
who ran `pip install polypsynth` would (configs are package data, nothing is read from the repo)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.evaluate.report import SECTIONS
from polypsynth.evaluate.uncertainty import describe

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parents[2]


def _installed_wheel(tmp_path: Path) -> dict:
    """Build the project's wheel and install it (no dependencies: those of this environment serve)
    into a folder of its own; the environment that imports polypsynth from there."""
    wheels, site, source = tmp_path / "wheels", tmp_path / "site", tmp_path / "source"
    # A copy of what the wheel is built from: setuptools builds in the source tree (build/).
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("polypsynth-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_quick_demo_end_to_end(tmp_path):
    env = _installed_wheel(tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [sys.executable, "-c", "import polypsynth; print(polypsynth.__file__)"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(tmp_path / "site")), where  # the wheel, not the checkout
    out = work / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "polypsynth", "demo", "--profile", "quick", "--out", "demo"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Normal output: polypsynth's own progress (a counter over checkpoints and classifier runs),
    # no third-party warnings or per-model loading bars between them.
    assert "Warning" not in result.stderr and "Loading weights" not in result.stderr, result.stderr[-3000:]
    assert "export: 100%" in result.stderr and "classifier 8 of 8" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["lines"]) == 6 and summary["lines"][0].startswith("report: ")
    for line in summary["lines"]:
        assert line in result.stdout

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
        assert set(kids) - {k for k in kids if k.startswith("syn_")} == {
            "margin_AD",
            "margin_NON_AD",
            "shift_free",
        }
        assert (out / "bundles" / name / "manifest.json").is_file()
        for c in ("AD", "NON_AD"):
            assert len(list((out / "samples" / name / c).glob("*.png"))) == 16
    # The autoencoder reference: every real test image once through the run's autoencoder.
    tests = {c: len(list((out / "phantom" / "classif" / "test" / c).glob("*.png"))) for c in ("AD", "NON_AD")}
    assert {c: len(list((out / "reconstructions" / c).glob("*.png"))) for c in tests} == tests
    reconstructed = results["fidelity_reconstructed"]
    assert reconstructed["images"] == tests and all(0.0 <= reconstructed[c] <= 1.0 for c in tests)
    assert results["resolution"] == 64  # the bundles' recorded resolution
    # The summary states the decision, the control's gain and the fidelity threshold.
    assert summary["decision"] == results["selection"]["decision"]
    assert summary["lines"][1].startswith(f"verdict: {summary['decision']} (clinical rule picks ")
    control = results["control"]["name"]
    gain = results["classification"]["gains"][control]
    assert summary["lines"][3].startswith(
        "positive control, real images held out over 2 folds and added back [95%]: "
    )
    assert describe(gain) in summary["lines"][3]
    # One seed (the quick profile), its variance neither measured nor declared: no gain is called.
    assert (
        gain["seeds"] == 1
        and gain["word"] == "cannot tell"
        and "seed variance not measured" in summary["lines"][3]
    )
    recall = results["fidelity_judge"]["recall"]
    assert f"the judge's recall on real test images, AD {recall['AD']:.2f}" in summary["lines"][4]
    md = (out / "report" / "report.md").read_text()
    for section in SECTIONS:  # every section of the report
        assert f"## {section}" in md
    stages = {
        json.loads((c / "polypsynth.json").read_text())["stage"]
        for c in (out / "train" / "checkpoints").iterdir()
    }
    assert stages == {"autoencoder", "pretrain", "finetune"}

    # A second run reuses every finished step.
    again = CliRunner().invoke(main, ["demo", "--profile", "quick", "--out", str(out)])  # from the checkout
    assert again.exit_code == 0, again.output
    assert json.loads((out / "summary.json").read_text())["timings"]["train"] < 5


@pytest.mark.parametrize("fresh", [True, False])
def test_the_demo_refuses_a_folder_it_did_not_make(tmp_path, fresh):
    """`demo --fresh --out DIR` deleted DIR whatever it held: a folder without the demo's marker is
    refused, with or without --fresh, and nothing in it changes."""
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "thesis.txt").write_text("four years")
    result = CliRunner().invoke(
        main, ["demo", "--out", str(folder), "--profile", "quick", *(["--fresh"] if fresh else [])]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: demo folder {folder} is not empty and was not made by `polypsynth demo` (no .polypsynth marker "
        "naming a demo folder): nothing was changed; choose another --out"
    )
    assert [p.name for p in folder.iterdir()] == ["thesis.txt"] and (
        folder / "thesis.txt"
    ).read_text() == "four years"
    # Another polypsynth folder (a report, say) is not the demo's either.
    (folder / "thesis.txt").unlink()
    (folder / ".polypsynth").write_text('{"what": "report folder"}')
    assert CliRunner().invoke(main, ["demo", "--out", str(folder), "--fresh"]).exit_code == 1
    assert (folder / ".polypsynth").read_text() == '{"what": "report folder"}'


def test_fresh_empties_only_the_demos_own_folder(tmp_path):
    from polypsynth.atomic import read_marker
    from polypsynth.demo import _claim

    out = tmp_path / "demo"
    _claim(out, fresh=False)  # a new folder: made and marked first
    assert read_marker(out)["what"] == "demo folder"
    (out / "train").mkdir()
    (out / "train" / "run.json").write_text("{}")
    _claim(out, fresh=False)  # resumed: nothing removed
    assert (out / "train" / "run.json").is_file()
    _claim(out, fresh=True)  # started over: emptied, marked again
    assert [p.name for p in out.iterdir()] == [".polypsynth"] and read_marker(out)["what"] == "demo folder"
