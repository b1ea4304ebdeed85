"""Two CPU processes under torchrun form one gloo process group and train every stage as one job,
then resume."""

import json
import os
import socket
import subprocess
import sys

import pytest

from polypsynth.train.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    cmd += ["-m", "polypsynth", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def test_two_processes_train_every_stage_and_resume(make_config, phantom32, tmp_path):
    stage1 = [{"kind": "phantom", "path": str(phantom32), "subset": "stage1"}]
    config = make_config(
        stage__autoencoder={"steps": 3, "learning_rate": 1e-3, "batch_size": 4, "data": stage1},
        stage__pretrain__steps=2,
        stage__pretrain__batch_size=4,
        stage__finetune__steps=4,
        stage__finetune__batch_size=4,
        stage__finetune__checkpoint_every=2,
    )
    out = tmp_path / "run"
    args = ["--config", str(config), "--out", str(out)]
    first = torchrun(*args, "--set", "stage.finetune.steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    # The main process alone reports (and writes); the other trained beside it.
    assert first.stdout.count("autoencoder: 3 steps") == 1, first.stdout
    assert first.stdout.count("finetune: 2 steps") == 1
    second = torchrun(*args, "--resume", "latest")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("finetune: 2 steps") == 1 and "pretrain" not in second.stdout

    checkpoints = list_checkpoints(out)
    assert [p.name for p in checkpoints] == ["step-000003", "step-000005", "step-000007", "step-000009"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [p.name for p in checkpoints]
    states = [json.loads((p / "training_state" / "state.json").read_text()) for p in checkpoints]
    assert [s["stage"] for s in states] == ["autoencoder", "pretrain", "finetune", "finetune"]
    assert {s["processes"] for s in states} == {2}  # one process group of two
    # Every process fitted the latent scale after the autoencoder and trained with rank 0's.
    scales = {json.loads((p / "vae" / "config.json").read_text())["scaling_factor"] for p in checkpoints}
    assert len(scales) == 1 and scales != {1.0}


def test_the_fp16_grad_scaler_is_saved_and_restored(tiny_checkpoint, tmp_path):
    import torch

    from polypsynth.models import load_components
    from polypsynth.train.checkpoint import (
        CheckpointError,
        TrainState,
        load_training_state,
        save_checkpoint,
    )

    def parts():
        layer = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        return layer, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    layer, optimizer, schedule = parts()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(layer(torch.ones(1, 3)).sum()).backward()
    scaler.step(optimizer)
    scaler.update(96.0)  # a scale no fresh scaler has
    components = load_components(tiny_checkpoint)
    state = TrainState("finetune", 1, 1, "hash")
    with_scaler = save_checkpoint(
        tmp_path / "a", components, state, layer.state_dict(), optimizer, lr_scheduler=schedule, scaler=scaler
    )
    without = save_checkpoint(
        tmp_path / "b", components, state, layer.state_dict(), optimizer, lr_scheduler=schedule
    )

    fresh = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    load_training_state(with_scaler, *parts(), scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict() and fresh.get_scale() == 96.0
    with pytest.raises(CheckpointError, match=r"has no fp16 GradScaler state \(training_state/scaler.pt\)"):
        load_training_state(without, *parts(), scaler=fresh)
    load_training_state(without, *parts())  # without fp16 nothing is expected
