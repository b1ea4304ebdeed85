"""TLS with a certificate made here, the bearer token's transport rules, and message limits."""

import datetime
import ipaddress

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from polypsynth.cli import main
from polypsynth.errors import PolypsynthError
from polypsynth.serve._proto.polypsynth.v1 import sampler_pb2 as pb
from polypsynth.serve.client import SamplerClient, target_hosts
from polypsynth.serve.server import SamplerServer, ServeError, ServerOptions

STEPS = 2


def _certificate(subject, issuer, key, signer, ca, sans=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("polypsynth test CA", "polypsynth test CA", ca_key, ca_key, ca=True)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = _certificate("localhost", "polypsynth test CA", key, ca_key, ca=False, sans=sans)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder


def test_tls_with_a_token(tiny_bundle, pki):
    opts = ServerOptions(
        port=0,
        max_batch=4,
        token="s3cret",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
    )
    server = SamplerServer({"tiny": tiny_bundle}, opts).start()
    try:
        target = f"localhost:{server.port}"
        with SamplerClient(target, token="s3cret", tls_ca=str(pki / "ca.pem")) as c:
            (image,) = list(c.generate("tiny", "AD", 1, seed=4, steps=STEPS))
            assert image.seed == 4 and image.data.startswith(b"\x89PNG")
        with SamplerClient(target, token="wrong", tls_ca=str(pki / "ca.pem")) as c:
            with pytest.raises(grpc.RpcError) as err:
                c.list_models()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with SamplerClient(target) as c, pytest.raises(grpc.RpcError) as err:  # plaintext to TLS
            c.list_models()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=1)


def test_tls_needs_both_files(tiny_bundle, pki):
    with pytest.raises(ServeError, match="TLS needs both --tls-cert and --tls-key"):
        SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, tls_cert=str(pki / "server.pem")))


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        ("127.0.0.1:50051", ["127.0.0.1"]),
        ("localhost:1", ["localhost"]),
        ("[::1]:50051", ["::1"]),
        ("dns:///sampler.example:443", ["sampler.example"]),
        ("dns://8.8.8.8/sampler.example:443", ["sampler.example"]),
        ("ipv4:127.0.0.1:1,10.0.0.7:2", ["127.0.0.1", "10.0.0.7"]),
        ("unix:/run/polypsynth.sock", []),
    ],
)
def test_target_hosts(target, hosts):
    assert target_hosts(target) == hosts


def test_the_token_is_not_sent_in_plain_text_off_this_machine(pki):
    for target in ("10.0.0.7:50051", "dns:///sampler.example:443", "ipv4:127.0.0.1:1,10.0.0.7:2"):
        with pytest.raises(PolypsynthError, match="refusing to send the bearer token in plain text to"):
            SamplerClient(target, token="t")
    for target in ("127.0.0.1:1", "localhost:1", "[::1]:1", "unix:/tmp/s.sock"):
        SamplerClient(target, token="t").close()
    SamplerClient("10.0.0.7:50051", token="t", tls_ca=str(pki / "ca.pem")).close()
    SamplerClient("10.0.0.7:50051", token="t", allow_plaintext_token=True).close()
    SamplerClient("10.0.0.7:50051").close()  # no token, nothing to protect


def test_generate_command_refuses_a_plaintext_token(tmp_path):
    (tmp_path / "token").write_text("t\n")
    args = ["generate", "--server", "10.0.0.7:50051", "--model", "m", "--class", "AD"]
    args += ["--out", str(tmp_path / "o"), "--token-file", str(tmp_path / "token")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "refusing to send the bearer token in plain text to 10.0.0.7" in result.output
    assert "--allow-plaintext-token" in result.output and not (tmp_path / "o").exists()


def test_request_size_limits(tiny_bundle, caplog):
    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=4)).start()
    try:
        with SamplerClient(f"127.0.0.1:{server.port}") as c:
            with pytest.raises(grpc.RpcError) as err:
                list(c.generate("tiny", "AD", 1, steps=STEPS, request_id="x" * 200))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == "request_id: must be at most 128 printable characters, got 200"
            caplog.set_level("INFO", logger="polypsynth.serve")
            with pytest.raises(grpc.RpcError) as err:  # a forged log line is refused, not logged
                list(c.generate("tiny", "AD", 1, steps=STEPS, request_id="x\nrequest=forged"))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            lines = [r.getMessage() for r in caplog.records if "outcome=INVALID_ARGUMENT" in r.getMessage()]
            assert lines and not any("forged" in line or "xxxx" in line for line in lines)
            # A message past the server's receive limit (64 KiB) never reaches the service.
            request = pb.GenerateRequest(model="tiny", class_name="AD", count=1, request_id="x" * 70_000)
            with pytest.raises(grpc.RpcError) as err:
                list(c.stub.Generate(request))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert len(list(c.generate("tiny", "AD", 1, steps=STEPS, request_id="ok-1"))) == 1
    finally:
        server.stop(grace=1)


