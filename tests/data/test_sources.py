from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polypsynth.config import DataSource
from polypsynth.data.records import LabelMap
from polypsynth.data.sources import (
    load_csv_manifest,
    load_cvc_classif,
    load_cvc_segment,
    load_image_folder,
    load_phantom,
    load_source,
    load_sun,
)
from polypsynth.errors import DataError


def _img(path: Path, value: int = 0, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _summary(records, root):
    return sorted((r.path.relative_to(root).as_posix(), r.label, r.split) for r in records)


def test_image_folder_with_common_label_names(tmp_path):
    _img(tmp_path / "Tubular adenoma" / "a.png", 1)
    _img(tmp_path / "hyperplastic" / "b.jpg", 2)
    _img(tmp_path / "non-adenoma" / "sub" / "c.png", 3)
    records = load_image_folder(tmp_path)
    assert _summary(records, tmp_path) == [
        ("Tubular adenoma/a.png", "AD", "train"),
        ("hyperplastic/b.jpg", "NON_AD", "train"),
        ("non-adenoma/sub/c.png", "NON_AD", "train"),
    ]


def test_image_folder_with_split_folders(tmp_path):
    _img(tmp_path / "train" / "AD" / "a.png", 1)
    _img(tmp_path / "train" / "NON_AD" / "b.png", 2)
    _img(tmp_path / "validation" / "adenoma" / "c.png", 3)
    records = load_image_folder(tmp_path)
    assert _summary(records, tmp_path) == [
        ("train/AD/a.png", "AD", "train"),
        ("train/NON_AD/b.png", "NON_AD", "train"),
        ("validation/adenoma/c.png", "AD", "test"),
    ]


def test_label_map_is_configurable_and_names_unknown_labels(tmp_path):
    _img(tmp_path / "sessile serrated lesion" / "a.png")
    with pytest.raises(
        DataError, match=r"unknown label 'sessile serrated lesion' in folder name .*; known labels: .*adenoma"
    ):
        load_image_folder(tmp_path)
    records = load_image_folder(tmp_path, LabelMap({"Sessile_Serrated-Lesion": "AD"}))
    assert [r.label for r in records] == ["AD"]
    with pytest.raises(DataError, match="label map: 'x' maps to 'MAYBE'; targets must be one of AD, NON_AD"):
        LabelMap({"x": "MAYBE"})


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match=r"image folder not found: .*nowhere"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "AD").mkdir()
    with pytest.raises(DataError, match=r"class folder .*AD holds no images"):
        load_image_folder(tmp_path)


def test_csv_manifest_paths_relative_to_csv(tmp_path):
    _img(tmp_path / "imgs" / "a.png", 1)
    _img(tmp_path / "imgs" / "b.png", 2)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text(
        "path,label,split,quality\nimgs/a.png,adenoma,train,sharp\nimgs/b.png,hyperplastic,val,\n"
    )
    records = load_csv_manifest(csv_path)
    assert _summary(records, tmp_path) == [("imgs/a.png", "AD", "train"), ("imgs/b.png", "NON_AD", "test")]
    assert [r.quality for r in records] == ["sharp", "unknown"]


def test_csv_manifest_missing_column(tmp_path):
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,label\na.png,AD\n")
    with pytest.raises(DataError, match=r"list.csv: missing column\(s\) split; found: path, label"):
        load_csv_manifest(csv_path)


def test_sun_database_as_distributed_with_frame_subsampling(tmp_path):
    for case in ("case1", "case2"):
        for i in range(6):
            _img(tmp_path / "sundatabase_positive_part1" / case / f"frame{i:03d}.jpg", i)
    for i in range(4):
        _img(tmp_path / "sundatabase_negative" / "case7" / f"frame{i:03d}.jpg", 10 + i)
    records = load_sun(tmp_path, frame_step=3)
    polyp = [r for r in records if r.label == "polyp"]
    non_polyp = [r for r in records if r.label == "non_polyp"]
    assert [p.path.name for p in polyp] == ["frame000.jpg", "frame003.jpg"] * 2
    assert [p.path.name for p in non_polyp] == ["frame000.jpg", "frame003.jpg"]
    assert {r.source for r in records} == {"sun"}


