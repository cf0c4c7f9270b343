"""Signed tree heads as C2SP checkpoints, and offline proofs as C2SP tlog-proof files.

The log's tree heads are published in the standard transparency-log formats
(c2sp.org/signed-note, c2sp.org/tlog-checkpoint, c2sp.org/tlog-proof) so that
residents and auditors can check them with any standard tool, such as Go's
golang.org/x/mod/sumdb/note, instead of trusting code the vault ships.

A checkpoint (see API.md)::

    <origin>
    <tree size>
    <base64 root hash>

    — <origin> <base64(key id || Ed25519 signature)>

Everything here parses untrusted text: every problem raises `CheckpointError`
(a ValueError) with a message saying what is wrong, and nothing else escapes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion

__all__ = [
    "ED25519_ALG",
    "SIGNATURE_DASH",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "CheckpointError",
    "ProofResult",
    "TlogProof",
    "VerifierKey",
    "format_checkpoint",
    "format_tlog_proof",
    "key_id",
    "parse_checkpoint",
    "parse_tlog_proof",
    "parse_verifier_key",
    "sign_checkpoint",
    "sign_checkpoint_with",
    "sign_note_with",
    "verifier_key",
    "verify_checkpoint",
    "verify_note",
    "verify_tlog_proof",
]

ED25519_ALG = 0x01
"""Signed-note signature type byte for Ed25519."""

SIGNATURE_DASH = "\u2014"
"""Em dash that starts every signed-note signature line."""

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"

_MAX_NOTE_BYTES = 64 * 1024
"""A checkpoint is ~200 bytes; even with many cosignatures 64 KiB is generous."""

_MAX_SIGNATURES = 100
"""Same cap as golang.org/x/mod/sumdb/note: bound the work an untrusted note causes."""

_MAX_PROOF_HASHES = 64
"""An inclusion proof in a uint64-sized tree has at most 64 hashes."""

_MAX_SIZE = 1 << 64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


class CheckpointError(ValueError):
    """A checkpoint, verifier key or tlog-proof is malformed, or fails to verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: the log (`origin`) had `size` leaves with this `root` hash."""

    origin: str
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A parsed verifier key: key name, 4-byte key id and raw Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: bytes


@dataclass(frozen=True, slots=True)
class TlogProof:
    """A parsed, *unverified* tlog-proof file. Use `verify_tlog_proof` to trust it."""

    extra: bytes | None
    index: int
    hashes: tuple[bytes, ...]
    checkpoint_text: str


@dataclass(frozen=True, slots=True)
class ProofResult:
    """What a verified tlog-proof establishes: `entry` is leaf `index` under `checkpoint`."""

    checkpoint: Checkpoint
    index: int
    entry: bytes
    leaf_hash: bytes
    hashes: tuple[bytes, ...]


# --- keys -------------------------------------------------------------------------------


def _raw_public_key(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(public_key, bytes) and len(public_key) == 32:
        return public_key
    raise CheckpointError("an Ed25519 public key is 32 bytes")


def _check_name(name: str, what: str = "key name") -> None:
    """Key names and origins: non-empty, no Unicode spaces, no '+' (signed-note spec)."""
    if not name:
        raise CheckpointError(f"{what} is empty")
    if "+" in name:
        raise CheckpointError(f"{what} {name!r} contains '+'")
    if any(ch.isspace() or unicodedata.category(ch) == "Zs" for ch in name):
        raise CheckpointError(f"{what} {name!r} contains a space")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise CheckpointError(f"{what} {name!r} contains a control character")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CheckpointError(f"{what} is not valid Unicode") from exc


def key_id(origin: str, public_key: Ed25519PublicKey | bytes) -> bytes:
    """First 4 bytes of SHA-256(origin || 0x0A || 0x01 || public key): the signed-note key id."""
    _check_name(origin)
    raw = _raw_public_key(public_key)
    return hashlib.sha256(origin.encode() + b"\n" + bytes([ED25519_ALG]) + raw).digest()[:4]


def verifier_key(origin: str, public_key: Ed25519PublicKey | bytes) -> str:
    """The `<origin>+<key id hex>+<base64(0x01 || public key)>` string verifiers are given."""
    raw = _raw_public_key(public_key)
    kid = key_id(origin, raw)
    return f"{origin}+{kid.hex()}+{base64.b64encode(bytes([ED25519_ALG]) + raw).decode()}"


def _b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 with padding, and only its canonical spelling (no malleable variants)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise CheckpointError(f"{what} is not canonical base64")
    return raw


def parse_verifier_key(vkey: str) -> VerifierKey:
    """Parse and check a verifier key (name, key id matching the key, Ed25519 type)."""
    if not isinstance(vkey, str):
        raise CheckpointError("a verifier key is a string")
    vkey = vkey.strip()
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("a verifier key has the form <name>+<key id hex>+<base64 key>")
    name, hex_id, key64 = parts
    _check_name(name)
    if not _HEX8.fullmatch(hex_id):
        raise CheckpointError("the verifier key's id is not 8 hex digits")
    material = _b64decode_strict(key64, "the verifier key's public key")
    if len(material) != 33 or material[0] != ED25519_ALG:
        raise CheckpointError("the verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
    public = material[1:]
    kid = bytes.fromhex(hex_id)
    if kid != key_id(name, public):
        raise CheckpointError("the verifier key's id does not match its name and public key")
    return VerifierKey(name=name, key_id=kid, public_key=public)


# --- checkpoint body ----------------------------------------------------------------------


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < _MAX_SIZE:
        raise CheckpointError(f"tree size {size!r} is not an integer in 0..2**64-1")


def format_checkpoint(origin: str, size: int, root: bytes) -> str:
    """The checkpoint body (the signed note text): origin, size, base64 root, each + newline."""
    _check_name(origin, "origin")
    _check_size(size)
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise CheckpointError(f"a root hash is {HASH_SIZE} bytes")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def _parse_body(body: str) -> Checkpoint:
    """Parse the note text; our log writes no extension lines, so none are accepted."""
    if not body.endswith("\n"):
        raise CheckpointError("the checkpoint body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("the checkpoint body has fewer than three lines")
    if len(lines) > 3:
        raise CheckpointError("the checkpoint body has extension lines, which this log never signs")
    origin, size_text, root_text = lines
    _check_name(origin, "origin")
    if not _DECIMAL.fullmatch(size_text):
        raise CheckpointError(f"tree size {size_text!r} is not a decimal without leading zeros")
    size = int(size_text)
    if size >= _MAX_SIZE:
        raise CheckpointError("tree size exceeds 2**64-1")
    root = _b64decode_strict(root_text, "root hash")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash is {len(root)} bytes, not {HASH_SIZE}")
    return Checkpoint(origin=origin, size=size, root=root)


# --- signed note ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    name: str
    key_id: bytes
    signature: bytes


def _split_note(text: str) -> tuple[str, list[_Signature]]:
    """Split a signed note into its text and signature lines, checking the note grammar.

    Follows c2sp.org/signed-note and golang.org/x/mod/sumdb/note's Open: UTF-8,
    no control characters but newline, the text ends at the last blank line, and
    every line after it is `— <name> <base64(key id || signature)>`.
    """
    if not isinstance(text, str):
        raise CheckpointError("a signed note is text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise CheckpointError("the note is not valid Unicode") from exc
    if size > _MAX_NOTE_BYTES:
        raise CheckpointError("the note is too large")
    if any(ch != "\n" and (ord(ch) < 0x20 or ord(ch) == 0x7F) for ch in text):
        raise CheckpointError("the note contains a control character (only newline is allowed)")
    split = text.rfind("\n\n")
    if split < 0:
        raise CheckpointError("the note has no blank line before its signatures")
    body, sig_block = text[: split + 1], text[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise CheckpointError("the note's signature block is empty or lacks its final newline")
    prefix = SIGNATURE_DASH + " "
    sigs: list[_Signature] = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(prefix):
            raise CheckpointError(f"not a signature line: {line[:60]!r}")
        name, sep, b64 = line[len(prefix) :].partition(" ")
        if not sep or not b64:
            raise CheckpointError("a signature line lacks its signature")
        _check_name(name)
        raw = _b64decode_strict(b64, "a signature")
        if len(raw) < 5:
            raise CheckpointError("a signature is too short to hold a key id and a signature")
        sigs.append(_Signature(name=name, key_id=raw[:4], signature=raw[4:]))
        if len(sigs) > _MAX_SIGNATURES:
            raise CheckpointError("the note has too many signatures")
    return body, sigs


def sign_checkpoint(origin: str, size: int, root: bytes, private_key: Ed25519PrivateKey) -> str:
    """A signed checkpoint: body, blank line, `— <origin> <base64(key id || signature)>`."""
    return sign_checkpoint_with(origin, size, root, private_key.public_key(), private_key.sign)


def sign_checkpoint_with(
    origin: str,
    size: int,
    root: bytes,
    public_key: Ed25519PublicKey | bytes,
    signer: Callable[[bytes], bytes],
) -> str:
    """As `sign_checkpoint`, with the private key held elsewhere (a keyring or an HSM)."""
    return sign_note_with(format_checkpoint(origin, size, root), origin, public_key, signer)


def sign_note_with(
    body: str,
    name: str,
    public_key: Ed25519PublicKey | bytes,
    signer: Callable[[bytes], bytes],
) -> str:
    """A signed note (c2sp.org/signed-note) of `body` under key `name`.

    Checkpoints are one kind; archive manifests (`audit.partitions`) another. They cannot
    be taken for each other: a checkpoint body is exactly three lines, a manifest's first
    line names its format.
    """
    _check_name(name)
    if not body.endswith("\n") or "\n\n" in body:
        raise CheckpointError("a note body ends with a newline and has no blank line")
    signature = signer(body.encode("utf-8"))
    sig64 = base64.b64encode(key_id(name, public_key) + signature).decode()
    return f"{body}\n{SIGNATURE_DASH} {name} {sig64}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a signed checkpoint *without* checking its signature.

    For display and for choosing a key by origin only: an unverified checkpoint
    must not be trusted. Use `verify_checkpoint` for anything that matters.
    """
    body, _ = _split_note(text)
    return _parse_body(body)


