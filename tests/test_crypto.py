"""The envelope: both suites round-trip, and a ciphertext opens only where it was sealed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.crypto import (
    HEADER_SIZE,
    DataKey,
    Suite,
    keyed_mac,
    new_key,
    open_field,
    read_header,
    seal_field,
)
from vault.errors import DecryptionFailed

SUITES = list(Suite)
resident_ids = st.text(alphabet="0123456789abcdef_r", min_size=1, max_size=20)
field_names = st.sampled_from(["name", "id_number", "phone", "religion", "health_conditions"])


def _key(suite: Suite, resident_id: str = "r_1", version: int = 1) -> DataKey:
    return DataKey(resident_id, version, suite, new_key(suite))


@pytest.mark.parametrize("suite", SUITES)
@given(plaintext=st.binary(max_size=2048), resident_id=resident_ids, field=field_names)
def test_seal_then_open_returns_the_plaintext(
    suite: Suite, plaintext: bytes, resident_id: str, field: str
) -> None:
    key = _key(suite, resident_id)
    sealed = seal_field(key, field, plaintext)
    assert open_field(key, field, sealed) == plaintext
    assert len(plaintext) < 16 or plaintext not in sealed  # no plaintext run survives


@pytest.mark.parametrize("suite", SUITES)
@given(
    plaintext=st.binary(min_size=1, max_size=256),
    position=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_any_flipped_bit_fails_to_open(
    suite: Suite, plaintext: bytes, position: int, bit: int
) -> None:
    key = _key(suite)
    sealed = bytearray(seal_field(key, "phone", plaintext))
    sealed[position % len(sealed)] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        open_field(key, "phone", bytes(sealed))


@pytest.mark.parametrize("suite", SUITES)
def test_ciphertext_moved_to_another_field_fails(suite: Suite) -> None:
    key = _key(suite)
    sealed = seal_field(key, "phone", b'"13812345678"')
    with pytest.raises(DecryptionFailed):
        open_field(key, "emergency_contact", sealed)


@pytest.mark.parametrize("suite", SUITES)
def test_ciphertext_moved_to_another_resident_fails_even_with_the_same_key_bytes(
    suite: Suite,
) -> None:
    """The resident id is bound in the associated data, not just implied by the key."""
    key = _key(suite, "r_alice")
    sealed = seal_field(key, "phone", b'"13812345678"')
    same_bytes_other_resident = DataKey("r_bob", 1, suite, key.key)
    with pytest.raises(DecryptionFailed):
        open_field(same_bytes_other_resident, "phone", sealed)


@pytest.mark.parametrize("suite", SUITES)
def test_ciphertext_claiming_another_key_version_fails(suite: Suite) -> None:
    key = _key(suite, version=1)
    sealed = seal_field(key, "phone", b"x")
    relabelled = DataKey(key.resident_id, 2, suite, key.key)
    with pytest.raises(DecryptionFailed):
        open_field(relabelled, "phone", sealed)


def test_header_names_suite_and_key_version() -> None:
    sealed = seal_field(_key(Suite.SM4_GCM, version=7), "name", b"x")
    header = read_header(sealed)
    assert (header.suite, header.key_version) == (Suite.SM4_GCM, 7)
    assert len(sealed) == HEADER_SIZE + 1 + 16


def test_truncated_or_unknown_format_is_refused() -> None:
    sealed = seal_field(_key(Suite.AES_256_GCM), "name", b"abc")
    with pytest.raises(DecryptionFailed):
        read_header(sealed[:10])
    with pytest.raises(DecryptionFailed):
        read_header(b"\x09" + sealed[1:])


def test_data_key_repr_hides_key_material() -> None:
    key = _key(Suite.AES_256_GCM)
    assert key.key.hex() not in repr(key)
    assert repr(key.key) not in repr(key)


def test_sm4_gcm_matches_a_known_answer() -> None:
    """SM4-GCM test vector from RFC 8998, Appendix A.1, so the national suite is the real one."""
    from vault.crypto import aead_encrypt

    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    sealed = aead_encrypt(Suite.SM4_GCM, key, nonce, plaintext, aad)
    assert sealed[-16:].hex().upper() == "83DE3541E4C2B58177E065A9BF7B62EC"


def test_hmac_sm3_and_sha256_differ_and_are_keyed() -> None:
    a = keyed_mac("hmac-sha256", b"k" * 32, b"msg")
    b = keyed_mac("hmac-sm3", b"k" * 32, b"msg")
    c = keyed_mac("hmac-sha256", b"j" * 32, b"msg")
    assert len(a) == len(b) == 32
    assert len({a, b, c}) == 3
