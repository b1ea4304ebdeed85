"""A copy check in one space whose sets carry given p-values and nothing else: the other spaces
beside which Holm's correction (memorisation.correct) is tested."""

from polypsynth.evaluate.memorisation import CopyRate, Memorisation


def quiet_memo(p_values: dict[str, float]) -> Memorisation:
    rates = {
        name: CopyRate(
            count=0,
            images=1,
            near_copies=0.0,
            upper95=1.0,
            chance=0.0,
            reference="tolerance 1%",
            p_value=p,
            copies=False,
            median_distance=1.0,
        )
        for name, p in p_values.items()
    }
    return Memorisation(
        median_test_distance=1.0, threshold=0.5, tolerance=0.01, checkpoints=rates, quantile=None
    )