def verify_note(text: str, verifier_key: str) -> str:
    """Check a signed note against a verifier key and return its (now trusted) text.

    Signatures by other keys (e.g. witness cosignatures) are ignored, as the
    signed-note spec requires; a signature under our key name and id that does
    not verify rejects the whole note, and so does a note with none of ours.
    """
    key = parse_verifier_key(verifier_key)
    body, sigs = _split_note(text)
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    message = body.encode("utf-8")
    verified = False
    for sig in sigs:
        if sig.name != key.name or sig.key_id != key.key_id:
            continue
        try:
            public.verify(sig.signature, message)
        except InvalidSignature as exc:
            raise CheckpointError(f"the signature by {key.name} does not verify") from exc
        verified = True
    if not verified:
        raise CheckpointError(f"the note carries no signature by {key.name}+{key.key_id.hex()}")
    return body


def verify_checkpoint(text: str, verifier_key: str) -> Checkpoint:
    """Check a signed checkpoint against the log's verifier key and return its tree head.

    The signature is checked first (`verify_note`), then the body is parsed; the
    origin must be the key name, since the origin names the log that signs.
    """
    checkpoint = _parse_body(verify_note(text, verifier_key))
    name = verifier_key.strip().split("+", 1)[0]
    if checkpoint.origin != name:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin!r} is not the key name {name!r}"
        )
    return checkpoint


