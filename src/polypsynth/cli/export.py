"""`polypsynth export`: a checkpoint to an ONNX bundle (and TensorRT engines)."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, user_errors

# --- export ---------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


@main.command("export")
@click.option(
    "--checkpoint", required=True, type=click.Path(exists=True, file_okay=False), help="Checkpoint folder."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Bundle folder to write.")
@click.option(
    "--dtype",
    type=click.Choice(["fp32", "fp16"]),
    default="fp32",
    show_default=True,
    help="Weights and inputs of the graphs (fp16 for GPUs).",
)
@click.option("--opset", default=17, show_default=True, help="ONNX opset, 14 (attention) up to 23.")
@click.option(
    "--exporter",
    type=click.Choice(["torchscript", "dynamo"]),
    default="torchscript",
    show_default=True,
    help="torch.onnx exporter: the TorchScript tracer or torch.export (dynamo).",
)
@click.option(
    "--optimize",
    type=click.Choice(["none", "cuda"]),
    help="cuda: fuse attention, GroupNorm and NHWC convolutions with ONNX Runtime's transformer optimizer "
    "(the bundle then needs the CUDA provider); none: the portable plain graph  [default: cuda for an fp16 "
    "export where onnxruntime has the CUDA provider, else none]",
)
@click.option("--tensorrt", is_flag=True, help="Also build fp16 TensorRT engines (GPU machine).")
@click.option(
    "--batch-sizes", default="1,8,32", show_default=True, help="Image batch sizes the engines cover."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle.")
@user_errors
def export_command(checkpoint, out, dtype, opset, exporter, optimize, tensorrt, batch_sizes, overwrite):
    """Export a checkpoint to an ONNX bundle (and TensorRT engines), checked against PyTorch."""
    from polypsynth.export.bundle import export_bundle

    manifest = export_bundle(
        checkpoint,
        out,
        dtype=dtype,
        opset=opset,
        tensorrt=tensorrt,
        batch_sizes=_int_list(batch_sizes),
        exporter=exporter,
        overwrite=overwrite,
        optimize=optimize,
    )
    for name, fused in (manifest.fused_nodes or {}).items():
        click.echo(f"{name}: fused for CUDA: " + ", ".join(f"{n} {op}" for op, n in fused.items()))
    for name, fig in manifest.parity.items():
        click.echo(f"{name}: parity max_abs={fig['max_abs']:.2e} max_rel={fig['max_rel']:.2e}")
    click.echo(f"bundle written to {out} (classes: {', '.join(manifest.classes)})")
