import json

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.sampling.output import read_provenance
from polypsynth.serve.server import SamplerServer, ServerOptions


@pytest.fixture(scope="module")
def server(tiny_bundle):
    s = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=4, max_wait_ms=5)).start()
    yield s
    s.stop(grace=1)


def test_generate_is_resumable_and_refuses_to_mix(server, tmp_path):
    out = tmp_path / "out"
    args = [
        "generate",
        "--server",
        f"127.0.0.1:{server.port}",
        "--model",
        "tiny",
        "--class",
        "AD",
        "--seed",
        "9",
        "--steps",
        "2",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, [*args, "--count", "3"])
    assert result.exit_code == 0, result.output
    first = {p.name: p.stat().st_mtime_ns for p in (out / "AD").glob("*.png")}
    assert sorted(first) == ["000000.png", "000001.png", "000002.png"]
    result = CliRunner().invoke(main, [*args, "--count", "5"])  # resumes: 3 kept, 2 new
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (out / "AD").glob("*.png"))
    assert files == [f"{i:06d}.png" for i in range(5)]
    assert all((out / "AD" / n).stat().st_mtime_ns == t for n, t in first.items())
    rows = [json.loads(x) for x in (out / "AD" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(5)) and {r["request_seed"] for r in rows} == {9}
    for i in range(5):  # resumed images carry their own index and seed, as in an uninterrupted run
        provenance = read_provenance(out / "AD" / f"{i:06d}.png")
        assert (provenance["index"], provenance["seed"]) == (str(i), str(9 + i))
    # A writer killed mid-append leaves a torn last line: the next run drops it and redoes that image.
    log = out / "AD" / "samples.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][:20])
    torn = json.loads(lines[-1])["index"]
    result = CliRunner().invoke(main, [*args, "--count", "5"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(5)) and rows[-1]["index"] == torn
    other_seed = [a if a != "9" else "10" for a in args]
    result = CliRunner().invoke(main, [*other_seed, "--count", "5"])
    assert (
        result.exit_code == 1
        and "holds images with request_seed=9, this request has 10; refusing to mix them" in result.output
    )


def test_generate_reports_server_errors(server, tmp_path):
    args = [
        "generate",
        "--server",
        f"127.0.0.1:{server.port}",
        "--model",
        "nope",
        "--class",
        "AD",
        "--out",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "NOT_FOUND: model: unknown model 'nope'" in result.output


def test_serve_command_refuses_bad_model_spec():
    result = CliRunner().invoke(main, ["serve", "--model", "tiny"])
    assert result.exit_code == 1 and "--model expects NAME=BUNDLE, got 'tiny'" in result.output


def test_server_lists_and_counts(tmp_path):
    from polypsynth.cli.serving import split_servers
    from polypsynth.errors import PolypsynthError

    assert split_servers("a:1") == ["a:1"]
    assert split_servers("a:1, b:2") == ["a:1", "b:2"]
    assert split_servers("ipv4:10.0.0.1:5,10.0.0.2:5") == ["ipv4:10.0.0.1:5,10.0.0.2:5"]  # one gRPC target
    assert split_servers("dns:///replicas:50051") == ["dns:///replicas:50051"]
    for bad in ("a:1,,b:2", "a:1,a:1"):
        with pytest.raises(PolypsynthError, match="expected HOST:PORT or distinct HOST:PORT,HOST:PORT"):
            split_servers(bad)
    for count in ("0", "-1"):
        result = CliRunner().invoke(
            main,
            ["generate", "--server", "127.0.0.1:1", "--model", "m", "--class", "AD", "--count", count]
            + ["--out", str(tmp_path / "o")],
        )
        assert result.exit_code == 1 and f"--count must be >= 1, got {count}" in result.output
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--port", "99999"], "Invalid value for '--port': 99999 is not in the range 0<=x<=65535"),
        (["--max-batch", "0"], "Invalid value for '--max-batch': 0 is not in the range x>=1"),
        (["--max-wait-ms", "-1"], "Invalid value for '--max-wait-ms': -1.0 is not in the range x>=0"),
        (["--max-count", "0"], "Invalid value for '--max-count': 0 is not in the range x>=1"),
        (["--model", "s=other"], "--model s is given twice ("),
    ],
)
def test_serve_refuses_careless_options(tiny_bundle, extra, message):
    result = CliRunner().invoke(main, ["serve", "--model", f"s={tiny_bundle}", "--port", "0", *extra])
    assert result.exit_code != 0 and message in result.output, result.output
