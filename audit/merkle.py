"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

The audit log is a Merkle tree so a resident (or anyone) can check that an entry
is in the log and that the log only ever grew, without trusting the vault. Two
families of functions live here:

* plain list functions (`root_hash`, `inclusion_proof`, `consistency_proof`),
  which recompute everything from the leaf hashes: the reference the node-based
  code is tested against, and what an offline `audit verify` can use;
* node-based functions, which work from stored *perfect subtree* hashes so a
  database-backed log answers tree heads and proofs with O(log n) node reads.

A node is named by its coordinates ``(level, index)``: the root of the perfect
subtree covering leaves ``[index * 2**level, (index + 1) * 2**level)``. Level 0
nodes are the leaf hashes themselves. Such a node never changes once the tree
has grown past it, so it can be stored as soon as it completes.

Verifiers (`verify_inclusion`, `verify_consistency`) take untrusted input and
answer True or False; they never raise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, cast

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "STRATUM",
    "CompactRange",
    "Coord",
    "MemoryTree",
    "MissingNodesError",
    "NodeReader",
    "Span",
    "consistency_proof",
    "consistency_proof_from_nodes",
    "inclusion_proof",
    "inclusion_proof_from_nodes",
    "is_kept_level",
    "kept_spans",
    "leaf_hash",
    "node_hash",
    "nodes_completed_by_append",
    "nodes_for_append",
    "nodes_for_consistency",
    "nodes_for_inclusion",
    "nodes_for_root",
    "nodes_from_kept",
    "read_consistency_proof",
    "read_inclusion_proof",
    "read_root",
    "root_from_nodes",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length of a SHA-256 hash: every leaf, node and root hash has it."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree (RFC 6962 §2.1: MTH({}) = SHA-256())."""

_MAX_SIZE = 1 << 64
"""Tree sizes and indexes are uint64 in every tlog format; beyond that is garbage."""

_MAX_PROOF_LEN = 128
"""No valid proof for a uint64-sized tree is longer (consistency: at most ~2*64)."""

Coord = tuple[int, int]
"""(level, index): the perfect subtree over leaves [index << level, (index + 1) << level)."""


# --- hashing -----------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry): the 0x00 prefix keeps leaves and nodes apart (RFC 6962 §2.1)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): an interior node; see `leaf_hash` for the prefix."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly less than n (n >= 2): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a range from its perfect subtrees, left to right (the RFC tree folds rightwards)."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


# --- plain list functions (reference) ------------------------------------------


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) for hi > lo, by the RFC recursion, without copying slices."""
    n = hi - lo
    if n == 1:
        return leaves[lo]
    k = _split(n)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Tree head of the given leaf hashes, straight from the RFC 6962 definition."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


def _check_index(index: int, size: int, available: int) -> None:
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    if size > available:
        raise ValueError(f"tree size {size} exceeds the {available} leaves given")


def _check_sizes(old_size: int, new_size: int, available: int) -> None:
    if not 0 < old_size <= new_size:
        raise ValueError(
            f"a consistency proof needs 0 < old_size <= new_size, got {old_size}, {new_size}"
        )
    if new_size > available:
        raise ValueError(f"tree size {new_size} exceeds the {available} leaves available")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """Audit path for leaf `index` in the tree of the first `tree_size` leaves (RFC 6962 §2.1.1).

    Raises ValueError unless 0 <= index < tree_size <= len(leaf_hashes).
    """
    _check_index(index, tree_size, len(leaf_hashes))
    return [_mth(leaf_hashes, lo, hi) for lo, hi in _inclusion_ranges(index, tree_size)]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Proof that the first `old_size` leaves are a prefix of the first `new_size` (§2.1.2).

    Raises ValueError unless 0 < old_size <= new_size <= len(leaf_hashes): a proof
    from the empty tree proves nothing, so none is issued (verifiers reject it).
    """
    _check_sizes(old_size, new_size, len(leaf_hashes))
    return [_mth(leaf_hashes, lo, hi) for lo, hi in _consistency_ranges(old_size, new_size)]


# --- which subtrees a proof is made of ----------------------------------------------


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form PATH(index, D[0:size]), bottom-up.

    Follows the RFC recursion top-down (each level contributes the hash of the
    half not containing the leaf), then reverses, since the proof lists the
    leaf's sibling first.
    """
    lo, hi = 0, size
    out: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose hashes form PROOF(old_size, D[0:new_size]) (RFC 6962 §2.1.2).

    SUBPROOF(m, D[lo:hi], b) recurses into one half and appends the other half's
    hash; the recursion ends at a subtree of exactly m leaves, whose hash is
    included unless it is the old tree itself (b true), which the verifier has.
    """
    if old_size == new_size:
        return []
    lo, hi, m, whole_old_tree = 0, new_size, old_size, True
    appended: list[tuple[int, int]] = []
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            appended.append((lo + k, hi))
            hi = lo + k
        else:
            appended.append((lo, lo + k))
            lo += k
            m -= k
            whole_old_tree = False
    out = [] if whole_old_tree else [(lo, hi)]
    out.extend(reversed(appended))
    return out


