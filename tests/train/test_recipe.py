import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from polypsynth.cli import main
from polypsynth.config import load_config
from polypsynth.data.sources import load_phantom
from polypsynth.errors import ConfigError, PolypsynthError
from polypsynth.models import load_components
from polypsynth.train import objectives as objectives_mod
from polypsynth.train.checkpoint import CheckpointError, list_checkpoints
from polypsynth.train.mix import MixPlan, StepBatchSampler, batch_indices
from polypsynth.train.recipe import RunError, train
from polypsynth.train.validate import validation_loss


def _unet_weights(ckpt):
    return load_file(ckpt / "unet" / "diffusion_pytorch_model.safetensors")


def _mean(xs):
    return float(np.mean(xs))


def test_loss_goes_down_in_both_stages(make_config, phantom32, tmp_path):
    cfg = load_config(
        make_config(
            stage__pretrain__steps=40,
            stage__pretrain__batch_size=16,
            stage__finetune__steps=40,
            stage__finetune__batch_size=16,
            stage__finetune__learning_rate=5e-4,
        )
    )
    results = train(cfg, tmp_path / "run", progress=False)
    # Training losses: the first and last 8 steps (pretrain starts from random weights).
    pretrain = results["pretrain"].losses
    assert len(pretrain) == 40 and _mean(pretrain[-8:]) < 0.85 * _mean(pretrain[:8]), pretrain
    # Finetune starts from a model that already denoises; per-step losses swing with the random
    # timesteps, so compare the fixed-noise validation loss on the finetune data before and after.
    classif = load_phantom(phantom32, "classif")
    before = validation_loss(load_components(results["pretrain"].checkpoints[-1]), classif, 32)
    after = validation_loss(load_components(results["finetune"].checkpoints[-1]), classif, 32)
    assert after < 0.95 * before, (before, after)
    recorded = json.loads((results["finetune"].checkpoints[-1] / "polypsynth.json").read_text())["val_loss"]
    assert recorded == pytest.approx(after, rel=1e-5)


def test_autoencoder_stage_learns_and_sets_the_latent_scale(make_config, phantom32, tmp_path):
    stage1 = [{"kind": "phantom", "path": str(phantom32), "subset": "stage1"}]
    autoencoder = {
        "steps": 30,
        "learning_rate": 2e-3,
        "lr_warmup_steps": 5,
        "lr_schedule": "cosine",
        "batch_size": 8,
        "data": stage1,
    }
    cfg = load_config(
        make_config(stage__autoencoder=autoencoder, stage__pretrain__steps=0, stage__finetune__steps=0)
    )
    results = train(cfg, tmp_path / "run", progress=False)
    losses = results["autoencoder"].losses
    assert _mean(losses[-5:]) < 0.7 * _mean(losses[:5])
    # Linear warm-up over 5 steps, then a half cosine from the peak to 0 at the last step.
    s = np.arange(30)
    expected = np.where(s < 5, s / 5, 0.5 * (1 + np.cos(np.pi * (s - 5) / 25)))
    assert np.allclose(results["autoencoder"].learning_rates, 2e-3 * expected)
    ckpt = results["autoencoder"].checkpoints[-1]
    scale = json.loads((ckpt / "vae" / "config.json").read_text())["scaling_factor"]
    assert scale != 1.0 and 0.01 < scale < 100


def test_random_crop_is_a_window_of_the_batch():
    from polypsynth.train.steps import random_crop

    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    crop = random_crop(x, 4, torch.Generator().manual_seed(1))
    assert crop.shape == (2, 3, 4, 4)
    top, left = divmod(int(crop[0, 0, 0, 0]), 8)  # x[0, 0] holds its own flat index
    assert torch.equal(crop, x[..., top : top + 4, left : left + 4])
    assert torch.equal(crop, random_crop(x, 4, torch.Generator().manual_seed(1)))
    windows = {int(random_crop(x, 4, torch.Generator().manual_seed(s))[0, 0, 0, 0]) for s in range(40)}
    assert len(windows) > 10 and max(divmod(w, 8)[0] for w in windows) <= 4  # every window inside
    assert random_crop(x, None, torch.Generator()) is x and random_crop(x, 8, torch.Generator()) is x


