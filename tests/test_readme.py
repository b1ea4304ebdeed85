"""Every command in README.md's ```bash blocks runs here, in README order, so the README cannot rot.

The commands are read from the README, not copied. What the test changes, and only this:
- sizes: options appended to scale data, steps and counts down (click keeps the last value of a
  repeated option), and the step names the README derives from its configs (checked to be what the
  configs give) mapped to those of the scaled runs;
- places: /data and /models point at stand-ins built here in the same layouts and formats
  (SUN, CVC-ClinicHDclassif, CVC-ClinicHDsegment from phantom images; a diffusers folder of the
  tiny model); port 50051 becomes a free port, and the hosts gpu0 and gpu1 the one local server
  under two names (127.0.0.1, localhost);
- GPU-only options (--tensorrt, --provider cuda, --device cuda, --optimize cuda, --cuda-graphs,
  --multi_gpu) are dropped where torch sees no GPU.
`make demo` runs the demo, which tests/demo runs in its quick profile; here its Makefile recipe is
checked. `tensorboard` is checked through TensorBoard's own event reader on the same folder.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import torch
from click.testing import CliRunner

from polypsynth.cli import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
ON_GPU = torch.cuda.is_available()

TINY_STEPS = ["stage.autoencoder.steps=2", "stage.pretrain.steps=2", "stage.finetune.steps=2"]
SD15_STEPS = [
    "model.resolution=64",
    "train.mixed_precision=no",
    "train.num_workers=0",
    *[
        f"stage.{s}.{k}"
        for s in ("pretrain", "finetune")
        for k in ("steps=2", "batch_size=2", "gradient_accumulation=1")
    ],
    "stage.pretrain.lr_warmup_steps=0",
]
SCALE = {
    "data phantom": [
        "--stage1",
        "24",
        "--train",
        "60",  # the positive control's two folds need 10 NON_AD images each: a third of 60 are NON_AD
        "--test",
        "30",  # a verdict needs 10 test images of each class: a third are NON_AD
        "--unlabelled",
        "8",
        "--workers",
        "1",
    ],
    "sample": ["--count", "10", "--steps", "2", "--batch-size", "10"],
    "generate": ["--count", "10", "--steps", "2"],
    "evaluate": ["--classify-seeds", "1", "--epochs", "1", "--image-size", "32"],
}
STEP_NAMES = {"step-001100": "step-000006", "step-028000": "step-000004"}  # README name -> scaled run


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line)[0].strip()  # a trailing comment
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _final_step(config: str) -> int:
    from polypsynth.config import load_config

    cfg = load_config(ROOT / "configs" / config)
    stages = [cfg.stage.autoencoder, cfg.stage.pretrain, cfg.stage.finetune]
    return sum(s.steps for s in stages if getattr(s, "enabled", True))


def test_readme_step_names_are_what_the_configs_give():
    assert f"step-{_final_step('phantom-tiny.yaml'):06d}" == "step-001100"
    assert f"step-{_final_step('sd15-polyp.yaml'):06d}" == "step-028000"
    text = README.read_text()
    assert "step-001100" in text and "step-028000" in text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stand_ins(tmp: Path) -> None:
    """/data and /models as the README expects them, in the real layouts and formats."""
    from PIL import Image

    from polypsynth.data.phantom import PhantomPlan, generate_phantom
    from polypsynth.models import build_tiny, save_components

    src = tmp / "phantom-src"
    generate_phantom(
        src,
        seed=5,
        plan=PhantomPlan(size=64, stage1=20, train=60, test=30, unlabelled=6),
        workers=1,
        progress=False,
    )
    data = tmp / "data"
    for label, folder in (("polyp", "positive"), ("non_polyp", "negative")):  # SUN as distributed
        for i, p in enumerate(sorted((src / "stage1" / label).glob("*.png"))):
            out = data / "SUN" / f"case1-{folder}" / f"case{i // 5}" / f"frame{i % 5:03d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(p).convert("RGB").save(out)
    cvc = data / "CVC-ClinicHDclassif"
    for split, folder in (("train", "train"), ("test", "validation")):
        rows = ["image,histology"]
        for label, histology in (("AD", "adenoma"), ("NON_AD", "hyperplastic")):
            for p in sorted((src / "classif" / split / label).glob("*.png")):
                (cvc / folder / "images").mkdir(parents=True, exist_ok=True)
                shutil.copy(p, cvc / folder / "images" / p.name.replace(split, f"{split}-{label}"))
                rows.append(f"{p.name.replace(split, f'{split}-{label}')},{histology}")
        (cvc / folder / "labels.csv").write_text("\n".join(rows) + "\n")
    seg = data / "CVC-ClinicHDsegment"
    for i, p in enumerate(sorted((src / "unlabelled" / "polyp").glob("*.png"))):
        for sub in ("images", "masks"):
            (seg / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, seg / "images" / f"{i}.png")
        Image.new("L", (64, 64), 255).save(seg / "masks" / f"{i}.png")
    models = tmp / "models"
    save_components(build_tiny(resolution=64, seed=3), models / "stable-diffusion-v1-5")
    configs = tmp / "configs"
    configs.mkdir()
    shutil.copy(ROOT / "configs" / "phantom-tiny.yaml", configs)
    text = (ROOT / "configs" / "sd15-polyp.yaml").read_text()
    (configs / "sd15-polyp.yaml").write_text(
        text.replace(" /data/", f" {data}/").replace(" /models/", f" {models}/")
    )


class Runner:
    """Runs README commands in a scratch folder; keeps the server a `serve` command starts."""

    def __init__(self, tmp: Path):
        self.tmp, self.port, self.server = tmp, _free_port(), None

    def rewrite(self, argv: list[str]) -> list[str]:
        out = []
        for a in argv:
            a = a.replace("/data/", f"{self.tmp}/data/").replace("/models/", f"{self.tmp}/models/")
            a = f"{ROOT}/{a}" if a.startswith("docs/") else a  # files the repository ships
            a = a.replace("50051", str(self.port))
            a = a.replace("gpu0:", "127.0.0.1:").replace("gpu1:", "localhost:")
            for readme_name, scaled in STEP_NAMES.items():
                a = a.replace(readme_name, scaled)
            out.append(a)
        if not ON_GPU:
            out = [a for a in out if a not in ("--tensorrt", "--multi_gpu", "--cuda-graphs")]
            for option in ("--provider", "--device", "--optimize"):
                while option in out and out[out.index(option) + 1] == "cuda":
                    i = out.index(option)
                    del out[i : i + 2]
        return out

    def polypsynth(self, args: list[str]) -> None:
        key = " ".join(args[:2]) if args[0] == "data" else args[0]
        if args[0] == "train":
            steps = TINY_STEPS if "phantom-tiny" in args[args.index("--config") + 1] else SD15_STEPS
            args = [*args, *[x for s in steps for x in ("--set", s)]]
        if args[0] == "serve":
            self.serve(args)
            return
        result = CliRunner().invoke(main, [*args, *SCALE.get(key, [])], catch_exceptions=False)
        assert result.exit_code == 0, f"polypsynth {shlex.join(args)}\n{result.output}"
        self.check(args, result.output)

    def check(self, args: list[str], output: str) -> None:
        """What each command must have produced, beyond exiting 0."""
        if args[0] == "train":
            out = Path(args[args.index("--out") + 1])
            assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] in STEP_NAMES.values()
        elif args[0] in ("sample", "generate"):
            out = Path(args[args.index("--out") + 1]) / args[args.index("--class") + 1]
            assert len(list(out.glob("*.png"))) == 10
        elif args[0] == "evaluate":
            results = json.loads((Path(args[args.index("--out") + 1]) / "results.json").read_text())
            assert set(results["fidelity"]) == {
                p.name for p in Path(args[args.index("--synthetic") + 1]).iterdir()
            } | {results["control"]["name"]}
            assert ("--reconstructions" in args) == (results["fidelity_reconstructed"] is not None)
        elif args[0] == "reconstruct":
            out = Path(args[args.index("--out") + 1])
            assert all(any((out / c).glob("*.png")) for c in ("AD", "NON_AD"))
        elif args[0] == "export":
            assert (Path(args[args.index("--out") + 1]) / "manifest.json").is_file()
        elif args[:2] == ["data", "inspect"]:
            assert "AD" in output
        elif args[0] == "judge" and "--json" in args:
            assert json.loads(output)["naive_pick"] == "8k"
        elif args[0] == "judge":
            assert ("detected with 80% power" if "--plan" in args else "verdict: Cannot decide: ") in output

    def serve(self, args: list[str]) -> None:
        assert self.server is None, "the README starts one server"
        self.server = subprocess.Popen(
            [sys.executable, "-m", "polypsynth", *args],
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.time() + 120
        with grpc.insecure_channel(f"localhost:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.server.poll() is None, self.server.stdout.read()
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    pass
                assert time.time() < deadline, "the server did not become healthy in 120 s"
                time.sleep(0.5)

    def stop(self) -> None:
        if self.server is not None:
            self.server.send_signal(signal.SIGTERM)
            output = self.server.communicate(timeout=60)[0]
            assert self.server.returncode == 0, output
            self.server = None

    def grpcurl(self, argv: list[str]) -> None:
        """What grpcurl does with reflection: list services, or build the request from JSON
        with the served descriptors and call the method."""
        from google.protobuf import descriptor_pool, json_format, message_factory
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        assert self.server is not None, "grpcurl needs the server the README starts"
        positional = [a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and argv[i - 1] != "-d"]
        address, method = positional
        with grpc.insecure_channel(address) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            if method == "list":  # grpcurl ADDRESS list
                assert {"polypsynth.v1.SamplerService", "grpc.health.v1.Health"} <= set(db.get_services())
                return
            pool = descriptor_pool.DescriptorPool(db)
            service, name = method.rsplit("/", 1)
            desc = pool.FindServiceByName(service).FindMethodByName(name)
            request = json_format.Parse(
                argv[argv.index("-d") + 1], message_factory.GetMessageClass(desc.input_type)()
            )
            reply_class = message_factory.GetMessageClass(desc.output_type)
            kind = channel.unary_stream if desc.server_streaming else channel.unary_unary
            call = kind(
                f"/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply_class.FromString,
            )
            replies = (
                list(call(request, timeout=120)) if desc.server_streaming else [call(request, timeout=120)]
            )
        assert replies
        if name == "Generate":
            assert len(replies) == request.count and all(r.data for r in replies)
        if name == "Check":
            assert replies[0].status == 1  # SERVING


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # the default feature cache (~/.cache) stays in here
    _stand_ins(tmp_path)
    runner = Runner(tmp_path)
    ran = []
    try:
        for line in readme_commands():
            argv = runner.rewrite(shlex.split(line))
            tool = argv[0]
            if tool == "make":
                recipe = subprocess.run(
                    ["make", "-n", "-C", str(ROOT), argv[1]], capture_output=True, text=True
                )
                assert recipe.returncode == 0, recipe.stderr
                expected = {
                    "demo": "polypsynth demo --out runs/demo",
                    "test": "pytest",
                    "gpu-wheels": "pip download",
                    "gpu-check": "benchmarks/gpu_check.py",
                }[argv[1]]
                assert expected in recipe.stdout
            elif tool == "polypsynth":
                runner.polypsynth(argv[1:])
            elif tool == "grpcurl":
                runner.grpcurl(argv)
            elif tool == "tensorboard":
                from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

                logs = EventMultiplexer().AddRunsFromDirectory(argv[argv.index("--logdir") + 1]).Reload()
                tags = {t for run in logs.Runs().values() for t in run["scalars"]}
                assert any(t.endswith("/loss") for t in tags), tags
            elif tool == "accelerate":
                launch = [str(Path(sys.executable).parent / "accelerate"), "launch"]
                args = argv[2:] if ON_GPU else ["--cpu", *[a for a in argv[2:] if a != "--multi_gpu"]]
                if not ON_GPU:
                    args[args.index("--num_processes") + 1] = "1"
                args += [x for s in SD15_STEPS for x in ("--set", s)]
                done = subprocess.run(
                    [
                        *launch,
                        "--num_machines",
                        "1",
                        "--mixed_precision",
                        "no",
                        "--dynamo_backend",
                        "no",
                        *args,
                    ],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                )
                assert done.returncode == 0, done.stderr[-3000:]
                assert (tmp_path / "runs" / "sd15-4gpu" / "checkpoints" / "step-000004").is_dir()
            else:
                pytest.fail(f"README command with no runner here: {line}")
            ran.append(tool)
    finally:
        runner.stop()
    assert ran.count("polypsynth") >= 15 and "grpcurl" in ran and "accelerate" in ran


def test_make_demo_has_a_quick_profile():
    """`make demo PROFILE=quick`, as the README says, runs the quick profile into its own folder."""
    assert "`make demo PROFILE=quick`" in README.read_text()
    for extra, expected in (
        ([], "polypsynth demo --out runs/demo --profile full"),
        (["PROFILE=quick"], "polypsynth demo --out runs/demo-quick --profile quick"),
    ):
        recipe = subprocess.run(
            ["make", "-n", "-C", str(ROOT), "demo", *extra], capture_output=True, text=True
        )
        assert recipe.returncode == 0 and expected in recipe.stdout, recipe.stdout + recipe.stderr
