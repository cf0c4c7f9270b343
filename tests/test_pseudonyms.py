"""Per-recipient pseudonyms: stable, unlinkable across recipients, reversible only with the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.keyring import LocalKeyring
from vault.pseudonyms import PSEUDONYM_PREFIX, Pseudonyms, is_pseudonym

vault_ids = st.binary(min_size=8, max_size=8).map(lambda b: "r_" + b.hex())
other_ids = st.text(min_size=1, max_size=40).filter(lambda t: not t.startswith("r_"))
organisations = st.sampled_from(
    ["org_civil_affairs", "org_health", "org_anju_property", "org_oc_xingfu", "org_rc_hexie"]
)


@pytest.fixture(scope="module")
def keyring(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    return LocalKeyring.create(tmp_path_factory.mktemp("keys") / "keyring.json")


@settings(max_examples=200, deadline=None)
@given(resident=vault_ids | other_ids, organisation=organisations)
def test_round_trip_and_stability(keyring: LocalKeyring, resident: str, organisation: str) -> None:
    pseudonyms = Pseudonyms(keyring)
    pseudonym = pseudonyms.of(organisation, resident)
    assert is_pseudonym(pseudonym) and pseudonym.startswith(PSEUDONYM_PREFIX)
    assert pseudonym == Pseudonyms(keyring).of(organisation, resident)  # stable
    assert pseudonyms.resolve(organisation, pseudonym) == resident
    if resident.startswith("r_"):
        assert resident[2:] not in pseudonym


@settings(max_examples=200, deadline=None)
@given(resident=vault_ids, pair=st.lists(organisations, min_size=2, max_size=2, unique=True))
def test_two_recipients_cannot_link_or_open_each_others(
    keyring: LocalKeyring, resident: str, pair: list[str]
) -> None:
    first, second = pair
    pseudonyms = Pseudonyms(keyring)
    a, b = pseudonyms.of(first, resident), pseudonyms.of(second, resident)
    assert a != b
    # Nothing in common that a join could use: no shared run of 8 characters.
    runs = {a[i : i + 8] for i in range(len(PSEUDONYM_PREFIX), len(a) - 7)}
    assert not any(b[i : i + 8] in runs for i in range(len(PSEUDONYM_PREFIX), len(b) - 7))
    assert pseudonyms.resolve(second, a) is None
    assert pseudonyms.resolve(first, b) is None


@settings(max_examples=100, deadline=None)
@given(resident=vault_ids, organisation=organisations, flip=st.integers(min_value=3))
def test_a_tampered_pseudonym_resolves_to_nothing(
    keyring: LocalKeyring, resident: str, organisation: str, flip: int
) -> None:
    pseudonyms = Pseudonyms(keyring)
    pseudonym = pseudonyms.of(organisation, resident)
    position = flip % len(pseudonym)
    position = max(position, len(PSEUDONYM_PREFIX))
    replacement = "a" if pseudonym[position] != "a" else "b"
    tampered = pseudonym[:position] + replacement + pseudonym[position + 1 :]
    assert pseudonyms.resolve(organisation, tampered) is None


def test_another_vaults_key_opens_nothing(keyring: LocalKeyring, tmp_path: Path) -> None:
    other = LocalKeyring.create(tmp_path / "other.json")
    pseudonym = Pseudonyms(keyring).of("org_health", "r_0123456789abcdef")
    assert Pseudonyms(other).resolve("org_health", pseudonym) is None
    assert Pseudonyms(other).of("org_health", "r_0123456789abcdef") != pseudonym


@pytest.mark.parametrize("junk", ["", "ps_", "ps_!!!", "r_0123456789abcdef", "ps_" + "a" * 500])
def test_junk_resolves_to_nothing(keyring: LocalKeyring, junk: str) -> None:
    assert Pseudonyms(keyring).resolve("org_health", junk) is None


def test_the_pseudonym_key_survives_a_reload(keyring: LocalKeyring, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    created = LocalKeyring.create(path)
    before = Pseudonyms(created).of("org_health", "r_00000000000000ff")
    assert Pseudonyms(LocalKeyring.load(path)).of("org_health", "r_00000000000000ff") == before