def test_tls_and_port_mistakes_are_named_on_the_server(tiny_bundle, pki, tmp_path):
    """A key that is not the certificate's, a file that is not PEM, a port in use: each one line
    naming the input (all three read "cannot bind 127.0.0.1:PORT" before)."""
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other.key").write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "cert.der").write_bytes(b"not a certificate")
    serve = ["serve", "--model", f"tiny={tiny_bundle}", "--port", "0"]
    mismatch = CliRunner().invoke(
        main, [*serve, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(tmp_path / "other.key")]
    )
    assert mismatch.exit_code == 1
    assert (
        f"--tls-key {tmp_path / 'other.key'} is not the private key of --tls-cert {pki / 'server.pem'}"
        in mismatch.output
    )
    garbage = CliRunner().invoke(
        main, [*serve, "--tls-cert", str(tmp_path / "cert.der"), "--tls-key", str(pki / "server.key")]
    )
    assert (
        garbage.exit_code == 1
        and f"--tls-cert {tmp_path / 'cert.der'} cannot be read as PEM" in garbage.output
    )
    first = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=2)).start()
    try:
        second = CliRunner().invoke(
            main, ["serve", "--model", f"tiny={tiny_bundle}", "--port", str(first.port)]
        )
        assert second.exit_code == 1
        assert (
            f"cannot bind 127.0.0.1:{first.port}: port {first.port} is already in use on 127.0.0.1 (another "
            "server?); choose another --port" in second.output
        )
        with SamplerClient(f"127.0.0.1:{first.port}") as c:  # the first server still has its port alone
            assert [m.name for m in c.list_models()] == ["tiny"]
    finally:
        first.stop(grace=1)


def test_tls_mistakes_are_named_on_the_client(tiny_bundle, pki, tmp_path):
    """A plaintext client against a TLS server said "Socket closed"; a TLS client against a
    plaintext one, or an http:// address, pointed elsewhere too."""
    tls = ServerOptions(
        port=0, max_batch=2, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")
    )
    plain = ServerOptions(port=0, max_batch=2)
    generate = ["generate", "--model", "tiny", "--class", "AD", "--count", "1", "--retries", "0"]
    for options, extra, said in (
        (tls, [], "speaks TLS: pass its CA certificate with --tls-ca"),
        (plain, ["--tls-ca", str(pki / "ca.pem")], "does not speak TLS: leave out --tls-ca"),
    ):
        server = SamplerServer({"tiny": tiny_bundle}, options).start()
        try:
            args = [*generate, "--server", f"localhost:{server.port}", "--out", str(tmp_path / "o"), *extra]
            result = CliRunner().invoke(main, args)
            assert (
                result.exit_code == 1
                and f"server localhost:{server.port}: UNAVAILABLE: the server on localhost:" in result.output
            )
            assert said in result.output, result.output
            assert not (tmp_path / "o").exists()
        finally:
            server.stop(grace=1)
    url = CliRunner().invoke(
        main, [*generate, "--server", "http://localhost:50051", "--out", str(tmp_path / "o")]
    )
    assert url.exit_code == 1
    assert (
        "--server 'http://localhost:50051': a gRPC server is HOST:PORT, without http:// (for TLS pass --tls-ca)"
        in url.output
    )


def test_a_wrong_token_is_refused_on_every_kind_of_call(tiny_bundle):
    """GenerateWithCredit (bidirectional, the call the client makes) and Generate (server
    streaming) are refused with a handler of their own kind, like the unary calls."""
    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=2, token="right")).start()
    try:
        with SamplerClient(f"127.0.0.1:{server.port}", token="wrong") as c:
            with pytest.raises(grpc.RpcError) as credit:
                list(c.generate("tiny", "AD", 1, steps=STEPS))
            plain = c.stub.Generate(
                pb.GenerateRequest(model="tiny", class_name="AD", count=1, steps=STEPS), metadata=c.metadata
            )
            with pytest.raises(grpc.RpcError) as streamed:
                list(plain)
        for err in (credit, streamed):
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (
                err.value.details() == "missing or invalid bearer token (metadata authorization: Bearer ...)"
            )
        with SamplerClient(f"127.0.0.1:{server.port}", token="right") as c:
            assert len(list(c.generate("tiny", "AD", 1, steps=STEPS))) == 1
    finally:
        server.stop(grace=1)


def test_two_signals_stop_the_server_once(tiny_bundle):
    import threading

    server = SamplerServer({"tiny": tiny_bundle}, ServerOptions(port=0, max_batch=2)).start()
    batcher = server.models["tiny"].batcher
    closes = []
    original = batcher.close
    batcher.close = lambda: (closes.append(1), original())[1]
    threads = [threading.Thread(target=server.stop, kwargs={"grace": 1}) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads) and closes == [1]
    server.stop()  # and a third call later returns at once
