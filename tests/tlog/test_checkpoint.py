"""Signed notes and checkpoints: Go known-answer vector, tampering, strict parsing."""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msec.tlog.checkpoint import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteError,
    NoteSigner,
    NoteVerifier,
    note_key_id,
    open_checkpoint,
    open_note,
    sign_note,
)

# golang.org/x/mod/sumdb/note's documented example (note.go docs, note_test.go TestSign).
# The text breaks after "problem,", not after "your": only this form verifies.
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
SIG_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
NOTE = TEXT + "\n\u2014 PeterNeumann " + SIG_B64 + "\n"

ROOT = bytes(range(32))


def _peter() -> NoteVerifier:
    return NoteVerifier.from_string(VKEY)


# --- known answers -------------------------------------------------------------------------


def test_go_vector_opens() -> None:
    assert open_note(NOTE, [_peter()]) == TEXT
    assert open_note(NOTE.encode("utf-8"), [_peter()]) == TEXT


def test_go_vector_signs_byte_for_byte() -> None:
    signer = NoteSigner.from_string(SKEY)
    assert signer.to_string() == SKEY
    assert signer.verifier() == _peter()
    assert sign_note(TEXT, signer) == NOTE


def test_key_id_by_hand() -> None:
    v = _peter()
    public = base64.b64decode(VKEY.split("+", 2)[2])[1:]
    by_hand = hashlib.sha256(b"PeterNeumann" + b"\n" + b"\x01" + public).digest()[:4]
    assert v.key_id == int.from_bytes(by_hand, "big") == 0xC74F20A3
    assert note_key_id("PeterNeumann", public) == v.key_id
    assert v.to_string() == VKEY
    assert base64.b64decode(SIG_B64)[:4] == by_hand


# --- tampering -----------------------------------------------------------------------------


def _flip(s: str, i: int) -> str:
    return s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]


@pytest.mark.parametrize("i", [0, 20, len(TEXT) - 2])
def test_tampered_text_fails(i: int) -> None:
    with pytest.raises(NoteError):
        open_note(_flip(TEXT, i) + NOTE[len(TEXT) :], [_peter()])


@pytest.mark.parametrize("i", [10, 40, 80])  # past the 6 base64 chars that carry the key ID
def test_tampered_signature_fails(i: int) -> None:
    bad = _flip(SIG_B64, i)
    with pytest.raises(NoteError):
        open_note(TEXT + "\n\u2014 PeterNeumann " + bad + "\n", [_peter()])


def test_tampered_key_fails() -> None:
    # A changed key no longer matches the key ID embedded in the string...
    with pytest.raises(NoteError):
        NoteVerifier.from_string(_flip(VKEY, 30))
    # ...and a consistent but different key under the same name does not verify.
    other = NoteSigner.generate("PeterNeumann").verifier()
    with pytest.raises(NoteError):
        open_note(NOTE, [other])


def test_tampered_key_id_in_signature_is_unknown() -> None:
    blob = bytearray(base64.b64decode(SIG_B64))
    blob[0] ^= 1
    line = "\u2014 PeterNeumann " + base64.b64encode(bytes(blob)).decode()
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(TEXT + "\n" + line + "\n", [_peter()])


# --- open_note rules -----------------------------------------------------------------------


def test_unknown_signatures_are_skipped() -> None:
    stranger = NoteSigner.generate("stranger.example")
    note = sign_note(TEXT, stranger, NoteSigner.from_string(SKEY))
    assert open_note(note, [_peter()]) == TEXT
    with pytest.raises(NoteError):
        open_note(note, [])


def test_bad_signature_by_known_key_is_error_even_with_a_good_one() -> None:
    bad = _flip(SIG_B64, 40)
    note = NOTE + "\u2014 PeterNeumann " + bad + "\n"
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(note, [_peter()])


def test_cosigned_round_trip() -> None:
    a, b = NoteSigner.generate("a.example"), NoteSigner.generate("b.example")
    note = sign_note("hello\n", a, b)
    assert note.count("\n\u2014 ") == 2
    assert open_note(note, [b.verifier()]) == "hello\n"
    assert open_note(note, [a.verifier(), b.verifier()]) == "hello\n"


