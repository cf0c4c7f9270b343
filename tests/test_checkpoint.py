"""Checkpoints (C2SP signed-note + tlog-checkpoint) and tlog-proof files.

Expected key ids and verifier keys are computed here from the spec's formulas,
not by calling the code under test, and the spec's own published example note
is verified, so a shared misunderstanding cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    format_checkpoint,
    format_tlog_proof,
    key_id,
    parse_checkpoint,
    parse_tlog_proof,
    parse_verifier_key,
    sign_checkpoint,
    verifier_key,
    verify_checkpoint,
    verify_note,
    verify_tlog_proof,
)
from audit.merkle import MemoryTree, leaf_hash

ORIGIN = "resident-vault.example/test/audit"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
VKEY = verifier_key(ORIGIN, KEY.public_key())
ROOT = hashlib.sha256(b"some root").digest()
DASH = "\u2014"
URLSAFE_ROOT = base64.urlsafe_b64encode(b"\xff" * 32).decode()
PUB64_WRONG_TYPE = base64.b64encode(b"\x02" + PUB).decode()
PUB64 = base64.b64encode(b"\x01" + PUB).decode()


def _resign(body: str, key: Ed25519PrivateKey = KEY, name: str = ORIGIN) -> str:
    """Sign arbitrary note text by hand, as the spec describes, for malformed-body cases."""
    kid = hashlib.sha256(name.encode() + b"\n\x01" + PUB).digest()[:4]
    sig = base64.b64encode(kid + key.sign(body.encode())).decode()
    return f"{body}\n{DASH} {name} {sig}\n"


# --- keys -------------------------------------------------------------------------------


def test_key_id_and_verifier_key_follow_the_spec() -> None:
    expected_id = hashlib.sha256(ORIGIN.encode("utf-8") + b"\x0a" + b"\x01" + PUB).digest()[:4]
    assert key_id(ORIGIN, KEY.public_key()) == expected_id
    assert key_id(ORIGIN, PUB) == expected_id
    expected_vkey = (
        ORIGIN + "+" + expected_id.hex() + "+" + base64.b64encode(b"\x01" + PUB).decode()
    )
    assert expected_vkey == VKEY
    parsed = parse_verifier_key(VKEY)
    assert (parsed.name, parsed.key_id, parsed.public_key) == (ORIGIN, expected_id, PUB)


def test_spec_example_note_verifies() -> None:
    """The example verifier key and note from c2sp.org/signed-note, verbatim."""
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    note = (
        "This is an example message.\n\n"
        f"{DASH} example.com/foo "
        "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    parsed = parse_verifier_key(vkey)
    assert parsed.key_id == bytes.fromhex("530d903a")
    assert verify_note(note, vkey) == "This is an example message.\n"
    # The example's body is not a checkpoint: the signature passes, then the body fails.
    with pytest.raises(CheckpointError, match="fewer than three lines"):
        verify_checkpoint(note, vkey)
    tampered = note.replace("example message", "example massage")
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(tampered, vkey)


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "no-plus-signs",
        f"{ORIGIN}+{'0' * 8}+{PUB64}",  # wrong id
        VKEY.replace(ORIGIN, "other.example/log"),  # id computed for another name
        VKEY[:-4],  # truncated key
        VKEY + "AAAA",  # too long a key
        VKEY.replace("+", "+0x", 1),  # id not 8 hex digits
        f"{ORIGIN}+{key_id(ORIGIN, PUB).hex()}+{PUB64_WRONG_TYPE}",
        "with space+00000000+AQ==",
    ],
)
def test_bad_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(CheckpointError):
        parse_verifier_key(vkey)


@pytest.mark.parametrize("origin", ["", "has space", "has+plus", "tab\there", "nbsp\u00a0here"])
def test_bad_origins_are_refused(origin: str) -> None:
    with pytest.raises(CheckpointError):
        format_checkpoint(origin, 1, ROOT)
    with pytest.raises(CheckpointError):
        verifier_key(origin, PUB)


# --- checkpoints ------------------------------------------------------------------------


def test_format_is_three_lines() -> None:
    body = format_checkpoint(ORIGIN, 42, ROOT)
    assert body == f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\n"


def test_sign_then_verify_round_trip() -> None:
    text = sign_checkpoint(ORIGIN, 42, ROOT, KEY)
    body = format_checkpoint(ORIGIN, 42, ROOT)
    assert text.startswith(body + "\n" + DASH + " " + ORIGIN + " ")
    assert text.endswith("\n")
    sig = base64.b64decode(text.splitlines()[-1].split(" ")[2])
    assert sig[:4] == key_id(ORIGIN, PUB)
    KEY.public_key().verify(sig[4:], body.encode())  # the signature covers the body only
    assert verify_checkpoint(text, VKEY) == Checkpoint(ORIGIN, 42, ROOT)
    assert parse_checkpoint(text) == Checkpoint(ORIGIN, 42, ROOT)
    assert verify_checkpoint(sign_checkpoint(ORIGIN, 0, ROOT, KEY), VKEY).size == 0
    big = 2**64 - 1
    assert verify_checkpoint(sign_checkpoint(ORIGIN, big, ROOT, KEY), VKEY).size == big


def test_unknown_cosignatures_are_ignored() -> None:
    """Witness cosignatures from keys we do not know must not break verification."""
    text = sign_checkpoint(ORIGIN, 7, ROOT, KEY)
    witness_sig = base64.b64encode(b"\x01\x02\x03\x04" + b"x" * 64).decode()
    witness = f"{DASH} witness.example/w1 {witness_sig}\n"
    assert verify_checkpoint(text + witness, VKEY).size == 7
    assert verify_checkpoint(text.replace(f"\n\n{DASH}", f"\n\n{witness}{DASH}"), VKEY).size == 7


def _tamper_cases() -> dict[str, str]:
    good = sign_checkpoint(ORIGIN, 42, ROOT, KEY)
    body = format_checkpoint(ORIGIN, 42, ROOT)
    sig_line = good.splitlines()[-1]
    other_root = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    return {
        "size": good.replace("\n42\n", "\n43\n"),
        "root": good.replace(base64.b64encode(ROOT).decode(), other_root),
        "origin in body": good.replace(f"{ORIGIN}\n", "resident-vault.example/other/audit\n", 1),
        "signed by another key": sign_checkpoint(ORIGIN, 42, ROOT, OTHER_KEY),
        "no signature": body + "\n",
        "no blank line": body + sig_line + "\n",
        "no final newline": good[:-1],
        "extension line": _resign(body + "extension\n"),
        "two lines": _resign(f"{ORIGIN}\n42\n"),
        "leading zero size": _resign(f"{ORIGIN}\n042\n{base64.b64encode(ROOT).decode()}\n"),
        "negative size": _resign(f"{ORIGIN}\n-1\n{base64.b64encode(ROOT).decode()}\n"),
        "unicode digits": _resign(f"{ORIGIN}\n\u0664\u0662\n{base64.b64encode(ROOT).decode()}\n"),
        "huge size": _resign(f"{ORIGIN}\n{2**64}\n{base64.b64encode(ROOT).decode()}\n"),
        "short root": _resign(f"{ORIGIN}\n42\n{base64.b64encode(ROOT[:31]).decode()}\n"),
        "bad base64 root": _resign(f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()[:-1]}\n"),
        "urlsafe root": _resign(f"{ORIGIN}\n42\n{URLSAFE_ROOT}\n"),
        "space in origin": _resign(f"has space\n42\n{base64.b64encode(ROOT).decode()}\n"),
        "plus in origin": _resign(f"a+b\n42\n{base64.b64encode(ROOT).decode()}\n"),
        "bad signature base64": good.replace(sig_line, sig_line[:-2]),
        "short signature": good.replace(sig_line.split(" ")[2], "AAAAAA=="),
        "hyphen not em dash": good.replace(DASH, "-"),
        "trailing text": good + "trailing\n",
        "carriage return": good.replace("\n42\n", "\n42\r\n"),
        "nul byte": good.replace("\n42\n", "\n4\x002\n"),
        "lone surrogate": good.replace("\n42\n", "\n42\ud800\n"),
        "signature with extra field": good.replace(sig_line, sig_line + " extra"),
        "empty": "",
    }


@pytest.mark.parametrize("case", sorted(_tamper_cases()))
def test_tampered_or_malformed_checkpoints_are_rejected(case: str) -> None:
    with pytest.raises(CheckpointError):
        verify_checkpoint(_tamper_cases()[case], VKEY)


def test_a_bad_signature_by_our_key_rejects_even_next_to_a_good_one() -> None:
    good = sign_checkpoint(ORIGIN, 42, ROOT, KEY)
    sig_line = good.splitlines()[-1]
    raw = bytearray(base64.b64decode(sig_line.split(" ")[2]))
    raw[10] ^= 1
    bad_line = f"{DASH} {ORIGIN} {base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(good + bad_line + "\n", VKEY)


def test_origin_must_be_the_key_name() -> None:
    """A note signed under our name but about another origin is not our tree head."""
    body = format_checkpoint("resident-vault.example/elsewhere", 1, ROOT)
    with pytest.raises(CheckpointError, match="not the key name"):
        verify_checkpoint(_resign(body), VKEY)


def test_signing_refuses_bad_values() -> None:
    with pytest.raises(CheckpointError):
        sign_checkpoint(ORIGIN, -1, ROOT, KEY)
    with pytest.raises(CheckpointError):
        sign_checkpoint(ORIGIN, 2**64, ROOT, KEY)
    with pytest.raises(CheckpointError):
        sign_checkpoint(ORIGIN, 1, ROOT[:16], KEY)


# --- tlog-proof -----------------------------------------------------------------------------

ENTRIES = [f'{{"index":{i},"event":"read"}}'.encode() for i in range(13)]
TREE = MemoryTree(leaf_hash(e) for e in ENTRIES)
CHECKPOINT = sign_checkpoint(ORIGIN, TREE.size, TREE.root(), KEY)


def _proof_file(index: int) -> str:
    return format_tlog_proof(ENTRIES[index], index, TREE.inclusion_proof(index), CHECKPOINT)


def test_tlog_proof_layout() -> None:
    text = _proof_file(5)
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "extra " + base64.b64encode(ENTRIES[5]).decode()
    assert lines[2] == "index 5"
    hashes = TREE.inclusion_proof(5)
    assert lines[3 : 3 + len(hashes)] == [base64.b64encode(h).decode() for h in hashes]
    assert lines[3 + len(hashes)] == ""
    assert text.endswith("\n\n" + CHECKPOINT)
    parsed = parse_tlog_proof(text)
    assert (parsed.extra, parsed.index, parsed.hashes) == (ENTRIES[5], 5, tuple(hashes))
    assert parsed.checkpoint_text == CHECKPOINT


@pytest.mark.parametrize("index", range(len(ENTRIES)))
def test_tlog_proof_round_trip(index: int) -> None:
    result = verify_tlog_proof(_proof_file(index), VKEY)
    assert result.index == index
    assert result.entry == ENTRIES[index]
    assert result.leaf_hash == leaf_hash(ENTRIES[index])
    assert result.checkpoint == Checkpoint(ORIGIN, TREE.size, TREE.root())


def test_tlog_proof_for_a_single_entry_tree() -> None:
    checkpoint = sign_checkpoint(ORIGIN, 1, leaf_hash(b"only"), KEY)
    text = format_tlog_proof(b"only", 0, [], checkpoint)
    assert "index 0\n\n" in text
    assert verify_tlog_proof(text, VKEY).entry == b"only"


def _proof_tampers() -> dict[str, str]:
    good = _proof_file(5)
    lines = good.split("\n")
    other_extra = "extra " + base64.b64encode(ENTRIES[6]).decode()
    flipped = bytearray(base64.b64decode(lines[3]))
    flipped[0] ^= 0x80
    return {
        "entry": good.replace(lines[1], other_extra),
        "index": good.replace("index 5\n", "index 6\n"),
        "index leading zero": good.replace("index 5\n", "index 05\n"),
        "index beyond size": good.replace("index 5\n", "index 13\n"),
        "proof hash": good.replace(lines[3], base64.b64encode(bytes(flipped)).decode()),
        "dropped hash": good.replace(lines[3] + "\n", ""),
        "extra hash": good.replace(lines[3] + "\n", lines[3] + "\n" + lines[3] + "\n"),
        "header": good.replace("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2"),
        "no extra line": good.replace(lines[1] + "\n", ""),
        "no index line": good.replace("index 5\n", ""),
        "short hash": good.replace(lines[3], base64.b64encode(b"x" * 31).decode()),
        "checkpoint size": good.replace(f"\n{TREE.size}\n", f"\n{TREE.size + 1}\n"),
        "checkpoint by another key": good.replace(
            CHECKPOINT, sign_checkpoint(ORIGIN, TREE.size, TREE.root(), OTHER_KEY)
        ),
        "no checkpoint": good[: -len(CHECKPOINT)],
        "no blank line": good.replace("\n\n" + ORIGIN, "\n" + ORIGIN, 1),
        "empty": "",
    }


@pytest.mark.parametrize("case", sorted(_proof_tampers()))
def test_tampered_tlog_proofs_are_rejected(case: str) -> None:
    with pytest.raises(CheckpointError):
        verify_tlog_proof(_proof_tampers()[case], VKEY)


def test_tlog_proof_against_a_checkpoint_that_does_not_cover_it() -> None:
    with pytest.raises(CheckpointError, match="does not show"):
        format_tlog_proof(ENTRIES[5], 5, TREE.inclusion_proof(5, 12), CHECKPOINT)
    old = sign_checkpoint(ORIGIN, 5, TREE.root(5), KEY)
    with pytest.raises(CheckpointError):
        format_tlog_proof(ENTRIES[5], 5, [], old)


def test_tlog_proof_with_another_logs_key() -> None:
    other_vkey = verifier_key(ORIGIN, OTHER_KEY.public_key())
    with pytest.raises(CheckpointError, match="no signature"):
        verify_tlog_proof(_proof_file(3), other_vkey)


# --- fuzzing: untrusted text only ever raises CheckpointError ---------------------------------

GOOD_CHECKPOINT = sign_checkpoint(ORIGIN, 42, ROOT, KEY)
GOOD_PROOF = _proof_file(7)
_edit = st.tuples(st.integers(0, 10_000), st.text(max_size=3), st.integers(0, 3))


def _apply(text: str, edit: tuple[int, str, int]) -> str:
    pos, insert, delete = edit
    pos %= len(text) + 1
    return text[:pos] + insert + text[pos + delete :]


@settings(max_examples=200, deadline=None)
@given(_edit)
def test_edited_checkpoints_fail_cleanly_or_say_the_same(edit: tuple[int, str, int]) -> None:
    try:
        checkpoint = verify_checkpoint(_apply(GOOD_CHECKPOINT, edit), VKEY)
    except CheckpointError:
        return
    assert checkpoint == Checkpoint(ORIGIN, 42, ROOT)


@settings(max_examples=200, deadline=None)
@given(_edit)
def test_edited_tlog_proofs_fail_cleanly_or_say_the_same(edit: tuple[int, str, int]) -> None:
    try:
        result = verify_tlog_proof(_apply(GOOD_PROOF, edit), VKEY)
    except CheckpointError:
        return
    assert (result.index, result.entry) == (7, ENTRIES[7])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_text_fails_cleanly(text: str) -> None:
    for parse in (parse_verifier_key, parse_checkpoint, parse_tlog_proof):
        with contextlib.suppress(CheckpointError):
            parse(text)
    with pytest.raises(CheckpointError):
        verify_checkpoint(text, VKEY)
    with pytest.raises(CheckpointError):
        verify_tlog_proof(text, VKEY)
