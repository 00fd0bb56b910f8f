"""The ingest pipeline through real SQLite storage: every rejection reason, and good data kept."""

from __future__ import annotations

import time
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msec.core.errors import RejectReason
from msec.crypto import cose
from msec.crypto.envelope import MAX_ENVELOPE_BYTES, encode_payload
from msec.ingest import REPLAY_WINDOW, Incoming, Ingestor
from msec.ingest.pipeline import RETRY_GRACE_S
from msec.platform import Platform, Settings
from msec.sdk import Device

KIND = "environment_station"
GOOD = [("environment", "temperature", 18.5)]


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    p = Platform.open(Settings.load(None, data_dir=tmp_path))
    yield p
    p.close()


@pytest.fixture
def device(platform: Platform) -> Device:
    return platform.add_device("llamas-test", KIND)


def topic(device: Device, rows=GOOD) -> str:
    return device.topic(rows)


def process_one(
    platform: Platform, data: bytes, topic_name: str | None = None, redelivered: bool = False
):
    return platform.ingestor.process([Incoming(data, topic_name, "test", redelivered)])[0]


def reasons(platform: Platform) -> list[str]:
    return [e.reason for e in platform.events.query(limit=1000)]


def test_good_reading_is_stored_with_unit_and_latest(platform: Platform, device: Device) -> None:
    outcome = process_one(platform, device.seal(GOOD), topic(device))
    assert outcome.ok and outcome.stored == 1
    latest = platform.twin.latest("llamas-test", "environment", "temperature")
    assert latest is not None and latest.value == 18.5 and latest.unit == "°C"
    assert reasons(platform) == []


def test_batch_envelope_and_hmac_and_encrypted_devices(platform: Platform) -> None:
    mac = platform.add_device("mac-dev", KIND, alg="HMAC256")
    enc = platform.add_device("enc-dev", KIND, encrypt=True)
    rows = [
        ("environment", "temperature", 20.0),
        ("environment", "humidity", 55.0),
        ("health", "battery", 97.0),
    ]
    for d in (mac, enc):
        assert process_one(platform, d.seal(rows), d.topic(rows)).stored == 3
    assert platform.twin.provider("enc-dev").battery == 97.0


def later(platform: Platform, seconds: float) -> Ingestor:
    """An ingestor of the same platform whose clock is ``seconds`` ahead."""
    return Ingestor(
        platform.registry, platform.twin, platform.events, clock=lambda: time.time() + seconds
    )


def test_replays_are_refused_and_logged(platform: Platform, device: Device) -> None:
    data = device.seal(GOOD)
    assert process_one(platform, data, topic(device)).ok
    again = later(platform, RETRY_GRACE_S + 1).process([Incoming(data, topic(device))])[0]
    assert again.rejected is not None and again.rejected.reason is RejectReason.REPLAY
    assert platform.twin.count_readings("llamas-test") == 1
    assert reasons(platform) == ["replay"]


def test_a_quick_retransmission_is_a_silent_duplicate(platform: Platform, device: Device) -> None:
    data = device.seal(GOOD)
    assert process_one(platform, data, topic(device)).ok
    again = later(platform, RETRY_GRACE_S - 5).process([Incoming(data, topic(device))])[0]
    assert again.ok and again.stored == 0 and again.duplicates == 1
    assert reasons(platform) == []


def test_broker_redelivery_is_idempotent_and_silent(platform: Platform, device: Device) -> None:
    data = device.seal(GOOD)
    process_one(platform, data, topic(device))
    outcome = process_one(platform, data, topic(device), redelivered=True)
    assert outcome.ok and outcome.stored == 0 and outcome.duplicates == 1
    assert reasons(platform) == []


def test_old_sequence_outside_the_window_is_a_replay(platform: Platform, device: Device) -> None:
    old = device.seal(GOOD)
    device._next_seq += REPLAY_WINDOW + 10
    assert process_one(platform, device.seal(GOOD), topic(device)).ok
    outcome = process_one(platform, old, topic(device))
    assert outcome.rejected.reason is RejectReason.REPLAY


def test_same_envelope_twice_in_one_batch_is_stored_once(
    platform: Platform, device: Device
) -> None:
    data = device.seal(GOOD)
    first, second = platform.ingestor.process(
        [Incoming(data, topic(device)), Incoming(data, topic(device))]
    )
    assert first.ok and first.stored == 1
    assert second.ok and second.stored == 0 and second.duplicates == 1
    assert platform.twin.count_readings() == 1


def test_each_rejection_reason(platform: Platform, device: Device) -> None:
    stranger, _ = Device.create("stranger", KIND)
    impostor, _ = Device.create("llamas-test", KIND)  # same name, other key
    outer = bytearray(device.seal(GOOD))
    outer[-1] ^= 0xFF
    cases = {
        "unknown_device": (stranger.seal(GOOD), stranger.topic(GOOD)),
        "bad_signature": (impostor.seal(GOOD), topic(device)),
        "bad_signature ": (bytes(outer), topic(device)),
        "malformed": (b"\x00garbage", topic(device)),
        "oversized": (b"\x00" * (MAX_ENVELOPE_BYTES + 1), topic(device)),
        "out_of_range": (
            device.seal([("environment", "temperature", 900.0)]),
            "msec/default/llamas-test/environment/temperature",
        ),
        "schema": (
            device.seal([("environment", "temperature", "hot")]),
            "msec/default/llamas-test/environment/temperature",
        ),
        "schema ": (device.seal([("kitchen", "oven", 1.0)]), "msec/default/llamas-test/_batch"),
        "bad_timestamp": (device.seal(GOOD, at=time.time() + 3600), topic(device)),
        "topic_mismatch": (device.seal(GOOD), "msec/default/other-device/environment/temperature"),
        "topic_mismatch ": (device.seal(GOOD), "msec/default/llamas-test/environment/noise"),
    }
    for expected, (data, topic_name) in cases.items():
        outcome = process_one(platform, data, topic_name)
        assert outcome.rejected is not None, expected
        assert outcome.rejected.reason.value == expected.strip(), (expected, outcome)
    assert sorted(set(reasons(platform))) == sorted({k.strip() for k in cases})
    assert platform.twin.count_readings() == 0


