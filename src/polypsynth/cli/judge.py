"""`polypsynth judge`: a published KID table and Table 1 re-judged; `--plan`: what a test split can detect."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, user_errors


def _per_class(value: str | None, option: str, kind=int) -> dict | None:
    """'AD=77,NON_AD=36' -> {"AD": 77, "NON_AD": 36}, or an error naming the option."""
    if value is None:
        return None
    from polypsynth.data.records import CLASSES

    out = {}
    for part in value.split(","):
        name, _, number = part.partition("=")
        try:
            out[name.strip()] = kind(number)
        except ValueError:
            raise click.BadParameter(
                f"expected AD=<number>,NON_AD=<number>, got {value!r}", param_hint=option
            ) from None
    if sorted(out) != sorted(CLASSES):
        raise click.BadParameter(f"expected AD=<number>,NON_AD=<number>, got {value!r}", param_hint=option)
    return out


def _plan_text(plan: dict, min_gain: float) -> str:
    test = " + ".join(f"{n} {c}" for c, n in plan["test"].items())
    recall = ", ".join(f"{c} {r:.2f}" for c, r in plan["recall"].items())
    seeds = f"{plan['seeds']} seed{'s' if plan['seeds'] != 1 else ''}"
    lines = [
        f"A test split of {test} images, {seeds} per row, recall {recall}: a balanced-accuracy gain is detected "
        f"with 80% power (two-sided 5%) from {'at least ' if plan['lower_bound'] else ''}{plan['mde']:+.3f} "
        f"(standard error {plan['se']:.3f}).",
    ]
    if not plan["words_possible"]:
        lines.append(
            "With one seed and no --seed-sd the seed's variance is neither measured nor declared: every gain "
            "would read 'cannot tell'. Run 2 or more seeds, or declare --seed-sd."
        )
    elif plan["lower_bound"]:
        lines.append("The seed variance is left out (pass --seed-sd): the figure is a lower bound.")
    verdict = "can" if plan["mde"] <= min_gain else "cannot"
    lines.append(
        f"The minimum gain worth having is {min_gain:+.3f}: this split {verdict} be expected to see it."
    )
    return "\n".join(lines)


def _table_text(published, chosen) -> str:
    from polypsynth.evaluate.tables import markdown, selection_rows
    from polypsynth.evaluate.uncertainty import describe

    sel = chosen
    parts = [markdown(selection_rows({"selection": sel.to_dict()}))]
    if published.scale is not None:
        parts.append(
            f"KID(real AD, real NON_AD), the scale: {published.scale.mean:.4f} (se {published.scale.se:.4f})"
        )

    def pick(rule):
        name, p = rule.pick, rule.probability
        return f"{name} ({p:.0%} of redraws from the KIDs' errors)" if name else "none"

    parts.append(f"naive pick (lowest same-class KID): {pick(sel.naive)}")
    parts.append(f"clinical pick (eligible checkpoints; {sel.clinical.ties}): {pick(sel.clinical)}")
    if published.gains:
        parts.append("gains in balanced accuracy [95%]:")
        parts += [f"  {name}: {describe(g)}" for name, g in published.gains.items()]
    parts.append(f"verdict: {sel.verdict}")
    parts += [f"  - {n}" for n in sel.notes]
    parts += [f"note: {n}" for n in published.notes]
    return "\n".join(parts)


@main.command("judge")
@click.argument("table", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--min-gain",
    default=0.02,
    show_default=True,
    type=float,
    help="The smallest balanced-accuracy gain worth having.",
)
@click.option(
    "--seed-sd",
    type=float,
    help="With one seed per row: the seed-to-seed SD of one classifier's balanced accuracy you assume.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.option(
    "--plan", is_flag=True, help="No table: the smallest gain a test split can detect, before training."
)
@click.option("--test", "test_sizes", help="With --plan: test images per class, e.g. AD=77,NON_AD=36.")
@click.option(
    "--seeds", default=1, show_default=True, type=int, help="With --plan: classifier seeds per row."
)
@click.option(
    "--recall", help="With --plan: the expected recall per class, e.g. AD=0.83,NON_AD=0.53 (default 0.5)."
)
@user_errors
def judge_command(table, min_gain, seed_sd, as_json, plan, test_sizes, seeds, recall):
    """Re-judge a published KID table (and Table 1's confusion matrices) with the rules and words of
    `evaluate`: both picks with their probabilities, each gain's word, and the verdict. TABLE is a
    YAML file (README: "Judging a published table")."""
    import json

    from polypsynth.evaluate import published as pub
    from polypsynth.evaluate.uncertainty import check_min_gain, planned_mde

    check_min_gain(min_gain)
    if plan:
        if table is not None or test_sizes is None:
            raise click.UsageError("--plan takes no TABLE and needs --test AD=<n>,NON_AD=<n>")
        answer = planned_mde(
            _per_class(test_sizes, "--test"), seeds, seed_sd, _per_class(recall, "--recall", float)
        )
        click.echo(json.dumps(answer, indent=2) if as_json else _plan_text(answer, min_gain))
        return
    if table is None:
        raise click.UsageError("give a TABLE.yaml, or --plan with --test")
    published = pub.read(table, min_gain, seed_sd)
    chosen = pub.judge(published, min_gain)
    click.echo(
        json.dumps(pub.summary(published, chosen), indent=2) if as_json else _table_text(published, chosen)
    )
