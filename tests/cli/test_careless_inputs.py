"""A careless user's second round: ordinary mistakes that ended in a Python traceback are one line
naming the input and what was expected, and leave nothing behind."""

import dataclasses
import errno
import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.models import build_tiny, save_components


def _one_line(result, message):
    assert result.exit_code != 0, result.output
    assert (
        "Traceback" not in result.output
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    assert message in result.output, result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "-1"], "--steps: must be between 1 and 500, got -1"),
        (["--steps", "4294967297"], "--steps: must be between 1 and 500, got 4294967297"),
        (["--guidance", "nan"], "--guidance: must be a finite number >= 0, got nan"),
        (["--scheduler", "euler_a"], "--scheduler: unknown scheduler 'euler_a'; valid schedulers:"),
    ],
)
def test_generate_checks_its_settings_before_asking_a_server(tmp_path, extra, message):
    args = [
        "generate",
        "--server",
        "127.0.0.1:1",
        "--model",
        "m",
        "--class",
        "AD",
        "--out",
        str(tmp_path / "o"),
    ]
    _one_line(CliRunner().invoke(main, [*args, *extra]), message)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "0"], "--epochs must be >= 1, got 0"),
        (
            ["--image-size", "0"],
            "--image-size must be >= 32 (EfficientNet halves its input five times), got 0",
        ),
    ],
)
def test_evaluate_options_out_of_range(tmp_path, extra, message):
    args = [
        "evaluate",
        "--real",
        str(tmp_path),
        "--synthetic",
        str(tmp_path),
        "--out",
        str(tmp_path / "r"),
        *extra,
    ]
    _one_line(CliRunner().invoke(main, args), message)
    assert not (tmp_path / "r").exists()


def test_export_and_phantom_options_out_of_range(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(
        main, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "b"), "--opset", "5"]
    )
    _one_line(result, "--opset must be between 14 (attention needs it) and ")
    assert not (tmp_path / "b").exists()
    _one_line(
        CliRunner().invoke(main, ["data", "phantom", "--out", str(tmp_path / "p"), "--seed", "-1"]),
        "-1 is not in the range x>=0",
    )


def test_a_checkpoint_that_cannot_be_loaded_is_named(tiny_checkpoint, tmp_path):
    no_config = tmp_path / "no-config"
    shutil.copytree(tiny_checkpoint, no_config)
    (no_config / "unet" / "config.json").unlink()
    result = CliRunner().invoke(
        main, ["export", "--checkpoint", str(no_config), "--out", str(tmp_path / "b")]
    )
    _one_line(result, f"model folder {no_config} is incomplete: missing unet/config.json")
    # A U-Net of another model (its cross-attention 32 wide, this text encoder 16): named at load,
    # not "mat1 and mat2 shapes cannot be multiplied" at the first step.
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_checkpoint, mixed)
    from tests.conftest import SMALL

    other = tmp_path / "other"
    save_components(
        build_tiny(dataclasses.replace(SMALL, text_hidden_size=32, text_heads=2), resolution=32), other
    )
    shutil.rmtree(mixed / "unet")
    shutil.copytree(other / "unet", mixed / "unet")
    result = CliRunner().invoke(main, ["export", "--checkpoint", str(mixed), "--out", str(tmp_path / "b")])
    _one_line(
        result,
        "the U-Net's cross-attention width is 32 but the text encoder's width is 16; its parts come from different models",
    )
    assert not (tmp_path / "b").exists()


def test_a_damaged_bundle_is_named(tiny_bundle, tmp_path):
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_bundle, truncated)
    onnx = truncated / "unet.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    manifest = json.loads((truncated / "manifest.json").read_text())
    manifest["files"]["unet.onnx"] = hashlib.sha256(onnx.read_bytes()).hexdigest()  # the hash matches
    (truncated / "manifest.json").write_text(json.dumps(manifest))
    sample = ["sample", "--class", "AD", "--count", "1", "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(main, [*sample, "--model", str(truncated)])
    _one_line(result, f"{truncated / 'unet.onnx'} cannot be loaded by ONNX Runtime (")
    high = tmp_path / "high"
    shutil.copytree(tiny_bundle, high)
    manifest = json.loads((high / "manifest.json").read_text())
    manifest["defaults"]["guidance"] = "high"
    (high / "manifest.json").write_text(json.dumps(manifest))
    _one_line(
        CliRunner().invoke(main, [*sample, "--model", str(high)]),
        "manifest.json: defaults.guidance must be a number, got 'high'",
    )
    assert not (tmp_path / "s").exists()


def test_a_full_disk_is_one_line(tiny_bundle, tmp_path, monkeypatch):
    """Writing to a full stdout (/dev/full) or a full disk: one line, nothing that looks complete."""
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "polypsynth", "config", "show", "--config", "configs/phantom-tiny.yaml"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        == "Error: no space left to write the output (No space left on device): free some space, or write elsewhere"
    )
    from PIL import Image

    def full_disk(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    result = CliRunner().invoke(
        main,
        [
            "sample",
            "--model",
            str(tiny_bundle),
            "--class",
            "AD",
            "--count",
            "2",
            "--steps",
            "1",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    _one_line(result, "no space left to write the output (No space left on device)")
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s*"))