def _range_coords(lo: int, hi: int) -> list[Coord]:
    """Perfect subtrees covering [lo, hi), left to right.

    Only for the ranges the RFC recursion produces: lo is a multiple of a power of
    two at least hi - lo, so the decomposition follows the bits of hi - lo.
    """
    out: list[Coord] = []
    pos, n = lo, hi - lo
    while n > 0:
        level = n.bit_length() - 1
        out.append((level, pos >> level))
        pos += 1 << level
        n -= 1 << level
    return out


def _flatten(ranges: Iterable[tuple[int, int]]) -> list[Coord]:
    return [c for lo, hi in ranges for c in _range_coords(lo, hi)]


def nodes_for_root(size: int) -> list[Coord]:
    """Stored nodes a tree head of `size` leaves is computed from (popcount(size) of them)."""
    if size < 0:
        raise ValueError(f"negative tree size {size}")
    return _range_coords(0, size)


def nodes_for_inclusion(index: int, size: int) -> list[Coord]:
    """Stored nodes an inclusion proof for leaf `index` in a tree of `size` needs: O(log n)."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    return _flatten(_inclusion_ranges(index, size))


def nodes_for_consistency(old_size: int, new_size: int) -> list[Coord]:
    """Stored nodes a consistency proof between two sizes needs: O(log n)."""
    _check_sizes(old_size, new_size, new_size)
    return _flatten(_consistency_ranges(old_size, new_size))


def nodes_for_append(size_before: int) -> list[Coord]:
    """Stored nodes that appending leaf number `size_before` combines with (the right border)."""
    if size_before < 0:
        raise ValueError(f"negative tree size {size_before}")
    out: list[Coord] = []
    level = 0
    while size_before >> level & 1:
        out.append((level, (size_before >> level) - 1))
        level += 1
    return out


# --- computing from stored nodes ------------------------------------------------------


class MissingNodesError(KeyError):
    """The node store lacks nodes a computation needs: the tree is incomplete or corrupt."""

    def __init__(self, missing: Sequence[Coord]) -> None:
        super().__init__(f"missing tree nodes (level, index): {list(missing)[:8]}")
        self.missing: tuple[Coord, ...] = tuple(missing)


class NodeReader(Protocol):
    """Where perfect-subtree hashes are stored: a database table, or `MemoryTree`.

    One call takes every coordinate a computation needs, so a database answers
    it with a single query. Absent coordinates are simply left out of the result.
    """

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]: ...


STRATUM = 4
"""A node store keeps the levels that are multiples of this (level 0, the leaves, among
them); a node between two such levels is folded from at most 2**(STRATUM - 1) nodes of the
kept level below it. Keeping every level cost about one stored node per leaf (the levels
above 0 sum to n - 1 nodes); keeping one level in four costs one per 15 leaves."""

Span = tuple[int, int, int]
"""(level, first index, last index): a run of stored nodes on one kept level."""


def is_kept_level(level: int) -> bool:
    """Whether a stratified node store keeps the nodes of `level`."""
    return level % STRATUM == 0


def _kept_span(coord: Coord) -> Span:
    """The stored nodes `coord` is folded from: itself when its level is kept."""
    level, index = coord
    base = level - level % STRATUM
    depth = level - base
    return base, index << depth, ((index + 1) << depth) - 1


def kept_spans(coords: Iterable[Coord]) -> list[Span]:
    """The runs of kept-level nodes the given nodes are folded from, without repeats."""
    return sorted(set(map(_kept_span, coords)))


def nodes_from_kept(coords: Sequence[Coord], kept: Mapping[Coord, bytes]) -> dict[Coord, bytes]:
    """`NodeReader` results from a stratified store: each requested node whose kept nodes
    (`kept_spans`) are all in `kept`, folded from them; the others are left out."""
    out: dict[Coord, bytes] = {}
    for coord in coords:
        base, first, last = _kept_span(coord)
        row = [kept.get((base, i)) for i in range(first, last + 1)]
        if any(h is None for h in row):
            continue
        hashes = cast(list[bytes], row)
        while len(hashes) > 1:  # a perfect subtree: pair by pair, level by level
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        out[coord] = hashes[0]
    return out


def _lookup(coords: Sequence[Coord], nodes: Mapping[Coord, bytes]) -> list[bytes]:
    missing = [c for c in coords if c not in nodes]
    if missing:
        raise MissingNodesError(missing)
    return [nodes[c] for c in coords]


def root_from_nodes(size: int, nodes: Mapping[Coord, bytes]) -> bytes:
    """Tree head of `size` leaves from the nodes `nodes_for_root(size)` names."""
    coords = nodes_for_root(size)
    if not coords:
        return EMPTY_ROOT
    return _fold(_lookup(coords, nodes))


def _proof_from_ranges(
    ranges: Sequence[tuple[int, int]], nodes: Mapping[Coord, bytes]
) -> list[bytes]:
    return [_fold(_lookup(_range_coords(lo, hi), nodes)) for lo, hi in ranges]


def inclusion_proof_from_nodes(index: int, size: int, nodes: Mapping[Coord, bytes]) -> list[bytes]:
    """Inclusion proof from the nodes `nodes_for_inclusion(index, size)` names."""
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    return _proof_from_ranges(_inclusion_ranges(index, size), nodes)


def consistency_proof_from_nodes(
    old_size: int, new_size: int, nodes: Mapping[Coord, bytes]
) -> list[bytes]:
    """Consistency proof from the nodes `nodes_for_consistency(old_size, new_size)` names."""
    _check_sizes(old_size, new_size, new_size)
    return _proof_from_ranges(_consistency_ranges(old_size, new_size), nodes)


def read_root(reader: NodeReader, size: int) -> bytes:
    """Tree head of `size` leaves with one `get_nodes` call."""
    return root_from_nodes(size, reader.get_nodes(nodes_for_root(size)))


def read_inclusion_proof(reader: NodeReader, index: int, size: int) -> list[bytes]:
    """Inclusion proof with one `get_nodes` call."""
    return inclusion_proof_from_nodes(
        index, size, reader.get_nodes(nodes_for_inclusion(index, size))
    )


def read_consistency_proof(reader: NodeReader, old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof with one `get_nodes` call."""
    return consistency_proof_from_nodes(
        old_size, new_size, reader.get_nodes(nodes_for_consistency(old_size, new_size))
    )


