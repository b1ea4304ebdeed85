import shutil

from click.testing import CliRunner
from PIL import Image

from polypsynth.cli import main


def _copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_inspect_counts_and_resolutions(phantom_small):
    result = CliRunner().invoke(main, ["data", "inspect", str(phantom_small)])
    assert result.exit_code == 0, result.output
    assert "AD         train  sharp        12" in result.output
    assert "NON_AD     test   sharp        3" in result.output
    assert "resolutions: 64x64 (57)" in result.output
    assert "duplicates across train and test: 0" in result.output


def test_leakage_between_train_and_test_is_an_error(tmp_path):
    img = Image.new("RGB", (8, 8), (200, 100, 90))
    for split, cls, name in [("train", "AD", "a.png"), ("test", "AD", "b.png"), ("train", "NON_AD", "c.png")]:
        (tmp_path / split / cls).mkdir(parents=True, exist_ok=True)
        (img if name != "c.png" else Image.new("RGB", (8, 8), 0)).save(tmp_path / split / cls / name)
    # The same pixels saved in another format still count as the same image.
    img.save(tmp_path / "test" / "AD" / "b.png")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "appear in both train and test (leakage)" in result.output
    assert "a.png (train)" in result.output and "b.png (test)" in result.output


def test_unreadable_files_fail_unless_skipped(tmp_path):
    (tmp_path / "AD").mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "AD" / "ok.png")
    (tmp_path / "AD" / "bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert "1 image(s) cannot be read, first: " in result.output and "bad.png" in result.output
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "unreadable files: 1" in result.output and "bad.png: " in result.output


def test_inspect_label_option(tmp_path):
    (tmp_path / "ssl").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "ssl" / "x.png")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 1 and "unknown label 'ssl'" in result.output
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path), "--label", "ssl=AD"])
    assert result.exit_code == 0 and "AD         train  unknown      1" in result.output


def test_near_duplicate_of_a_test_image_in_any_pool_is_leakage(phantom_small, tmp_path):
    """A training frame re-encoded as JPEG and resized is no longer identical, but it is the same
    picture: the perceptual hash finds it, across any split other than test."""
    images = sorted((phantom_small / "classif" / "train" / "AD").glob("*.png"))
    for i, p in enumerate(images[:4]):
        (tmp_path / "train" / "AD").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, tmp_path / "train" / "AD" / f"t{i}.png")
    others = sorted((phantom_small / "classif" / "test" / "NON_AD").glob("*.png"))
    (tmp_path / "test" / "NON_AD").mkdir(parents=True)
    shutil.copy(others[0], tmp_path / "test" / "NON_AD" / "fine.png")
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 0, result.output  # distinct images: no false alarm
    assert "near-duplicates of test images elsewhere (perceptual hash distance <= 4): 0" in result.output
    Image.open(images[2]).convert("RGB").resize((60, 60)).save(
        tmp_path / "test" / "NON_AD" / "leak.jpg", quality=85
    )
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        "1 near-duplicate pair(s) between the test split and other images (leakage), first: " in result.output
    )
    assert "leak.jpg ~ " in result.output and "t2.png (hash distance " in result.output
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path), "--allow-leakage"])
    assert result.exit_code == 0 and "leak.jpg ~ " in result.output


def test_cli_default_hash_distance_is_the_library_default():
    from polypsynth.cli import max_hash_distance_option
    from polypsynth.data.inspect import MAX_HASH_DISTANCE

    @max_hash_distance_option
    def f(max_hash_distance):
        pass

    assert f.__click_params__[0].default == MAX_HASH_DISTANCE