def test_autoencoder_trains_on_crops_then_whole_images(make_config, phantom32, tmp_path, monkeypatch):
    """crop 16 of 32 px for the first half of 6 steps, whole images for the rest."""
    from polypsynth.train import steps as steps_mod

    seen, real_loss = [], steps_mod.vae_loss

    def recording(vae, pixels, gen, kl_weight):
        seen.append(tuple(pixels.shape[-2:]))
        return real_loss(vae, pixels, gen, kl_weight)

    monkeypatch.setattr(steps_mod, "vae_loss", recording)
    autoencoder = {
        "steps": 6,
        "learning_rate": 1e-3,
        "batch_size": 4,
        "crop": 16,
        "crop_share": 0.5,
        "data": [{"kind": "phantom", "path": str(phantom32), "subset": "stage1"}],
    }
    cfg = load_config(
        make_config(stage__autoencoder=autoencoder, stage__pretrain__steps=0, stage__finetune__steps=0)
    )
    train(cfg, tmp_path / "run", progress=False)
    assert seen == [(16, 16)] * 3 + [(32, 32)] * 3


def test_frozen_modules_are_bit_identical_after_finetune(make_config, tmp_path):
    cfg = load_config(make_config(stage__finetune__checkpoint_every=0))
    results = train(cfg, tmp_path / "run", progress=False)
    before = _unet_weights(results["pretrain"].checkpoints[-1])
    after = _unet_weights(results["finetune"].checkpoints[-1])
    frozen = [k for k in before if k.startswith(("conv_in.", "down_blocks.0."))]
    trained = [k for k in before if k not in frozen]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    changed = [k for k in trained if not torch.equal(before[k], after[k])]
    assert len(changed) > 0.9 * len(trained)


def test_data_mix_honours_its_shares():
    plan = MixPlan.of([100, 50, 20], replay_share=0.2, unlabelled_share=0.1)
    counts = np.zeros(3)
    for step in range(400):
        idx = np.array(batch_indices(plan, 16, seed=0, stage=2, step=step))
        counts += np.bincount(np.searchsorted([100, 150, 170], idx, side="right"), minlength=3)
    shares = counts / counts.sum()
    assert np.allclose(shares, [0.7, 0.2, 0.1], atol=0.02), shares
    # Batches are a function of (seed, stage, step): a sampler resumed at step 7 repeats them.
    full = list(StepBatchSampler(plan, 4, 2, seed=1, stage=1, start=0, end=10))
    resumed = list(StepBatchSampler(plan, 4, 2, seed=1, stage=1, start=7, end=10))
    assert resumed == full[14:]
    # Each process of a multi-GPU run draws its own batches, the full count of them.
    other = list(StepBatchSampler(plan, 4, 2, seed=1, stage=1, start=0, end=10, process=1))
    assert len(other) == len(full) == 20 and other != full


def test_balanced_classes_draw_every_label_equally_often():
    labels = ["AD"] * 80 + ["NON_AD"] * 20  # main pool 4:1
    uniform = MixPlan.of([100, 50, 0], replay_share=0.3, unlabelled_share=0.0)
    plan = MixPlan.of([100, 50, 0], replay_share=0.3, unlabelled_share=0.0, main_labels=labels)
    drawn = np.concatenate([batch_indices(plan, 16, seed=0, stage=2, step=s) for s in range(500)])
    main, replay = drawn[drawn < 100], drawn[drawn >= 100]
    assert abs((main >= 80).mean() - 0.5) < 0.03  # NON_AD: half of the main draws, not a fifth
    assert abs(len(main) / len(drawn) - 0.7) < 0.02 and replay.max() < 150  # pool shares unchanged
    assert set(np.unique(main[main < 80])) == set(range(80))  # every image of a class is drawn
    # The uniform plan's batches are untouched by the option's existence.
    assert uniform.main_cdf is None and batch_indices(uniform, 8, 0, 2, 3) == batch_indices(
        MixPlan.of([100, 50, 0], 0.3, 0.0), 8, 0, 2, 3
    )
    assert batch_indices(plan, 8, 0, 2, 3) == batch_indices(plan, 8, 0, 2, 3)  # still a pure function