def test_ambiguous_verifiers_refused() -> None:
    v = _peter()
    clash = NoteVerifier.__new__(NoteVerifier)
    object.__setattr__(clash, "name", v.name)
    object.__setattr__(clash, "public_key", bytes(32))
    object.__setattr__(clash, "key_id", v.key_id)
    with pytest.raises(NoteError, match="ambiguous"):
        open_note(NOTE, [v, clash])
    assert open_note(NOTE, [v, _peter()]) == TEXT  # identical duplicates are fine


def test_too_many_signatures() -> None:
    junk = "\u2014 x " + base64.b64encode(bytes(68)).decode() + "\n"
    ok = NOTE + junk * (MAX_SIGNATURES - 1)
    assert open_note(ok, [_peter()]) == TEXT
    with pytest.raises(NoteError, match="too many"):
        open_note(ok + junk, [_peter()])


@pytest.mark.parametrize(
    "note",
    [
        TEXT,  # no signatures
        TEXT + "\n",  # blank line, no signatures
        NOTE[:-1],  # last signature line unterminated
        NOTE.replace("\u2014", "-"),  # ASCII hyphen instead of em dash
        NOTE.replace("\u2014 ", "\u2014"),  # no space after the dash
        NOTE.replace(" x08", "  x08"),  # double space: empty base64 / bad base64
        NOTE.replace("Neumann ", "Neumann\t"),  # tab
        NOTE.replace("Peter", "Pe+ter"),  # '+' in name
        NOTE.replace("\u2014 PeterNeumann ", "\u2014  "),  # empty name
        NOTE.replace("=\n", "\n"),  # missing base64 padding
        NOTE.replace("=\n", "=\n\n"),  # trailing blank line
        NOTE.replace("\n\n", "\n"),  # no blank line before signatures
        NOTE.replace("your", "yo\x00ur"),  # control character
        NOTE.replace("your", "yo\rur"),  # carriage return
        NOTE.replace("your", "yo\ud800ur"),  # lone surrogate: not UTF-8
        TEXT + "\n\u2014 PeterNeumann AAAA\n",  # signature too short
    ],
)
def test_malformed_notes_refused(note: str) -> None:
    with pytest.raises(NoteError):
        open_note(note, [_peter()])


def test_non_utf8_bytes_refused() -> None:
    with pytest.raises(NoteError):
        open_note(NOTE.encode("utf-8").replace(b"your", b"yo\xffur"), [_peter()])


@pytest.mark.parametrize("text", ["no newline", "two\r\n", "\x07bell\n", ""])
def test_sign_refuses_bad_text(text: str) -> None:
    with pytest.raises(NoteError):
        sign_note(text, NoteSigner.generate("k"))


# --- keys ----------------------------------------------------------------------------------


