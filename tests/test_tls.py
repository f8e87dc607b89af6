"""`serve --ssl-certfile/--ssl-keyfile`: HTTPS and WSS from the bridge itself
(when there is no proxy to end TLS), and a certificate that cannot be used
refused in one line."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys

import anyio
import httpx
import msgspec
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bridge.testing import free_port, stop_process

pytestmark = pytest.mark.anyio


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _serve(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--data-dir", str(tmp_path / "d"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def test_https_and_wss_with_the_given_certificate(tmp_path):
    cert, key = _self_signed(tmp_path)
    port = free_port()
    process = _serve(tmp_path, "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with httpx.AsyncClient(verify=trust) as http:
            async def healthy() -> bool:
                try:
                    return (await http.get(f"https://127.0.0.1:{port}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            with anyio.fail_after(30):
                while not await healthy():
                    if process.poll() is not None:
                        pytest.fail(process.stderr.read().decode())
                    await anyio.sleep(0.05)
        async with websockets.connect(f"wss://127.0.0.1:{port}/sync", ssl=trust) as ws:
            await ws.send(msgspec.msgpack.encode({"t": "hello", "v": [1], "peer": "tls", "caps": []}))
            assert msgspec.msgpack.decode(await ws.recv())["t"] == "welcome"
        async with httpx.AsyncClient() as plain:  # no TLS: nothing answers in plain HTTP
            with pytest.raises(httpx.TransportError):
                await plain.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        stop_process(process)


@pytest.mark.parametrize("which", ["missing key", "wrong key", "no such file"])
def test_a_certificate_that_cannot_be_used_is_one_line_and_status_2(tmp_path, which):
    cert, key = _self_signed(tmp_path)
    args = {"missing key": ["--ssl-certfile", str(cert)],
            "wrong key": ["--ssl-certfile", str(cert), "--ssl-keyfile", str(tmp_path / "other.pem")],
            "no such file": ["--ssl-certfile", str(tmp_path / "nope.pem"), "--ssl-keyfile", str(key)]}[which]
    if which == "wrong key":
        (tmp_path / "other.pem").write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "serve", "--port", "0", "--data-dir",
                           str(tmp_path / "d"), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--ssl" in done.stderr or "cannot serve TLS" in done.stderr