# --- tlog-proof ---------------------------------------------------------------------------


def _check_hash_list(hashes: Sequence[bytes]) -> tuple[bytes, ...]:
    if len(hashes) > _MAX_PROOF_HASHES:
        raise CheckpointError("the inclusion proof is too long")
    out = tuple(hashes)
    if not all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in out):
        raise CheckpointError(f"every proof hash is {HASH_SIZE} bytes")
    return out


def format_tlog_proof(
    entry_bytes: bytes, index: int, proof_hashes: Sequence[bytes], checkpoint_text: str
) -> str:
    """A c2sp.org/tlog-proof@v1 file for entry `index`, with its bytes in the `extra` line.

    Refuses (CheckpointError) to write a file that would not verify: the proof
    must bind the entry's leaf hash to the checkpoint's root. The checkpoint's
    signature is not checked here; it is the log's own, copied verbatim.
    """
    if not isinstance(entry_bytes, bytes):
        raise CheckpointError("the entry is bytes (its canonical encoding)")
    _check_size(index)
    hashes = _check_hash_list(proof_hashes)
    checkpoint = parse_checkpoint(checkpoint_text)
    if not verify_inclusion(
        leaf_hash(entry_bytes), index, checkpoint.size, hashes, checkpoint.root
    ):
        raise CheckpointError(
            f"the proof does not show entry {index} in the tree of size {checkpoint.size}"
        )
    lines = [
        TLOG_PROOF_HEADER,
        f"extra {base64.b64encode(entry_bytes).decode()}",
        f"index {index}",
        *(base64.b64encode(h).decode() for h in hashes),
    ]
    return "\n".join(lines) + "\n\n" + checkpoint_text


