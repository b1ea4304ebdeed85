"""`polypsynth serve` and `polypsynth generate`: the gRPC service and its client."""

from __future__ import annotations

import click

from polypsynth.cli.common import main, user_errors
from polypsynth.cli.sampling import backend_flags, request_options
from polypsynth.errors import PolypsynthError

# --- serve and generate ---------------------------------------------------------------------------


@main.command("serve")
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    metavar="NAME=BUNDLE",
    help="A model to serve (repeatable).",
)
@backend_flags
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Bind address (localhost unless told otherwise)."
)
@click.option(
    "--port", default=50051, show_default=True, type=click.IntRange(0, 65535), help="0: a free port."
)
@click.option(
    "--max-batch", default=32, show_default=True, type=click.IntRange(min=1), help="Images per backend batch."
)
@click.option(
    "--max-wait-ms",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Longest wait to fill a batch.",
)
@click.option(
    "--max-queued-images",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Per-model queue bound.",
)
@click.option(
    "--max-count",
    default=100_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images per request at most.",
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="Require 'authorization: Bearer <token>'."
)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Serve TLS with this PEM certificate."
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False), help="The PEM private key of --tls-cert."
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight requests get on shutdown.",
)
@click.option(
    "--stream-window",
    type=click.IntRange(min=1),
    help="Images a request may have computed beyond what its client has received (GenerateWithCredit, "
    "the polypsynth client) or the transport has taken (Generate) before the server waits for its "
    "client (backpressure). Default: two batches.",
)
@click.option(
    "--keepalive",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Seconds between the server's HTTP/2 pings on a connection with calls; a client that does not "
    "answer within --keepalive-timeout is dropped and its requests freed.",
)
@click.option(
    "--keepalive-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds a connection has to answer a keepalive ping before it is dropped.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    help="Expose Prometheus metrics at http://HOST:PORT/metrics (0: a free port, logged).",
)
@user_errors
def serve_command(
    models,
    backend,
    backend_options,
    host,
    port,
    max_batch,
    max_wait_ms,
    max_queued_images,
    max_count,
    token_file,
    tls_cert,
    tls_key,
    grace,
    stream_window,
    keepalive,
    keepalive_timeout,
    metrics_port,
):
    """Serve bundles over gRPC (SamplerService, health, reflection) with dynamic batching."""
    import logging

    from polypsynth.serve.server import SamplerServer, ServeError, ServerOptions, read_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    named = {}
    for item in models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ServeError(f"--model expects NAME=BUNDLE, got {item!r}")
        if name in named:
            raise ServeError(
                f"--model {name} is given twice ({named[name]} and {path}); each name serves one bundle"
            )
        named[name] = path
    options = ServerOptions(
        host=host,
        port=port,
        backend=backend,
        backend_options=backend_options,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queued_images=max_queued_images,
        max_count=max_count,
        token=read_token(token_file),
        tls_cert=tls_cert,
        tls_key=tls_key,
        grace_seconds=grace,
        stream_window=stream_window,
        keepalive_s=keepalive,
        keepalive_timeout_s=keepalive_timeout,
        metrics_port=metrics_port,
    )
    SamplerServer(named, options).start().serve_forever()


@main.command("generate")
@click.option(
    "--server",
    required=True,
    help="HOST:PORT; several, comma-separated (A:P,B:P), share one request's images between them; "
    "dns:///host:port balances whole requests over replicas (round_robin).",
)
@click.option("--model", required=True, help="Model name on the server.")
@request_options
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Writes OUT/<class>/ (resumable)."
)
@click.option(
    "--token-file", type=click.Path(dir_okay=False), help="A file holding the server's bearer token."
)
@click.option(
    "--tls-ca",
    type=click.Path(exists=True, dir_okay=False),
    help="The CA certificate (PEM) that signed a TLS server's certificate.",
)
@click.option(
    "--allow-plaintext-token",
    is_flag=True,
    help="Send the token without TLS to a non-loopback server (only on a network you trust).",
)
@click.option(
    "--retries",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Retries in a row, with exponential backoff, while the server is unavailable.",
)
@user_errors
def generate_command(server, model, request, out, token_file, tls_ca, allow_plaintext_token, retries):
    """Pull images from a polypsynth server into an image folder (re-running resumes)."""
    import shlex
    import sys
    from pathlib import Path

    import grpc
    from tqdm import tqdm

    from polypsynth.atomic import check_writable
    from polypsynth.serve.client import SamplerClient
    from polypsynth.serve.server import read_token
    from polypsynth.serve.to_folder import write_folder

    _check_request(request)
    servers = split_servers(server)
    class_name, count = request.draw.class_name, request.draw.count
    check_writable(Path(out) / class_name)  # before asking any server
    token = read_token(token_file)
    clients = {
        a: SamplerClient(a, token, tls_ca, allow_plaintext_token=allow_plaintext_token) for a in servers
    }
    again = shlex.join(["polypsynth", *sys.argv[1:]])  # the command that completes an unfinished folder
    try:
        with tqdm(total=count, desc=f"generate {class_name}", unit="img") as bar:
            bar.set_postfix_str("waiting for the first batch")
            started = []

            def progress(n: int) -> None:  # the rate counts from the first image, not from the request
                if not started:
                    started.append(True)
                    bar.reset(total=count)
                    bar.set_postfix_str("")
                bar.update(n)

            folder = write_folder(
                clients, out, model, request, progress=progress, retries=retries, complete_with=again
            )
    except grpc.RpcError as exc:
        raise PolypsynthError(f"{exc.code().name}: {exc.details()}") from exc
    finally:
        for client in clients.values():
            client.close()
    click.echo(f"{count} images in {folder}" + (f" from {len(clients)} servers" if len(clients) > 1 else ""))


def _check_request(request) -> None:
    """The request as given, checked before any server is asked: the settings given, and what to
    draw against the class asked for (the model's defaults, and its classes, are the server's)."""
    from polypsynth.sampling.request import RequestError, Settings

    try:
        request.resolve(Settings()).validate([request.draw.class_name])
    except RequestError as exc:
        raise PolypsynthError(f"--{exc.field.replace('class_name', 'class')}: {exc.message}") from exc


def split_servers(server: str) -> list[str]:
    """--server as a list of gRPC targets: a target with a scheme (dns:, ipv4:, unix:, ...) is one
    target even with commas; otherwise each comma-separated HOST:PORT is a server of its own."""
    scheme = server.split(":", 1)[0]
    if scheme in ("dns", "ipv4", "ipv6", "unix", "unix-abstract", "vsock"):
        return [server]
    if "://" in server:
        raise PolypsynthError(
            f"--server {server!r}: a gRPC server is HOST:PORT, without {scheme}:// (for TLS pass --tls-ca)"
        )
    servers = [s.strip() for s in server.split(",")]
    if not all(servers) or len(set(servers)) != len(servers):
        raise PolypsynthError(f"--server {server!r}: expected HOST:PORT or distinct HOST:PORT,HOST:PORT,...")
    return servers
