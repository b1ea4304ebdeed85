import pytest
import torch

from polypsynth.data.dataset import RecordDataset, to_uint8
from polypsynth.data.inspect import verify_images
from polypsynth.data.prompts import class_prompt, prompt_for, stage1_prompt
from polypsynth.data.records import Record
from polypsynth.data.sources import load_phantom
from polypsynth.errors import DataError


def test_items_have_shape_range_and_prompt(phantom_small):
    records = load_phantom(phantom_small, "classif")
    ds = RecordDataset(records, resolution=32, flip=True)
    item = ds[0]
    x = item["pixel_values"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.min() < -0.9  # black field-stop corners
    assert item["prompt"] == "a high quality colonoscopy image of an adenomatous polyp"
    assert item["label"] == "AD" and item["source"] == "phantom/classif"


def test_resize_keeps_content():
    """Round trip at the native size is lossless (no flips): the transform is only scale + shift."""
    import numpy as np
    from PIL import Image

    from polypsynth.data.dataset import image_transform

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    x = image_transform(16)(Image.fromarray(pixels))
    assert np.array_equal(to_uint8(x), pixels)


def test_prompts_follow_label_and_quality(phantom_small):
    stage1 = load_phantom(phantom_small, "stage1")
    blurred = next(r for r in stage1 if r.quality == "blurred" and r.label == "polyp")
    over = next(r for r in stage1 if r.quality == "overexposed" and r.label == "non_polyp")
    assert prompt_for(blurred) == "a blurry colonoscopy image with a polyp"
    assert prompt_for(over) == "an overexposed colonoscopy image without a polyp"
    assert stage1_prompt(True, "sharp") == "a high quality colonoscopy image with a polyp"
    assert class_prompt("AD", {"AD": "custom"}) == "custom"
    with pytest.raises(KeyError, match="no prompt for class 'SSL'; classes with prompts: AD, NON_AD"):
        class_prompt("SSL")


def test_undecodable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    ds = RecordDataset([Record(bad, "AD", "train")], resolution=16)
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png"):
        ds[0]
    good, skipped = verify_images([Record(bad, "AD", "train")], skip_bad=True)
    assert good == [] and skipped == [str(bad)]
    with pytest.raises(DataError, match=r"cannot decode image .*broken.png"):
        verify_images([Record(bad, "AD", "train")])


def test_empty_dataset_is_refused():
    with pytest.raises(DataError, match="the dataset holds no records"):
        RecordDataset([], resolution=16)
