"""`polypsynth judge`: the study's own tables re-judged by evaluate's code, gains from confusion
matrices bounded over every pairing, the plan, and bad tables named."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import t

from polypsynth.cli import main
from polypsynth.evaluate import pairing, published
from polypsynth.evaluate.uncertainty import interval, planned_mde

STUDY = Path(__file__).parents[2] / "docs" / "study" / "table.yaml"
REAL = {"AD": [64, 13], "NON_AD": [17, 19]}  # the study's Table 1, one run
AUG = {"AD": [62, 15], "NON_AD": [19, 17]}


def _run(*args):
    return CliRunner().invoke(main, ["judge", *map(str, args)])


def test_the_studys_tables_cannot_tell_and_say_why():
    result = _run(STUDY, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert set(out) == {
        "naive_pick",
        "clinical_pick",
        "pick_probability",
        "decision",
        "verdict",
        "reasons",
        "gains",
        "notes",
    }
    assert out["verdict"] == "Cannot decide: no checkpoint passes the clinical rules."
    assert out["naive_pick"] == "8k" and out["clinical_pick"] is None
    assert 0.5 < out["pick_probability"]["naive"] < 0.8 and out["pick_probability"]["clinical"] is None
    assert out["decision"] == "cannot decide"
    assert (
        "1k, 2k, 3k, 4k, 5k, 6k, 7k, 8k: its synthetic NON_AD sits closer to real AD than to real NON_AD (NON_AD "
        "margin below zero)." in " ".join(out["reasons"])
    )
    gain = out["gains"]["8k"]
    assert gain["word"] == "cannot tell" and gain["seeds"] == 1 and gain["seed_variance"] == "not measured"
    # Independent: the most discordant pairing (AD: 13 images only the augmented model gets right,
    # 15 only the real one; NON_AD: 17 and 19), the variance of a mean of differences per class.
    x = {"AD": np.r_[np.ones(13), np.zeros(49), -np.ones(15)], "NON_AD": np.r_[np.ones(17), -np.ones(19)]}
    var = sum(np.var(v, ddof=1) / len(v) / 4 for v in x.values())
    mean = (62 - 64) / 77 / 2 + (17 - 19) / 36 / 2
    half = t.ppf(0.975, 111) * np.sqrt(var)
    assert gain["mean"] == pytest.approx(mean) and gain["interval"] == pytest.approx(
        [mean - half, mean + half]
    )
    assert gain["mde"] == pytest.approx((t.ppf(0.975, 111) + t.ppf(0.8, 111)) * np.sqrt(var))
    assert gain["interval"][0] < -0.2 and gain["interval"][1] > 0.13 and gain["mde"] > 0.25
    text = _run(STUDY).output
    assert "naive pick (lowest same-class KID): 8k (" in text and "clinical pick" in text
    assert (
        "8k: -0.041 [-0.221, +0.140] (1 seed, seed variance not measured): cannot tell (detectable with 80% power from at least +0.258)"
        in text
    )
    assert (
        "| 8k | 0.0750 | +0.0360 ± 0.0088 | -0.0200 ± 0.0071 | +0.0160 ± 0.0113 | not measured | not measured | not checked | no |"
        in text
    )


@pytest.mark.parametrize("seeds", [1, 3])
def test_no_pairing_of_the_confusion_matrices_gives_a_wider_interval(seeds):
    """The arrangement pairing.py builds against 300 random arrangements with the same counts."""
    rng = np.random.default_rng(seeds)
    real = [
        {"AD": [r, 77 - r], "NON_AD": [36 - n, n]}
        for r, n in zip(rng.integers(50, 70, seeds), rng.integers(10, 25, seeds), strict=True)
    ]
    aug = [
        {"AD": [r, 77 - r], "NON_AD": [36 - n, n]}
        for r, n in zip(rng.integers(50, 70, seeds), rng.integers(10, 25, seeds), strict=True)
    ]
    y, worst = pairing.gain_scores(real, aug)
    bound = interval(y, worst, paired=True, seed_sd=0.03)
    y_acc, nested = pairing.accuracy_scores(real)
    acc_bound = interval(y_acc, nested, (0, 1), seed_sd=0.03)
    for _ in range(300):
        rows, right = [], []
        for r_cm, a_cm in zip(real, aug, strict=True):
            row, acc = [], []
            for i, c in enumerate(("AD", "NON_AD")):
                n = sum(r_cm[c])
                r_right = rng.permutation(np.r_[np.ones(r_cm[c][i]), np.zeros(n - r_cm[c][i])])
                a_right = rng.permutation(np.r_[np.ones(a_cm[c][i]), np.zeros(n - a_cm[c][i])])
                row.append(a_right - r_right)
                acc.append(r_right)
            rows.append(np.concatenate(row))
            right.append(np.concatenate(acc))
        other = interval(y, np.array(rows), paired=True, seed_sd=0.03)
        assert other.mean == pytest.approx(bound.mean)
        assert bound.ci95[0] <= other.ci95[0] + 1e-12 and other.ci95[1] <= bound.ci95[1] + 1e-12
        acc = interval(y_acc, np.array(right), (0, 1), seed_sd=0.03)
        assert acc_bound.ci95[0] <= acc.ci95[0] + 1e-12 and acc.ci95[1] <= acc_bound.ci95[1] + 1e-12


def test_a_declared_seed_sd_lets_one_seed_speak_and_a_control_can_power_the_verdict(tmp_path):
    table = tmp_path / "t.yaml"
    table.write_text(
        STUDY.read_text()
        + "  control: [{AD: [74, 3], NON_AD: [8, 28]}]\n"  # held-out real images added: +0.21
    )
    out = json.loads(_run(table, "--json", "--seed-sd", "0.01").output)
    assert out["gains"]["8k"]["seed_variance"] == "assumed" and out["gains"]["8k"]["word"] == "cannot tell"
    assert out["gains"]["held-out real"]["word"] == "helps"
    assert out["decision"] == "cannot decide"  # 8k's interval still holds gains worth having
    # 8k alone, with a gain that excludes the minimum, and a control that shows the split can see one.
    # (With 1k-7k in the table, their gains untested, nothing could be "not worth using".)
    others = tuple(f"{k}k:" for k in range(1, 8))
    kept = [line for line in table.read_text().splitlines() if not line.strip().startswith(others)]
    table.write_text(
        "\n".join(kept).replace(
            "8k: [{AD: [62, 15], NON_AD: [19, 17]}]", "8k: [{AD: [63, 14], NON_AD: [17, 19]}]"
        )
    )
    tight = json.loads(_run(table, "--json", "--seed-sd", "0.0", "--min-gain", "0.2").output)
    assert tight["gains"]["8k"]["word"] == "does not help"
    assert tight["decision"] == "not worth using" and "while held-out real images do" in tight["verdict"]


def test_a_std_over_subsets_becomes_a_standard_error_when_the_sizes_are_given(tmp_path):
    table = tmp_path / "t.yaml"
    text = STUDY.read_text().replace("  error: std", "  error: std\n  subset_size: 1000\n  images: 3000")
    table.write_text(text)
    read = published.read(table)
    assert read.kids["8k"]["syn_AD_vs_real_AD"].se == pytest.approx(0.002 * np.sqrt(1000 / 2000))
    assert "x 0.707" in read.notes[0]
    assert published.read(STUDY).kids["8k"]["syn_AD_vs_real_AD"].se == 0.002  # taken as it is, and said so
    assert "taken as standard errors" in published.read(STUDY).notes[0]


def test_the_plan_says_what_a_test_split_can_detect():
    result = _run("--plan", "--test", "AD=77,NON_AD=36", "--seeds", "3", "--seed-sd", "0.02", "--json")
    plan = json.loads(result.output)
    image = 2 * 0.25 / 4 * (1 / 77 + 1 / 36)
    seed = 2 * 0.02**2 / 3
    assert plan["se"] == pytest.approx(np.sqrt(image + seed)) and not plan["lower_bound"]
    half = np.hypot(t.ppf(0.975, 111) * np.sqrt(image), t.ppf(0.975, 2) * np.sqrt(seed))
    df = next(d for d in np.linspace(1, 2000, 200_000) if t.ppf(0.975, d) <= half / plan["se"])
    assert plan["mde"] == pytest.approx((t.ppf(0.975, df) + t.ppf(0.8, df)) * plan["se"], rel=1e-3)
    study = planned_mde({"AD": 77, "NON_AD": 36}, 1, recall={"AD": 0.83, "NON_AD": 0.53})
    assert (
        study["mde"] == pytest.approx(0.187, abs=0.002)
        and study["lower_bound"]
        and not study["words_possible"]
    )
    text = _run("--plan", "--test", "AD=77,NON_AD=36").output
    assert "from at least +0.202" in text and "every gain would read 'cannot tell'" in text
    assert "this split cannot be expected to see it" in text


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda s: s.replace("kid:", "kids:", 1),
            "unknown section(s) kids; expected kid, table1, fidelity, copies",
        ),
        (
            lambda s: s.replace("error: std", "error: sd"),
            "kid.error: expected 'std' (a spread over subsets) or 'se'",
        ),
        (
            lambda s: s.replace(
                "[0.069, 0.002], syn_AD_vs_real_NON_AD: [0.105", "[0.069], syn_AD_vs_real_NON_AD: [0.105"
            ),
            "kid.checkpoints.8k.syn_AD_vs_real_AD: expected [mean, error] (two numbers), got [0.069]",
        ),
        (
            lambda s: s.replace("syn_NON_AD_vs_real_AD: [0.061, 0.002]}\ntable1", "}\ntable1"),
            "kid.checkpoints.8k: expected keys syn_AD_vs_real_AD",
        ),
        (
            lambda s: s.replace("8k: [{AD: [62, 15]", "9k: [{AD: [62, 15]"),
            "table1: 9k not among kid.checkpoints",
        ),
        (
            lambda s: s.replace("NON_AD: [19, 17]}]", "NON_AD: [19, 18]}]"),
            "every confusion matrix must count the same test images per class",
        ),
        (
            lambda s: s.replace("NON_AD: [19, 17]}]", "NON_AD: [19]}]"),
            "table1.augmented.8k[0].NON_AD: expected [predicted AD, predicted NON_AD] counts, got [19]",
        ),
    ],
)
def test_a_bad_table_is_one_line_naming_the_key(tmp_path, edit, message):
    table = tmp_path / "t.yaml"
    table.write_text(edit(STUDY.read_text()))
    result = _run(table)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, (
        result.output
    )


def test_bad_command_lines_are_refused():
    assert "--plan takes no TABLE and needs --test" in _run(STUDY, "--plan").output
    assert "give a TABLE.yaml, or --plan with --test" in _run().output
    bad = _run("--plan", "--test", "AD=77")
    assert bad.exit_code == 2 and "expected AD=<number>,NON_AD=<number>, got 'AD=77'" in bad.output
    assert "--min-gain must be in (0, 1)" in _run(STUDY, "--min-gain", "2").output
    assert "--seed-sd must be in [0, 0.5]" in _run(STUDY, "--seed-sd", "-1").output
    assert (
        "--test needs at least 2 images of NON_AD, got 1" in _run("--plan", "--test", "AD=77,NON_AD=1").output
    )


def test_the_study_table_ships_with_the_docs(tmp_path):
    """The file the README walks through is the one tested here, and it reads from anywhere."""
    copy = tmp_path / "study.yaml"
    shutil.copy(STUDY, copy)
    assert _run(copy, "--json").exit_code == 0


def test_judge_does_not_load_torch():
    """Reading a table needs numpy and scipy only: torch's import (3 s here) stays out of judge."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from polypsynth.cli import main; "
        f"r = CliRunner().invoke(main, ['judge', {str(STUDY)!r}]); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_a_published_test_split_too_small_for_a_verdict_is_refused():
    from polypsynth.errors import EvalError

    with pytest.raises(
        EvalError, match=r"table1's test split has 20 AD and 1 NON_AD images; a verdict needs at least 10"
    ):
        pairing.accuracy_scores([{"AD": [15, 5], "NON_AD": [0, 1]}])
