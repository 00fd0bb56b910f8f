"""Envelope payload decoding: shape, names, values, times."""

from __future__ import annotations

import math

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msec.core.errors import Rejected, RejectReason
from msec.crypto.envelope import MAX_READINGS, decode_payload, encode_payload


def test_round_trip_assigns_consecutive_sequence_numbers() -> None:
    data = encode_payload(
        "dev",
        10,
        1_700_000_000.5,
        [("environment", "temperature", 21.5), ("environment", "noise", 40, 1.0e9)],
    )
    body = decode_payload(data)
    assert body.device == "dev" and body.seq == 10 and body.last_seq == 11
    assert body.readings[0] == ("environment", "temperature", 21.5, 1_700_000_000.5)
    assert body.readings[1][3] == 1.0e9


@pytest.mark.parametrize(
    "payload, reason",
    [
        ([1, 2], RejectReason.MALFORMED),
        ({"d": "Dev!", "q": 1, "t": 1.0, "r": [["a", "b", 1]]}, RejectReason.MALFORMED),
        ({"d": "dev", "q": -1, "t": 1.0, "r": [["a", "b", 1]]}, RejectReason.MALFORMED),
        ({"d": "dev", "q": True, "t": 1.0, "r": [["a", "b", 1]]}, RejectReason.MALFORMED),
        ({"d": "dev", "q": 1, "t": math.nan, "r": [["a", "b", 1]]}, RejectReason.MALFORMED),
        ({"d": "dev", "q": 1, "t": 1.0, "r": []}, RejectReason.MALFORMED),
        (
            {"d": "dev", "q": 1, "t": 1.0, "r": [["a", "b", 1]] * (MAX_READINGS + 1)},
            RejectReason.MALFORMED,
        ),
        ({"d": "dev", "q": 1, "t": 1.0, "r": [["a", "b"]]}, RejectReason.MALFORMED),
        ({"d": "dev", "q": 1, "t": 1.0, "r": [["A/B", "b", 1]]}, RejectReason.SCHEMA),
        ({"d": "dev", "q": 1, "t": 1.0, "r": [["a", "b", [1, 2]]]}, RejectReason.SCHEMA),
        ({"d": "dev", "q": 1, "t": 1.0, "r": [["a", "b", None]]}, RejectReason.SCHEMA),
        ({"d": "dev", "q": 1, "t": 1.0, "r": [["a", "b", 1, "yesterday"]]}, RejectReason.MALFORMED),
        (
            {"d": "dev", "q": 2**63 - 1, "t": 1.0, "r": [["a", "b", 1], ["a", "b", 2]]},
            RejectReason.MALFORMED,
        ),
    ],
)
def test_bad_payloads_are_refused_with_a_reason(payload: object, reason: RejectReason) -> None:
    with pytest.raises(Rejected) as err:
        decode_payload(cbor2.dumps(payload))
    assert err.value.reason is reason


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.floats()
        | st.integers()
        | st.text(max_size=5)
        | st.binary(max_size=5),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=2), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_any_cbor_value_is_decoded_or_refused(value: object) -> None:
    try:
        body = decode_payload(cbor2.dumps(value))
    except Rejected as exc:
        assert exc.reason in (RejectReason.MALFORMED, RejectReason.SCHEMA)
    else:
        assert body.readings  # only a well-formed payload gets here
