import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from polypsynth.cli import main
from polypsynth.sampling.loop import sample_images
from polypsynth.sampling.model import open_model
from polypsynth.sampling.output import read_provenance
from polypsynth.sampling.request import make_params


def test_sample_writes_images_with_provenance(tiny_bundle, tmp_path):
    out = tmp_path / "samples"
    args = [
        "sample",
        "--model",
        str(tiny_bundle),
        "--class",
        "NON_AD",
        "--count",
        "3",
        "--seed",
        "5",
        "--steps",
        "3",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = sorted((out / "NON_AD").glob("*.png"))
    assert [f.name for f in files] == ["000000.png", "000001.png", "000002.png"]
    rows = [json.loads(line) for line in (out / "NON_AD" / "samples.jsonl").read_text().splitlines()]
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert [r["seed"] for r in rows] == [5, 6, 7]
    assert {r["model_hash"] for r in rows} == {manifest["source_hash"]}
    assert rows[0]["backend"] == "onnxruntime" and rows[0]["scheduler"] == "dpm++" and rows[0]["steps"] == 3
    prov = read_provenance(files[2])
    assert prov["seed"] == "7" and prov["class_name"] == "NON_AD" and prov["guidance"] == "3.0"
    # The images are the sampler's images for those seeds.
    expected = sample_images(
        open_model(tiny_bundle, "onnxruntime"), make_params("NON_AD", 3, seed=5, steps=3)
    )
    assert np.array_equal(np.stack([np.asarray(Image.open(f)) for f in files]), expected)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "is not empty; pass --overwrite" in result.output


def test_sample_bad_input_is_reported(tiny_bundle, tmp_path):
    base = ["sample", "--model", str(tiny_bundle), "--out", str(tmp_path / "s")]
    result = CliRunner().invoke(main, [*base, "--class", "SSL"])
    assert result.exit_code == 1 and "unknown class 'SSL'; the model's classes: AD, NON_AD" in result.output
    result = CliRunner().invoke(main, [*base, "--class", "AD", "--guidance", "-2"])
    assert result.exit_code == 1 and "guidance: must be a finite number >= 0, got -2.0" in result.output
    assert not (tmp_path / "s" / "AD").exists()


def test_export_command(tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(
        main, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "unet: parity max_abs=" in result.output and "classes: AD, NON_AD" in result.output
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--checkpoint",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "c"),
            "--batch-sizes",
            "0,2",
        ],
    )
    assert result.exit_code == 2 and "expected positive integers" in result.output
