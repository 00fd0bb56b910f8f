"""TLS to the broker: devices and workers verify Mosquitto's certificate (a real TLS listener)."""

from __future__ import annotations

import datetime
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from msec.sdk import Device, Endpoint
from msec.testing.services import ServiceUnavailable
from msec.transport.broker import free_port, wait_for_port
from msec.transport.mqtt import MqttSubscriber, connect

pytestmark = pytest.mark.integration


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_ca(directory: Path, name: str) -> tuple[Path, x509.Certificate,
                                                    ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = _certificate(name, key, subject, key, ca=True)
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A Mosquitto with only a TLS listener; yields (port, our CA file, a foreign CA file)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise ServiceUnavailable("mosquitto not installed")
    ca_path, ca_cert, ca_key = _write_ca(tmp_path, "msec-test-ca")
    other_ca, _, _ = _write_ca(tmp_path, "someone-else")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca_cert.subject, ca_key, ca=False)
    (tmp_path / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    port = free_port()
    config = tmp_path / "tls.conf"
    config.write_text(
        f"user root\nallow_anonymous true\nlistener {port} 127.0.0.1\n"
        f"cafile {ca_path}\ncertfile {tmp_path / 'server.pem'}\n"
        f"keyfile {tmp_path / 'server.key'}\n"
    )
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port, 10)
        yield port, ca_path, other_ca
    finally:
        process.terminate()
        process.wait(10)


def test_device_and_worker_talk_tls_and_verify_the_broker(tls_broker) -> None:  # type: ignore[no-untyped-def]
    port, ca_path, _ = tls_broker
    subscriber = MqttSubscriber("127.0.0.1", port, ["msec/#"], client_id="tls-worker",
                                persistent=False, tls_ca=str(ca_path))
    subscriber.start()
    try:
        device, _ = Device.create("tls-dev", "environment_station",
                                  endpoint=Endpoint("127.0.0.1", port, mqtt_tls_ca=str(ca_path)))
        device.publish({"environment/temperature": 19.0})
        device.close()
        deadline = time.monotonic() + 10
        received = []
        while not received and time.monotonic() < deadline:
            received = subscriber.take(10, 0.2)
        assert [m.topic for m in received] == ["msec/default/tls-dev/environment/temperature"]
        subscriber.ack(received)
    finally:
        subscriber.stop()


def test_a_broker_signed_by_another_ca_is_refused(tls_broker) -> None:  # type: ignore[no-untyped-def]
    port, _, other_ca = tls_broker
    with pytest.raises(ConnectionError):
        connect("127.0.0.1", port, tls_ca=str(other_ca), timeout=5)


def test_plaintext_to_a_tls_listener_fails(tls_broker) -> None:  # type: ignore[no-untyped-def]
    port, _, _ = tls_broker
    with pytest.raises((ConnectionError, TimeoutError)):
        connect("127.0.0.1", port, timeout=3)