def parse_tlog_proof(text: str) -> TlogProof:
    """Parse a tlog-proof file's structure, without verifying anything."""
    if not isinstance(text, str):
        raise CheckpointError("a tlog-proof is text")
    pos = 0

    def next_line() -> str:
        nonlocal pos
        end = text.find("\n", pos)
        if end < 0:
            raise CheckpointError("the tlog-proof ends before its checkpoint")
        line = text[pos:end]
        pos = end + 1
        return line

    if next_line() != TLOG_PROOF_HEADER:
        raise CheckpointError(f"the first line is not {TLOG_PROOF_HEADER}")
    line = next_line()
    extra: bytes | None = None
    if line.startswith("extra "):
        extra = _b64decode_strict(line[len("extra ") :], "the extra data")
        line = next_line()
    if not line.startswith("index "):
        raise CheckpointError("the 'index' line is missing")
    index_text = line[len("index ") :]
    if not _DECIMAL.fullmatch(index_text) or int(index_text) >= _MAX_SIZE:
        raise CheckpointError(f"index {index_text!r} is not a decimal without leading zeros")
    hashes: list[bytes] = []
    while (line := next_line()) != "":
        if len(hashes) == _MAX_PROOF_HASHES:
            raise CheckpointError("the inclusion proof is too long")
        h = _b64decode_strict(line, "a proof hash")
        if len(h) != HASH_SIZE:
            raise CheckpointError(f"a proof hash is {len(h)} bytes, not {HASH_SIZE}")
        hashes.append(h)
    return TlogProof(
        extra=extra, index=int(index_text), hashes=tuple(hashes), checkpoint_text=text[pos:]
    )


def verify_tlog_proof(text: str, verifier_key: str) -> ProofResult:
    """Verify a tlog-proof offline: the checkpoint's signature, then the entry's inclusion.

    The leaf hash is recomputed from the `extra` line (the entry's canonical
    bytes), so the result's `entry` is exactly what the log committed to.
    """
    proof = parse_tlog_proof(text)
    if proof.extra is None:
        raise CheckpointError("the tlog-proof has no 'extra' line, so its entry cannot be checked")
    checkpoint = verify_checkpoint(proof.checkpoint_text, verifier_key)
    if proof.index >= checkpoint.size:
        raise CheckpointError(
            f"index {proof.index} is outside the checkpoint's tree of size {checkpoint.size}"
        )
    lh = leaf_hash(proof.extra)
    if not verify_inclusion(lh, proof.index, checkpoint.size, proof.hashes, checkpoint.root):
        raise CheckpointError(
            f"the inclusion proof for entry {proof.index} does not match the checkpoint's root"
        )
    return ProofResult(
        checkpoint=checkpoint,
        index=proof.index,
        entry=proof.extra,
        leaf_hash=lh,
        hashes=proof.hashes,
    )