def nodes_completed_by_append(
    size_before: int, leaf: bytes, reader: NodeReader
) -> list[tuple[Coord, bytes]]:
    """Nodes to store when leaf hash `leaf` becomes leaf number `size_before`.

    The first is the leaf itself at (0, size_before); each further one is a
    perfect subtree the new leaf completes. Reads only `nodes_for_append`.
    For appending many leaves at once, `CompactRange` avoids a read per leaf.
    """
    border = nodes_for_append(size_before)
    left = _lookup(border, reader.get_nodes(border))
    out: list[tuple[Coord, bytes]] = [((0, size_before), leaf)]
    acc = leaf
    for (level, index), h in zip(border, left, strict=True):
        acc = node_hash(h, acc)
        out.append(((level + 1, index >> 1), acc))
    return out


class CompactRange:
    """The right border of a tree: enough to append leaves and compute the head.

    A writer loads it once (`from_reader`, popcount(size) nodes), appends a batch
    of leaves, stores the nodes each append reports, and signs `root()`. It holds
    at most 64 hashes whatever the tree size.
    """

    def __init__(self, size: int, border: Sequence[bytes]) -> None:
        """`border` holds the hashes of `nodes_for_root(size)`, left to right."""
        if len(border) != len(nodes_for_root(size)):
            raise ValueError(f"a tree of size {size} has {size.bit_count()} border nodes")
        self._size = size
        self._border = list(border)

    @classmethod
    def from_reader(cls, reader: NodeReader, size: int) -> CompactRange:
        """Load the border of the tree of `size` leaves with one `get_nodes` call."""
        coords = nodes_for_root(size)
        return cls(size, _lookup(coords, reader.get_nodes(coords)))

    @property
    def size(self) -> int:
        return self._size

    def root(self) -> bytes:
        return _fold(self._border) if self._border else EMPTY_ROOT

    def append(self, leaf: bytes) -> list[tuple[Coord, bytes]]:
        """Add a leaf hash; return the nodes it completes, the leaf first (as for storage)."""
        n = self._size
        out: list[tuple[Coord, bytes]] = [((0, n), leaf)]
        acc = leaf
        level = 0
        while n >> level & 1:
            acc = node_hash(self._border.pop(), acc)
            level += 1
            out.append(((level, n >> level), acc))
        self._border.append(acc)
        self._size = n + 1
        return out