def test_sun_seg_layout(tmp_path):
    for i in range(4):
        _img(tmp_path / "TrainDataset" / "Frame" / "case1" / f"img{i}.jpg", i)
        _img(tmp_path / "TrainDataset" / "GT" / "case1" / f"img{i}.png", i)
    (tmp_path / "TrainDataset" / "Classification").mkdir()
    (tmp_path / "TrainDataset" / "Classification" / "classification.txt").write_text(
        "case1/img0.jpg Low-grade_adenoma\n"
    )
    _img(tmp_path / "TestEasyDataset" / "Seen" / "Frame" / "case9" / "x.jpg", 9)
    _img(tmp_path / "TestHardDataset" / "Unseen" / "Frame" / "case8" / "y.jpg", 8)
    records = load_sun(tmp_path, frame_step=2)
    assert _summary(records, tmp_path) == [
        ("TestEasyDataset/Seen/Frame/case9/x.jpg", "polyp", "test"),
        ("TestHardDataset/Unseen/Frame/case8/y.jpg", "polyp", "test"),
        ("TrainDataset/Frame/case1/img0.jpg", "polyp", "train"),
        ("TrainDataset/Frame/case1/img2.jpg", "polyp", "train"),
    ]  # GT masks are not images of the set


def test_sun_wrong_layout(tmp_path):
    _img(tmp_path / "random" / "a.png")
    with pytest.raises(DataError, match=r"is neither the SUN database .*positive.*nor SUN-SEG"):
        load_sun(tmp_path)


def test_cvc_classif(tmp_path):
    _img(tmp_path / "train" / "images" / "001.png", 1)
    _img(tmp_path / "train" / "images" / "002.png", 2)
    (tmp_path / "train" / "labels.csv").write_text("image;histology\n001.png;adenoma\n002;hyperplastic\n")
    _img(tmp_path / "validation" / "003.png", 3)
    (tmp_path / "validation" / "gt.txt").write_text("003.png\tAdenoma\n")
    records = load_cvc_classif(tmp_path)
    assert _summary(records, tmp_path) == [
        ("train/images/001.png", "AD", "train"),
        ("train/images/002.png", "NON_AD", "train"),
        ("validation/003.png", "AD", "test"),
    ]
    assert {r.source for r in records} == {"cvc-classif"} and {r.quality for r in records} == {"sharp"}


def test_cvc_classif_errors(tmp_path):
    _img(tmp_path / "train" / "001.png")
    (tmp_path / "train" / "labels.csv").write_text("004.png,adenoma\n")
    with pytest.raises(DataError, match=r"labels.csv: row 1 names image '004.png', which is not in .*train"):
        load_cvc_classif(tmp_path)
    (tmp_path / "train" / "more.txt").write_text("")
    with pytest.raises(DataError, match=r"must hold exactly one label file .*found: labels.csv, more.txt"):
        load_cvc_classif(tmp_path)


def test_cvc_segment(tmp_path):
    _img(tmp_path / "Original" / "1.tif", 1)
    _img(tmp_path / "Ground Truth" / "1.tif", 1)
    records = load_cvc_segment(tmp_path)
    assert _summary(records, tmp_path) == [("Original/1.tif", "polyp", "train")]
    with pytest.raises(DataError, match="has no images/ .*folder"):
        load_cvc_segment(tmp_path / "Ground Truth")


def test_phantom_subsets_and_source_filters(phantom_small):
    assert {r.label for r in load_phantom(phantom_small, "classif")} == {"AD", "NON_AD"}
    records = load_source(
        DataSource(kind="phantom", path=str(phantom_small), subset="classif", split="test", labels=["AD"])
    )
    assert len(records) == 6 and {(r.label, r.split) for r in records} == {("AD", "test")}
    with pytest.raises(DataError, match=r"holds no images of split=test labels=\['polyp'\]"):
        load_source(
            DataSource(
                kind="phantom", path=str(phantom_small), subset="classif", split="test", labels=["polyp"]
            )
        )
