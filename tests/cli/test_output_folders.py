"""What a command does to the folders it writes, through the CLI: --overwrite replaces only
polypsynth's own folders, and an output place that cannot be written is a one-line error before any
work, leaving nothing behind."""

import contextlib
import subprocess

import pytest
from click.testing import CliRunner

from polypsynth.atomic import MARKER
from polypsynth.cli import main

PHANTOM = ["data", "phantom", "--size", "32", "--stage1", "2", "--train", "2", "--test", "2"]
PHANTOM += ["--unlabelled", "0", "--workers", "1"]


def test_overwrite_replaces_only_polypsynth_folders(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("not polypsynth's")
    result = CliRunner().invoke(main, [*PHANTOM, "--out", str(foreign), "--overwrite"])
    assert result.exit_code == 1
    assert f"phantom output folder {foreign} was not written by polypsynth (it has no {MARKER} marker)" in (
        result.output
    )
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]  # untouched

    ours = tmp_path / "phantom"
    assert CliRunner().invoke(main, [*PHANTOM, "--out", str(ours)]).exit_code == 0
    assert (ours / MARKER).is_file()
    before = (ours / MARKER).read_text()
    result = CliRunner().invoke(main, [*PHANTOM, "--out", str(ours), "--seed", "1", "--overwrite"])
    assert result.exit_code == 0, result.output  # polypsynth's own folder: replaced
    assert (ours / MARKER).is_file() and '"what": "phantom output folder"' in before


@contextlib.contextmanager
def unwritable(folder):
    """A folder no one may create entries in, root included (the suite may run as root, for whom
    permission bits do not apply): chmod 555 and, as root, the immutable attribute."""
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    try:
        probe = folder / "probe"
        try:
            probe.mkdir()
        except OSError:
            pass
        else:
            probe.rmdir()
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
                pytest.skip("cannot make a folder unwritable here: running as root without chattr +i")
            immutable = True
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _commands(tiny_checkpoint, tiny_bundle, phantom_small, out):
    return {
        "data phantom": [*PHANTOM, "--out", str(out)],
        "export": ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(out)],
        "sample": ["sample", "--model", str(tiny_bundle), "--class", "AD", "--count", "1", "--out", str(out)],
        "generate": [
            "generate",
            "--server",
            "127.0.0.1:1",
            "--model",
            "m",
            "--class",
            "AD",
            "--out",
            str(out),
        ],
        "evaluate": [
            "evaluate",
            "--real",
            str(phantom_small),
            "--synthetic",
            str(phantom_small),
            "--out",
            str(out),
        ],
        "reconstruct": ["reconstruct", "--model", str(tiny_checkpoint), "--real", str(phantom_small)]
        + ["--out", str(out)],
        "train": ["train", "--config", "configs/phantom-tiny.yaml", "--out", str(out)],
    }


@pytest.mark.parametrize(
    "command", ["data phantom", "export", "sample", "generate", "evaluate", "reconstruct", "train"]
)
def test_an_unwritable_output_place_is_one_line(
    command, tiny_checkpoint, tiny_bundle, phantom_small, tmp_path
):
    with unwritable(tmp_path / "ro") as ro:
        out = ro / "runs" / "x"
        args = _commands(tiny_checkpoint, tiny_bundle, phantom_small, out)[command]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (result.output, result.exception)
        assert result.output.splitlines()[-1].startswith("Error: ") and "Traceback" not in result.output
        assert str(ro / "runs") in result.output  # names the place
        assert ("Permission denied" in result.output) or ("Operation not permitted" in result.output)
        assert not any(ro.iterdir())
