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
