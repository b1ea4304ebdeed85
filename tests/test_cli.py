import subprocess
import sys

from click.testing import CliRunner

from polypsynth import __version__
from polypsynth.cli import main


def test_help_lists_every_command_with_one_line():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "config"):
        line = next(ln for ln in result.output.splitlines() if ln.strip().startswith(command + " "))
        assert len(line.split(None, 1)[1]) > 10  # a description, not only the name


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"polypsynth, version {__version__}"


def test_help_imports_no_heavy_library():
    code = (
        "import sys; from click.testing import CliRunner; from polypsynth.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0; "
        "print(sorted(m for m in ('torch', 'diffusers', 'grpc', 'transformers', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_console_script_and_module_entry_points():
    out = subprocess.run(
        [sys.executable, "-m", "polypsynth", "--version"], capture_output=True, text=True, check=True
    )
    assert __version__ in out.stdout


def test_phantom_command(tmp_path):
    out = tmp_path / "p"
    args = [
        "data",
        "phantom",
        "--out",
        str(out),
        "--size",
        "32",
        "--stage1",
        "4",
        "--train",
        "3",
        "--test",
        "3",
    ]
    result = CliRunner().invoke(main, [*args, "--unlabelled", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "wrote 12 images to" in result.output
    result = CliRunner().invoke(main, [*args, "--unlabelled", "2"])
    assert result.exit_code == 1 and "is not empty; pass --overwrite to replace it" in result.output


def test_every_option_says_what_it_is():
    """Nine options had no help text: every option of every command now has one, and no default
    shows as a long float (2/3 read 0.6666666666666666)."""
    import click

    from polypsynth.cli import main as group

    def options(cmd, prefix=""):
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                yield from options(sub, f"{prefix} {name}".strip())
        else:
            for p in cmd.params:
                if isinstance(p, click.Option):
                    yield prefix, p

    found = list(options(group))
    assert len(found) > 100
    assert [f"{c} {p.opts[0]}" for c, p in found if not p.help] == []
    long_floats = [
        f"{c} {p.opts[0]}"
        for c, p in found
        if isinstance(p.default, float) and p.show_default is True and len(repr(p.default)) > 8
    ]
    assert long_floats == []


def test_serve_limits_match_the_request_limit_and_refuse_negative_grace(tmp_path):
    from polypsynth.sampling.request import MAX_COUNT
    from polypsynth.serve.server import ServerOptions

    assert ServerOptions().max_count == MAX_COUNT == 100_000  # the README's limit, served by default
    result = CliRunner().invoke(main, ["serve", "--model", f"m={tmp_path}", "--grace", "-5"])
    assert (
        result.exit_code == 2
        and "Invalid value for '--grace': -5.0 is not in the range x>=0." in result.output
    )


def test_evaluate_maps_labels_as_its_error_suggests(tmp_path):
    """An unknown label told the user to add a label map that `evaluate` had no option for."""
    import numpy as np
    from PIL import Image

    for split in ("train", "test"):
        for label in ("ssl", "NON_AD"):
            folder = tmp_path / "real" / split / label
            folder.mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "0.png")
    args = ["evaluate", "--real", str(tmp_path / "real"), "--real-kind", "image_folder"]
    args += ["--synthetic", str(tmp_path / "none"), "--out", str(tmp_path / "r")]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "unknown label 'ssl'" in refused.output
    assert "(map others with --label NAME=LABEL, or label_map in a training config)" in refused.output
    mapped = CliRunner().invoke(main, [*args, "--label", "ssl=AD"])
    assert mapped.exit_code == 1 and "unknown label" not in mapped.output
    assert "synthetic folder not found" in mapped.output  # past the labels, to the next input
