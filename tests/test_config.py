from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.config import PolypsynthConfig, load_config
from polypsynth.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert {p.name for p in CONFIGS} >= {"phantom-tiny.yaml", "sd15-polyp.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_through_the_cli(path):
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    raw = yaml.safe_load(path.read_text())
    assert shown["model"]["resolution"] == raw["model"]["resolution"]
    assert shown["stage"]["finetune"]["steps"] == raw["stage"]["finetune"]["steps"]
    assert shown["stage"]["finetune"]["freeze"] == raw["stage"]["finetune"]["freeze"]


def test_overrides_are_typed_and_nested():
    path = CONFIGS[0]
    result = CliRunner().invoke(
        main,
        [
            "config",
            "show",
            "--config",
            str(path),
            "--set",
            "stage.finetune.steps=200",
            "--set",
            "train.ema=true",
        ],
    )
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["stage"]["finetune"]["steps"] == 200 and shown["train"]["ema"] is True


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert isinstance(cfg, PolypsynthConfig) and cfg.model.resolution == 64


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["stage.finetune.stepz=3"],
            "unknown config key 'stage.finetune.stepz'; allowed keys here: enabled, steps,",
        ),
        (
            ["modle.resolution=64"],
            "unknown config key 'modle'; allowed keys here: model, stage, train, prompts",
        ),
        (["model.resolution=60"], "model.resolution must be a positive multiple of 8, got 60"),
        (
            ["stage.autoencoder.lr_schedule=linear"],
            "stage.autoencoder.lr_schedule: expected 'constant' | 'cosine', got 'linear'",
        ),
        (["model.resolution=abc"], "model.resolution: expected an integer, got 'abc'"),
        (
            ["train.mixed_precision=fp8"],
            "train.mixed_precision: expected one of 'no', 'fp16', 'bf16', got 'fp8'",
        ),
        (["stage.finetune.replay_share=1.5"], r"stage.finetune.replay_share must be in \[0, 1\), got 1.5"),
        (
            ["stage.pretrain.replay_share=0.2"],
            "stage.pretrain.replay_share is 0.2 but stage.pretrain.replay is empty",
        ),
        (
            ["stage.pretrain.data=[{kind: phantom, path: x}]"],
            "phantom needs subset stage1, classif or unlabelled",
        ),
        (
            ["stage.pretrain.data=[{kind: zip, path: x}]"],
            r"stage.pretrain.data\[0\].kind: expected one of 'phantom'",
        ),
        (["model"], "--set expects key=value, got 'model'"),
        (["stage.pretrain.crop=32"], "stage.pretrain.crop applies to the autoencoder stage only"),
        (
            ["stage.autoencoder.crop=30"],
            r"stage.autoencoder.crop must be a multiple of 4 \(the VAE's downsampling\) between 4 and "
            "model.resolution 64, got 30",
        ),
        (["stage.autoencoder.crop=128"], "between 4 and model.resolution 64, got 128"),
        (["stage.autoencoder.crop_share=1.5"], r"stage.autoencoder.crop_share must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_config_values(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_bad_config_through_the_cli(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  resolutoin: 64\n")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(bad)])
    assert result.exit_code == 1
    assert "unknown config key 'model.resolutoin'; allowed keys here: pretrained, resolution" in result.output
    result = CliRunner().invoke(main, ["config", "show", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "config file not found" in result.output


def test_yes_and_no_stay_words(tmp_path):
    """YAML 1.2 booleans: `no` is the mixed-precision mode, not False (YAML 1.1 would say False)."""
    cfg = load_config(CONFIGS[0], ["train.mixed_precision=no", "train.ema=false"])
    assert cfg.train.mixed_precision == "no" and cfg.train.ema is False
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match=r"train\.ema"):
        load_config(path, ["train.ema=yes"])


@pytest.mark.parametrize(
    "spelling, value", [("1e-4", 1e-4), ("1.0e-4", 1e-4), ("1E-4", 1e-4), (".5", 0.5), ("5e1", 50.0)]
)
def test_numbers_in_any_yaml_spelling(tmp_path, spelling, value):
    """YAML 1.2 floats: `1e-4` is a number (YAML 1.1, PyYAML's default, reads it as a string)."""
    path = tmp_path / "c.yaml"
    path.write_text(f"stage:\n  finetune:\n    learning_rate: {spelling}\n")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["stage"]["finetune"]["learning_rate"] == value
    overridden = f"stage.pretrain.learning_rate={spelling}"
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path), "--set", overridden])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["stage"]["pretrain"]["learning_rate"] == value
    assert load_config(path).stage.finetune.learning_rate == value
    with pytest.raises(ConfigError, match=r"stage.finetune.steps: expected an integer, got 0.0001"):
        load_config(path, ["stage.finetune.steps=1e-4"])