def test_resume_is_exact(make_config, tmp_path, monkeypatch):
    """2N steps straight equals N steps + kill + resume N (EMA and gradient accumulation on)."""
    config = make_config(
        stage__pretrain__steps=4,
        stage__finetune__steps=8,
        stage__finetune__checkpoint_every=4,
        stage__finetune__gradient_accumulation=2,
        train__ema=True,
    )
    straight = train(load_config(config), tmp_path / "a", progress=False)

    real = objectives_mod.diffusion_loss
    calls = {"n": 0}

    def killed(*args, **kwargs):
        calls["n"] += 1
        if (
            calls["n"] > 4 + 5 * 2
        ):  # pretrain (4) + 5 finetune steps of 2 micro-batches: past the step-4 checkpoint
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(objectives_mod, "diffusion_loss", killed)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(config), tmp_path / "b", progress=False)
    monkeypatch.setattr(objectives_mod, "diffusion_loss", real)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-000004", "step-000008"]
    resumed = train(load_config(config), tmp_path / "b", resume="latest", progress=False)
    assert len(resumed["finetune"].losses) == 4 and "pretrain" not in resumed

    a, b = straight["finetune"].checkpoints[-1], resumed["finetune"].checkpoints[-1]
    assert a.name == b.name == "step-000012"
    for part in ("unet/diffusion_pytorch_model.safetensors", "training_state/trainable.safetensors"):
        wa, wb = load_file(a / part), load_file(b / part)
        assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) <= 1e-6, part
    assert np.allclose(straight["finetune"].losses[4:], resumed["finetune"].losses, atol=1e-6)


def test_checkpoint_loads_in_plain_diffusers_and_has_a_grid(make_config, tmp_path):
    cfg = load_config(
        make_config(stage__pretrain__steps=2, stage__finetune__steps=2, train__sample_grid=True)
    )
    ckpt = train(cfg, tmp_path / "run", progress=False)["finetune"].checkpoints[-1]
    from PIL import Image

    grid = Image.open(ckpt / "samples.png")
    assert grid.size == (4 * 32, 2 * 32)  # 4 seeds x the two classes
    pipe = StableDiffusionPipeline.from_pretrained(ckpt)
    pipe.set_progress_bar_config(disable=True)
    image = pipe(
        "a high quality colonoscopy image of a non-adenomatous polyp",
        num_inference_steps=2,
        height=32,
        width=32,
        output_type="pil",
    ).images[0]
    assert image.size == (32, 32)


def test_temporary_and_incomplete_checkpoints(make_config, tmp_path):
    cfg = load_config(make_config(stage__finetune__steps=0))
    out = tmp_path / "run"
    train(cfg, out, progress=False)
    good = list_checkpoints(out)[-1]
    # A half-written folder from a kill is hidden and never taken as the latest.
    (out / "checkpoints" / ".step-000099.tmp-abc").mkdir()
    assert list_checkpoints(out) == [good]
    broken = out / "checkpoints" / "step-000099"
    shutil.copytree(good, broken)
    (broken / "training_state" / "optimizer.pt").unlink()
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(
        CheckpointError,
        match=r"step-000099 is incomplete or half-written: missing vae/\*.safetensors, training_state/optimizer.pt",
    ):
        train(cfg, out, resume="latest", progress=False)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        train(cfg, out, resume=str(out / "nope"), progress=False)


def test_out_that_holds_another_run_is_refused(make_config, tmp_path):
    out = tmp_path / "run"
    train(load_config(make_config(stage__finetune__steps=0)), out, progress=False)
    with pytest.raises(RunError, match="already holds a run; pass --resume latest to continue it"):
        train(load_config(make_config(stage__finetune__steps=0)), out, progress=False)
    with pytest.raises(
        RunError, match=r"the config differs from the run in .* at: stage.pretrain.learning_rate"
    ):
        train(
            load_config(make_config(stage__pretrain__learning_rate=0.5)), out, resume="latest", progress=False
        )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(RunError, match="is not empty and holds no polypsynth run"):
        train(load_config(make_config()), other, progress=False)


def test_frozen_prefix_that_matches_nothing(make_config, tmp_path):
    cfg = load_config(make_config(stage__finetune__freeze=["down_block.0"]))
    with pytest.raises(
        ConfigError,
        match=r"stage.finetune.freeze: prefix 'down_block.0' matches no U-Net parameter; valid prefixes: conv_in, time_proj, time_embedding, down_blocks, down_blocks.0",
    ):
        train(cfg, tmp_path / "run", progress=False)
    # Refused before the first step of pretrain, the stage before it: nothing trained, no folder left.
    assert not (tmp_path / "run").exists()


