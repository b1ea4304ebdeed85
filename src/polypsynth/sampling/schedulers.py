"""Sampling schedulers chosen by name, built from the model's own scheduler config."""

from __future__ import annotations

from polypsynth.errors import SamplingError

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "pndm": "PNDMScheduler",
}


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of the named kind with the model's training schedule (betas, prediction type)."""
    if name not in SCHEDULERS:
        raise SamplingError(f"unknown scheduler {name!r}; valid schedulers: {', '.join(SCHEDULERS)}")
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    extra = {"algorithm_type": "dpmsolver++", "solver_order": 2} if name == "dpm++" else {}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    return cls.from_config({**config, **extra})