class MemoryTree:
    """Every perfect-subtree node of a growing tree, in memory.

    The in-memory twin of the database node table: tests compare it with the
    list functions, the benchmark times it, and `audit verify` can rebuild a tree
    in it. Each level is one bytearray of concatenated 32-byte hashes, so a
    million leaves cost about 64 MB rather than millions of bytes objects.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[Coord, bytes]]:
        """Add a leaf hash; return the nodes it completes, the leaf first."""
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, got {len(leaf)}")
        index = self._size
        out: list[tuple[Coord, bytes]] = [((0, index), leaf)]
        levels = self._levels
        row = levels[0]
        row += leaf
        level = 0
        while index & 1:
            h = hashlib.sha256(b"\x01" + row[-2 * HASH_SIZE :]).digest()
            level += 1
            index >>= 1
            if level == len(levels):
                levels.append(bytearray())
            row = levels[level]
            row += h
            out.append(((level, index), h))
        self._size += 1
        return out

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def get_node(self, coord: Coord) -> bytes | None:
        """The stored hash at `coord`, or None if that subtree is not complete yet."""
        level, index = coord
        if level < 0 or index < 0 or level >= len(self._levels):
            return None
        start = index * HASH_SIZE
        row = self._levels[level]
        if start + HASH_SIZE > len(row):
            return None
        return bytes(row[start : start + HASH_SIZE])

    def get_nodes(self, coords: Sequence[Coord]) -> dict[Coord, bytes]:
        """`NodeReader`: the requested nodes that exist."""
        out: dict[Coord, bytes] = {}
        for c in coords:
            h = self.get_node(c)
            if h is not None:
                out[c] = h
        return out

    def leaf_hashes(self) -> list[bytes]:
        row = self._levels[0]
        return [bytes(row[i : i + HASH_SIZE]) for i in range(0, len(row), HASH_SIZE)]

    def _size_or_current(self, size: int | None) -> int:
        if size is None:
            return self._size
        if not 0 <= size <= self._size:
            raise ValueError(f"tree size {size} is outside 0..{self._size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Head of the tree at `size` leaves (default: all), from O(log n) nodes."""
        return read_root(self, self._size_or_current(size))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return read_inclusion_proof(self, index, self._size_or_current(size))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        return read_consistency_proof(self, old_size, self._size_or_current(new_size))

    def compact_range(self) -> CompactRange:
        """An appender for the current tree, as a database writer would load one."""
        return CompactRange.from_reader(self, self._size)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_SIZE


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def _as_hashes(proof: object) -> list[bytes] | None:
    """The proof as a list of 32-byte hashes, or None if it is anything else."""
    if isinstance(proof, str | bytes | bytearray) or not isinstance(proof, Sequence):
        return None
    if len(proof) > _MAX_PROOF_LEN:
        return None
    items: list[bytes] = []
    for p in proof:
        if not _is_hash(p):
            return None
        items.append(bytes(p))
    return items


def _shift_until_odd(fn: int, sn: int) -> tuple[int, int]:
    """Right-shift fn and sn equally until LSB(fn) is set or fn is 0."""
    while fn and not fn & 1:
        fn >>= 1
        sn >>= 1
    return fn, sn


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether `proof` shows leaf hash `leaf_hash` at `index` in the tree `(tree_size, root)`.

    RFC 9162 §2.1.3.2, step by step. Any malformed input (index >= tree_size,
    hashes that are not 32 bytes, a proof too long or too short) gives False.
    """
    if not (_is_size(index) and _is_size(tree_size)) or index >= tree_size:
        return False
    if not (_is_hash(leaf_hash) and _is_hash(root)):
        return False
    path = _as_hashes(proof)
    if path is None:
        return False
    fn, sn = index, tree_size - 1
    r = bytes(leaf_hash)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            fn, sn = _shift_until_odd(fn, sn)
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(r, bytes(root))


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether `proof` shows the tree `(old_size, old_root)` is a prefix of `(new_size, new_root)`.

    RFC 9162 §2.1.4.2 for 0 < old_size < new_size. Edge cases follow the
    transparency-dev/merkle conformance vectors: equal sizes need an empty proof
    and equal roots; old_size 0 is rejected, since consistency with the empty
    tree proves nothing. Malformed input gives False.
    """
    if not (_is_size(old_size) and _is_size(new_size)):
        return False
    path = _as_hashes(proof)
    if path is None or old_size == 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return (
            not path
            and isinstance(old_root, bytes | bytearray)
            and isinstance(new_root, bytes | bytearray)
            and hmac.compare_digest(bytes(old_root), bytes(new_root))
        )
    if not (path and _is_hash(old_root) and _is_hash(new_root)):
        return False
    if old_size & (old_size - 1) == 0:
        path.insert(0, bytes(old_root))
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            fn, sn = _shift_until_odd(fn, sn)
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return (
        sn == 0
        and hmac.compare_digest(fr, bytes(old_root))
        and hmac.compare_digest(sr, bytes(new_root))
    )