def test_revoked_device_is_refused(platform: Platform, device: Device) -> None:
    platform.registry.revoke("llamas-test")
    platform.ingestor._devices.clear()  # the cache would notice within its TTL
    outcome = process_one(platform, device.seal(GOOD), topic(device))
    assert outcome.rejected.reason is RejectReason.REVOKED_DEVICE


class Counting:
    """The platform's registry, counting the queries the ingestor makes."""

    def __init__(self, registry) -> None:
        self.registry, self.gets, self.versions = registry, 0, 0

    def get(self, name: str):
        self.gets += 1
        return self.registry.get(name)

    def version(self) -> tuple[int, int]:
        self.versions += 1
        return self.registry.version()


def test_cached_devices_are_kept_until_the_registry_changes(
    platform: Platform, device: Device
) -> None:
    now = [time.time()]
    registry = Counting(platform.registry)
    ingestor = Ingestor(registry, platform.twin, platform.events, clock=lambda: now[0])
    other = platform.add_device("llamas-other", KIND)

    def send(d: Device) -> RejectReason | None:
        outcome = ingestor.process([Incoming(d.seal(GOOD), d.topic(GOOD), "test")])[0]
        return None if outcome.rejected is None else outcome.rejected.reason

    for _ in range(20):  # a minute of messages: the records are read once
        assert send(device) is None and send(other) is None
        now[0] += 3.0
    assert registry.gets == 2
    assert registry.versions == 20  # at most once a second
    # A revocation is seen at the next check (within a second), not after a TTL.
    platform.registry.revoke("llamas-test")
    now[0] += 1.0
    assert send(device) is RejectReason.REVOKED_DEVICE
    assert send(other) is None  # re-read once, still good
    # So is a device registered after its first message was refused as unknown.
    late, record = Device.create("llamas-late", KIND, tenant=platform.settings.tenant)
    assert send(late) is RejectReason.UNKNOWN_DEVICE
    platform.registry.add(record)
    platform.twin.ensure_provider("llamas-late", kind=KIND, tenant=record.tenant)
    assert send(late) is RejectReason.UNKNOWN_DEVICE  # the same second: still cached
    now[0] += 1.0
    assert send(late) is None
    assert platform.registry.version() == (3, 1)


def test_plaintext_from_an_encrypting_device_is_refused(platform: Platform) -> None:
    enc = platform.add_device("enc-only", KIND, encrypt=True)
    enc.enc_key = None  # a compromised gateway downgrading to plaintext
    outcome = process_one(platform, enc.seal(GOOD), enc.topic(GOOD))
    assert outcome.rejected.reason is RejectReason.DECRYPT_FAILED


def test_bad_messages_do_not_disturb_good_ones_in_the_same_batch(
    platform: Platform, device: Device
) -> None:
    batch = []
    for i in range(50):
        batch.append(
            Incoming(device.seal([("environment", "temperature", 10.0 + i)]), topic(device))
        )
        batch.append(Incoming(b"\xd2\x84" + bytes([i]), topic(device)))
    outcomes = platform.ingestor.process(batch)
    assert sum(o.stored for o in outcomes) == 50
    assert sum(1 for o in outcomes if not o.ok) == 50
    assert platform.twin.count_readings("llamas-test") == 50


def test_signed_payload_naming_another_device_is_refused(
    platform: Platform, device: Device
) -> None:
    payload = encode_payload("someone-else", 1, time.time(), GOOD)
    data = cose.sign1(payload, kid="llamas-test", signing_key=device.secret)
    assert process_one(platform, data, topic(device)).rejected.reason is RejectReason.MALFORMED


_HYPO: dict[int, Device] = {}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.lists(st.integers(), max_size=3),
    )
)
def test_wrong_types_are_refused_never_crash(platform: Platform, value: object) -> None:
    if id(platform) not in _HYPO:
        _HYPO[id(platform)] = platform.add_device("hypo", KIND)
    dev = _HYPO[id(platform)]
    payload = cbor2.dumps(
        {
            "d": "hypo",
            "q": dev._take(1),
            "t": time.time(),
            "r": [["environment", "temperature", value]],
        }
    )
    data = cose.sign1(payload, kid="hypo", signing_key=dev.secret)
    outcome = process_one(platform, data, "msec/default/hypo/_batch")
    if outcome.ok:
        assert isinstance(value, int | float) and not isinstance(value, bool)
        assert -40 <= value <= 60
    else:
        assert outcome.rejected.reason in (RejectReason.SCHEMA, RejectReason.OUT_OF_RANGE)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_garbage_bytes_become_malformed_events(platform: Platform, data: bytes) -> None:
    outcome = process_one(platform, data, "msec/default/x/_batch")
    assert outcome.rejected is not None
    assert outcome.rejected.reason in (RejectReason.MALFORMED, RejectReason.UNKNOWN_DEVICE)


def test_truncated_envelopes_are_refused(platform: Platform, device: Device) -> None:
    data = device.seal(GOOD)
    for cut in range(len(data)):
        outcome = process_one(platform, data[:cut], topic(device))
        assert outcome.rejected is not None
    assert platform.twin.count_readings() == 0
