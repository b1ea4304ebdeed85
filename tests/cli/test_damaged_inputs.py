"""Damaged inputs through the CLI: one line that names the file and what is wrong, nothing written."""

import shutil

import pytest
from click.testing import CliRunner

from polypsynth.cli import main


@pytest.fixture
def damaged_checkpoint(tiny_checkpoint, tmp_path):
    """A copy of a checkpoint whose U-Net and VAE weights were cut short (an interrupted copy)."""
    folder = tmp_path / "step-000010"
    shutil.copytree(tiny_checkpoint, folder)
    for part in ("unet", "vae"):
        file = folder / part / "diffusion_pytorch_model.safetensors"
        file.write_bytes(file.read_bytes()[: file.stat().st_size - 100])
    return folder


@pytest.mark.parametrize(
    "command, part",
    [
        (["export", "--checkpoint", "{ckpt}", "--out", "{out}"], "unet"),
        (["sample", "--model", "{ckpt}", "--backend", "torch", "--class", "AD", "--out", "{out}"], "unet"),
        (["reconstruct", "--model", "{ckpt}", "--real", "{real}", "--out", "{out}"], "vae"),
    ],
)
def test_a_truncated_checkpoint_is_named(command, part, damaged_checkpoint, phantom_small, tmp_path):
    out = tmp_path / "out"
    args = [a.format(ckpt=damaged_checkpoint, real=phantom_small, out=out) for a in command]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    file = damaged_checkpoint / part / "diffusion_pytorch_model.safetensors"
    assert result.output.splitlines()[-1] == (
        f"Error: {file} is damaged (incomplete metadata, file not fully covered): the file is truncated or "
        "altered; copy it again or use another checkpoint"
    )
    assert not out.exists()


def test_a_bundle_without_its_manifest_is_called_so(tiny_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    (bundle / "manifest.json").unlink()
    for backend in ("onnxruntime", "torch"):
        result = CliRunner().invoke(
            main,
            ["sample", "--model", str(bundle), "--backend", backend, "--class", "AD"]
            + ["--out", str(tmp_path / "out")],
        )
        assert result.exit_code == 1
        assert (
            f"{bundle} holds ONNX graphs but no manifest.json: an incomplete or damaged bundle"
            in result.output
        )
        assert "checkpoint folder" not in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(
        main, ["sample", "--model", str(empty), "--class", "AD", "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert (
        f"{empty} is neither a bundle (no manifest.json) nor a checkpoint folder (missing model_index.json"
        in (result.output)
    )
    assert not (tmp_path / "out").exists()
