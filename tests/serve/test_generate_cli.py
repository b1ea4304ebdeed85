import json
import os

import pytest
from click.testing import CliRunner

from polypsynth.cli import main
from polypsynth.sampling.output import read_provenance
from polypsynth.sampling.request import make_request
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
    # generate and sample share their request options (cli/sampling.py request_options): one range.
    for command in (
        ["generate", "--server", "127.0.0.1:1", "--model", "m"],
        ["sample", "--model", str(tmp_path)],
    ):
        for count in ("0", "-1", "100001"):
            result = CliRunner().invoke(
                main, [*command, "--class", "AD", "--count", count, "--out", str(tmp_path / "o")]
            )
            assert result.exit_code == 2, result.output
            assert f"Invalid value for '--count': {count} is not in the range 1<=x<=100000" in result.output
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


def _generate_args(server, out, *extra):
    return ["generate", "--server", f"127.0.0.1:{server.port}", "--model", "tiny", "--steps", "2"] + [
        "--out",
        str(out),
        *extra,
    ]


def test_a_refused_request_leaves_no_folder(server, tiny_bundle, tmp_path):
    out = tmp_path / "new" / "samples"
    result = CliRunner().invoke(main, _generate_args(server, out, "--class", "ad", "--count", "2"))
    assert result.exit_code == 1
    assert f"--class 'ad': model 'tiny' on 127.0.0.1:{server.port} has classes AD, NON_AD" in result.output
    assert not (tmp_path / "new").exists()  # neither OUT nor the folders above it were made
    # Steps past the limit: refused by the CLI before any server is asked or any folder made.
    result = CliRunner().invoke(main, _generate_args(server, out, "--class", "AD", "--steps", "501"))
    assert result.exit_code == 1 and "--steps: must be between 1 and 500, got 501" in result.output, (
        result.output
    )
    assert not (tmp_path / "new").exists()
    # Refused by the server after the folder was opened (a count over its --max-count, which the
    # client cannot know): the folder made for it is taken back.
    small = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_count=3)).start()
    try:
        result = CliRunner().invoke(main, _generate_args(small, out, "--class", "AD", "--count", "4"))
    finally:
        small.stop(grace=1)
    assert (
        result.exit_code == 1 and "INVALID_ARGUMENT: count: must be between 1 and 3, got 4" in result.output
    ), result.output
    assert not (tmp_path / "new").exists()
    # A seed range past the torch generators' limit: the same rule as `sample`, before anything.
    result = CliRunner().invoke(
        main, _generate_args(server, out, "--class", "AD", "--seed", str(2**64 - 2), "--count", "3")
    )
    assert result.exit_code == 1 and "the largest seed for 3 images is 18446744073709551613" in result.output
    assert not (tmp_path / "new").exists()


def test_an_unfinished_folder_is_marked_refused_and_completed(server, tiny_bundle, phantom_small, tmp_path):
    """Interrupted after 3 of 6 images: the folder says so and how to finish; `evaluate` and
    `sample` refuse it with that command; running it completes the folder and the marker goes."""
    from polypsynth.atomic import INCOMPLETE, MARKER
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.to_folder import write_folder

    out = tmp_path / "samples" / "step-000010"
    command = "polypsynth generate --server X --model tiny --class AD --count 6 --out " + str(out)

    seen = [0]

    def interrupt(n):  # Ctrl-C after the third image
        seen[0] += n
        if seen[0] >= 3:
            raise KeyboardInterrupt

    with SamplerClient(f"127.0.0.1:{server.port}") as client, pytest.raises(KeyboardInterrupt):
        write_folder(
            client, out, "tiny", make_request("AD", 6, steps=2), progress=interrupt, complete_with=command
        )
    marker = json.loads((out / "AD" / INCOMPLETE).read_text())
    assert marker == {"have": 3, "count": 6, "complete_with": command}
    assert len(list((out / "AD").glob("*.png"))) == 3 and not (out / "AD" / MARKER).exists()
    assert not (out / "AD" / ".polypsynth.lock").exists()

    (out / "NON_AD").mkdir()  # a second class, so that only the marker stands in the way
    (out / "NON_AD" / "000000.png").write_bytes((out / "AD" / "000000.png").read_bytes())
    result = CliRunner().invoke(
        main,
        ["evaluate", "--real", str(phantom_small), "--synthetic", str(out.parent)]
        + ["--out", str(tmp_path / "report")],
    )
    assert result.exit_code == 1
    assert (
        f"synthetic class folder {out / 'AD'} is an unfinished `polypsynth generate` folder (3 of 6"
        in result.output
    )
    assert f"complete it with: {command}" in result.output
    result = CliRunner().invoke(
        main,
        ["sample", "--model", str(tiny_bundle), "--class", "AD", "--count", "2", "--steps", "1"]
        + ["--out", str(out)],
    )
    assert result.exit_code == 1 and f"complete it with: {command}" in result.output
    assert "pass --overwrite to replace it" in result.output

    # The CLI records its own command line; running the completing command finishes the folder.
    result = CliRunner().invoke(main, _generate_args(server, out, "--class", "AD", "--count", "6"))
    assert result.exit_code == 0, result.output
    assert not (out / "AD" / INCOMPLETE).exists() and (out / "AD" / MARKER).is_file()
    rows = [json.loads(x) for x in (out / "AD" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(6))


def test_a_server_gone_mid_request_leaves_a_marked_folder(tiny_bundle, tmp_path):
    from polypsynth.atomic import INCOMPLETE
    from polypsynth.errors import PolypsynthError
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.to_folder import write_folder

    s = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=2, max_wait_ms=5)).start()

    seen = [0]

    def stop_server(n):
        seen[0] += n
        if seen[0] == 2:
            s.stop(grace=0)

    try:
        with SamplerClient(f"127.0.0.1:{s.port}") as client, pytest.raises(PolypsynthError) as err:
            write_folder(
                client, tmp_path, "tiny", make_request("NON_AD", 40, steps=2), progress=stop_server, retries=0
            )
    finally:
        s.stop(grace=0)
    assert "the server gave up with" in str(err.value) and "UNAVAILABLE" in str(err.value)
    marker = json.loads((tmp_path / "NON_AD" / INCOMPLETE).read_text())
    assert 2 <= marker["have"] < 40 and marker["count"] == 40
    assert marker["complete_with"].startswith(f"polypsynth generate --server 127.0.0.1:{s.port} --model tiny")
    assert marker["have"] == len(list((tmp_path / "NON_AD").glob("*.png")))


def test_two_writers_into_one_folder_are_refused(server, tmp_path):
    from polypsynth.atomic import FolderLock

    folder = tmp_path / "out" / "AD"
    folder.mkdir(parents=True)
    with FolderLock(folder):  # another process writing (the lock is per open file, as across processes)
        result = CliRunner().invoke(
            main, _generate_args(server, tmp_path / "out", "--class", "AD", "--count", "2")
        )
        assert result.exit_code == 1
        assert (
            f"output folder {folder} is being written by another polypsynth process (pid {os.getpid()})"
            in (result.output)
        )
        assert not list(folder.glob("*.png"))
    result = CliRunner().invoke(
        main, _generate_args(server, tmp_path / "out", "--class", "AD", "--count", "2")
    )
    assert result.exit_code == 0, result.output  # the lock went with its holder