def test_stage_without_data(make_config, tmp_path):
    cfg = load_config(make_config(stage__pretrain__data=[]))
    with pytest.raises(ConfigError, match="stage.pretrain.data is empty: the stage has nothing to train on"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before any checkpoint: the folder is taken back
    cfg = load_config(make_config())
    cfg.stage.pretrain.data[0].labels = ["AD"]  # stage-1 frames hold no AD
    with pytest.raises(PolypsynthError, match=r"holds no images of split=None labels=\['AD'\]"):
        train(cfg, tmp_path / "run2", progress=False)


def test_train_command_and_resume(make_config, tmp_path):
    config = make_config(stage__pretrain__steps=2, stage__finetune__steps=2)
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--set", "stage.finetune.steps=1"])
    assert result.exit_code == 0, result.output
    assert "pretrain: 2 steps" in result.output and "finetune: 1 steps" in result.output
    result = CliRunner().invoke(main, [*args, "--resume", "latest"])  # finetune.steps may grow on resume
    assert result.exit_code == 0, result.output
    assert "finetune: 1 steps" in result.output and "pretrain" not in result.output
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000003", "step-000004"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "already holds a run" in result.output


def test_uncached_v_prediction_min_snr_and_checkpointing_run(make_config, tmp_path):
    cfg = load_config(
        make_config(
            model__prediction_type="v_prediction",
            stage__pretrain__steps=3,
            stage__pretrain__gradient_accumulation=2,
            stage__finetune__steps=2,
            train__latent_cache=False,
            train__min_snr_gamma=5.0,
            train__gradient_checkpointing=True,
        )
    )
    out = tmp_path / "run"
    results = train(cfg, out, progress=False)
    losses = results["pretrain"].losses + results["finetune"].losses
    assert len(losses) == 5 and all(np.isfinite(losses)) and all(x > 0 for x in losses)
    ckpt = results["finetune"].checkpoints[-1]
    assert (
        json.loads((ckpt / "scheduler" / "scheduler_config.json").read_text())["prediction_type"]
        == "v_prediction"
    )
    assert list((out / "logs").rglob("events.out.tfevents.*"))  # TensorBoard logs through accelerate


@pytest.mark.parametrize(
    "damaged, message",
    [
        (
            "trainable.safetensors",
            "trainable.safetensors is damaged (incomplete metadata, file not fully covered)",
        ),
        ("optimizer.pt", "optimizer.pt is damaged (File is not a zip file)"),
        ("state.json", "state.json is damaged (not valid JSON"),
    ],
)
def test_resume_from_a_damaged_training_state_names_the_file(make_config, tmp_path, damaged, message):
    config = make_config(stage__pretrain__steps=2, stage__finetune__steps=2)
    out = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out)]
    assert CliRunner().invoke(main, [*args, "--set", "stage.finetune.steps=1"]).exit_code == 0
    file = list_checkpoints(out)[-1] / "training_state" / damaged
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a copy cut short
    result = CliRunner().invoke(main, [*args, "--resume", "latest"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith(f"Error: {file}"), result.output
    assert message in result.output
    assert [p.name for p in list_checkpoints(out)] == ["step-000002", "step-000003"]  # nothing new


@pytest.mark.parametrize(
    "override, message",
    [
        (
            {"stage__finetune__freeze": ["conv_inn"]},
            r"stage.finetune.freeze: prefix 'conv_inn' matches no U-Net parameter",
        ),
        (
            {"stage__finetune__data": [{"kind": "image_folder", "path": "/nowhere/cvc"}]},
            r"stage.finetune.data\[0\] \(image_folder /nowhere/cvc\): ",
        ),
        (
            {
                "stage__finetune__unlabelled": [
                    {"kind": "phantom", "path": "/nowhere", "subset": "unlabelled"}
                ]
            },
            r"stage.finetune.unlabelled\[0\] \(phantom /nowhere\): ",
        ),
        (
            {"prompts": {"ADENOMA": "an adenoma"}},
            r"prompts: 'ADENOMA' names no class; prompts may be set for AD, NON_AD",
        ),
    ],
)
def test_a_later_stages_mistake_stops_the_run_before_its_first_step(make_config, tmp_path, override, message):
    """A typo in the finetune stage surfaced only when finetune started, after pretrain had trained
    (the whole 20,000-step stage 1 of sd15-polyp.yaml); now before any step, the folder taken back."""
    result = CliRunner().invoke(
        main, ["train", "--config", str(make_config(**override)), "--out", str(tmp_path / "run")]
    )
    assert result.exit_code == 1 and re.search(message, result.output), result.output
    assert "Traceback" not in result.output and "pretrain:" not in result.output  # no stage ran
    assert not (tmp_path / "run").exists()


def test_a_bad_label_map_names_its_stage(make_config, tmp_path):
    bad = [{"kind": "phantom", "path": "x", "subset": "classif", "label_map": {"serrated": "SSL"}}]
    result = CliRunner().invoke(
        main, ["train", "--config", str(make_config(stage__finetune__data=bad)), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1
    assert (
        "stage.finetune.data[0] (phantom x): label map: 'serrated' maps to 'SSL'; targets must be one of"
        in result.output
    )


@pytest.mark.parametrize(
    "setting, message",
    [
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.num_workers=-2", "train.num_workers must be >= 0, got -2"),
        (
            "model.tiny.unet_channels=[]",
            "model.tiny.unet_channels must be a non-empty list of positive widths, got []",
        ),
        ("model.tiny.attention_head_dim=0", "model.tiny.attention_head_dim must be >= 1, got 0"),
        (
            "model.tiny.text_hidden_size=15",
            "model.tiny.text_hidden_size 15 must be a multiple of model.tiny.text_heads 2",
        ),
        (
            "model.tiny.unet_channels=[16,20]",
            "model.tiny.attention_head_dim 8 (channels per head) must divide every",
        ),
        (
            "model.tiny.vae_channels=[16,16,16,16,16,16]",
            "model.resolution 32 must be divisible by 64 for model.tiny.vae_channels",
        ),
        ("stage.pretrain.lr_warmup_steps=-1", "stage.pretrain.lr_warmup_steps must be >= 0, got -1"),
    ],
)
def test_numbers_that_fail_only_once_training_runs_are_refused_first(make_config, tmp_path, setting, message):
    args = ["train", "--config", str(make_config()), "--out", str(tmp_path / "run"), "--set", setting]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output, (
        result.output
    )
    assert not (tmp_path / "run").exists()


def test_resume_may_change_a_stage_that_has_not_started(make_config, tmp_path):
    """After pretrain, finetune's settings may be corrected and the run resumed; what has been
    trained (pretrain, the model, the training options) may not change."""
    out = tmp_path / "run"
    first = make_config(stage__pretrain__steps=2, stage__finetune__enabled=False)
    assert CliRunner().invoke(main, ["train", "--config", str(first), "--out", str(out)]).exit_code == 0
    fixed = make_config(
        stage__pretrain__steps=2, stage__finetune__steps=1, stage__finetune__learning_rate=5e-4
    )
    resumed = CliRunner().invoke(
        main, ["train", "--config", str(fixed), "--out", str(out), "--resume", "latest"]
    )
    assert resumed.exit_code == 0, resumed.output
    assert "finetune: 1 steps" in resumed.output and "pretrain" not in resumed.output
    changed = make_config(  # once finetune has trained, only its steps may grow; pretrain may not change
        stage__pretrain__steps=2,
        stage__pretrain__learning_rate=0.5,
        stage__finetune__steps=2,
        stage__finetune__learning_rate=5e-4,
    )
    refused = CliRunner().invoke(
        main, ["train", "--config", str(changed), "--out", str(out), "--resume", "latest"]
    )
    assert refused.exit_code == 1 and "the config differs from the run in" in refused.output
    assert "stage.pretrain.learning_rate" in refused.output and "stage.finetune" not in refused.output


def test_ctrl_c_says_how_to_resume(make_config, tmp_path, monkeypatch):
    """Ctrl-C printed only "Aborted!": it now names the last checkpoint and the command that goes on."""
    from polypsynth.train import recipe

    original = recipe._run_stage

    def interrupted(run, global_step, pools):
        if run.name == "finetune":
            raise KeyboardInterrupt
        return original(run, global_step, pools)

    monkeypatch.setattr(recipe, "_run_stage", interrupted)
    config, out = make_config(stage__pretrain__steps=2), tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(out), "--set", "stage.finetune.steps=3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"interrupted; the last checkpoint is {out / 'checkpoints' / 'step-000002'}" in result.output
    assert (
        f"Continue with: polypsynth train --config {config} --out {out} --set stage.finetune.steps=3 --resume latest"
        in result.output
    )
    monkeypatch.setattr(recipe, "_run_stage", original)
    resumed = CliRunner().invoke(main, [*args, "--resume", "latest"])
    assert resumed.exit_code == 0 and "finetune: 3 steps" in resumed.output, resumed.output