def test_signer_string_round_trip_and_secret_hidden() -> None:
    s = NoteSigner.generate("example.com/msec/log")
    again = NoteSigner.from_string(s.to_string())
    assert again.verifier() == s.verifier()
    assert NoteVerifier.from_string(s.verifier().to_string()) == s.verifier()
    assert s.to_string().split("+", 4)[4] not in repr(s)
    assert s.sign("x\n") == again.sign("x\n")


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\nb", "a\u2003b"])
def test_bad_key_names(name: str) -> None:
    with pytest.raises(NoteError):
        NoteSigner.generate(name)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong ID
        "PeterNeumann+c74f20a3+Ahpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # alg byte 2
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!",  # bad base64
    ],
)
def test_bad_verifier_strings(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_string(vkey)


@pytest.mark.parametrize(
    "skey",
    [
        SKEY.removeprefix("PRIVATE+KEY+"),
        SKEY.replace("c74f20a3", "c74f20a4"),
        SKEY.replace("AYEK", "AoEK"),
        SKEY[:-4],
    ],
)
def test_bad_signer_strings(skey: str) -> None:
    with pytest.raises(NoteError):
        NoteSigner.from_string(skey)


def test_seed_length_checked() -> None:
    with pytest.raises(NoteError):
        NoteSigner("k", bytes(31))


def test_verify_never_raises() -> None:
    v = _peter()
    assert not v.verify(TEXT, b"short")
    assert not v.verify("\ud800\n", bytes(64))
    assert not v.verify(TEXT, bytes(64))


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_body_exact() -> None:
    cp = Checkpoint("example.com/msec/log", 1234, ROOT, ("ext one",))
    root_b64 = base64.b64encode(ROOT).decode()
    assert cp.body() == f"example.com/msec/log\n1234\n{root_b64}\next one\n"
    assert Checkpoint.parse(cp.body()) == cp


def test_checkpoint_signed_round_trip() -> None:
    signer = NoteSigner.generate("example.com/msec/log")
    cp = Checkpoint("example.com/msec/log", 0, bytes(32))
    signed = sign_note(cp.body(), signer)
    assert open_checkpoint(signed, [signer.verifier()]) == cp
    with pytest.raises(NoteError):
        open_checkpoint(signed.replace("\n0\n", "\n1\n"), [signer.verifier()])


_R = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"o\n1\n{_R}",  # no trailing newline
        "o\n1\n",  # two lines
        f"\n1\n{_R}\n",  # empty origin
        f"o\n01\n{_R}\n",  # leading zero
        f"o\n-1\n{_R}\n",  # negative
        f"o\n+1\n{_R}\n",  # sign
        f"o\n 1\n{_R}\n",  # space
        f"o\n1_0\n{_R}\n",  # underscore (int() would accept)
        f"o\n\u0661\n{_R}\n",  # Arabic-Indic digit (int() would accept)
        f"o\n{2**64}\n{_R}\n",  # over uint64
        f"o\n{'9' * 5000}\n{_R}\n",  # past Python's int digit limit
        f"o\n\n{_R}\n",  # empty size
        "o\n1\nAAAA\n",  # root too short
        f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n",  # root too long
        f"o\n1\n{_R[:-1]}\n",  # bad padding
        f"o\n1\n{_R[:-2]}B=\n",  # non-canonical trailing bits
        f"o\n1\n{_R} \n",  # trailing space in base64
        f"o\n1\n{_R}\n\n",  # empty extension line
        f"o\n1\n{_R}\nx\x01\n",  # control character
        f"o\r\n1\n{_R}\n",  # CR in origin
    ],
)
def test_checkpoint_parse_strict(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def test_checkpoint_parse_boundaries() -> None:
    assert Checkpoint.parse(f"o\n0\n{_R}\n").size == 0
    assert Checkpoint.parse(f"o\n{2**64 - 1}\n{_R}\n").size == 2**64 - 1


@pytest.mark.parametrize(
    ("origin", "size", "root", "ext"),
    [
        ("", 1, ROOT, ()),
        ("a\nb", 1, ROOT, ()),
        ("o", -1, ROOT, ()),
        ("o", 2**64, ROOT, ()),
        ("o", True, ROOT, ()),
        ("o", 1, ROOT[:31], ()),
        ("o", 1, ROOT, ("",)),
        ("o", 1, ROOT, ("a\nb",)),
    ],
)
def test_checkpoint_constructor_validates(
    origin: str, size: int, root: bytes, ext: tuple[str, ...]
) -> None:
    with pytest.raises(NoteError):
        Checkpoint(origin, size, root, ext)


_line = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)


@given(
    origin=_line,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    ext=st.lists(_line, max_size=3).map(tuple),
)
def test_checkpoint_round_trip_property(
    origin: str, size: int, root: bytes, ext: tuple[str, ...]
) -> None:
    cp = Checkpoint(origin, size, root, ext)
    assert Checkpoint.parse(cp.body()) == cp


@given(st.text())
def test_checkpoint_parse_random_text(text: str) -> None:
    try:
        cp = Checkpoint.parse(text)
    except NoteError:
        return
    assert cp.body() == text


@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.text(alphabet="\u2014 \n+=/APeterNeumanx08go", max_size=200).map(lambda s: TEXT + s),
    )
)
def test_open_note_random_input(data: str | bytes) -> None:
    with contextlib.suppress(NoteError):
        assert open_note(data, [_peter()]) == TEXT
