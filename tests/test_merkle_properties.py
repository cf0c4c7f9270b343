"""Properties of the Merkle tree code: proofs verify, tampering never does.

An exhaustive sweep covers every small tree shape (sizes 1..64, every index and
every pair of sizes); Hypothesis samples larger trees up to 300 leaves. The
node-based functions, which the database-backed log uses, are checked against
the plain list functions, which follow the RFC definitions literally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.merkle import (
    EMPTY_ROOT,
    STRATUM,
    CompactRange,
    Coord,
    MemoryTree,
    MissingNodesError,
    consistency_proof,
    consistency_proof_from_nodes,
    inclusion_proof,
    inclusion_proof_from_nodes,
    is_kept_level,
    kept_spans,
    leaf_hash,
    node_hash,
    nodes_completed_by_append,
    nodes_for_append,
    nodes_for_consistency,
    nodes_for_inclusion,
    nodes_for_root,
    nodes_from_kept,
    read_consistency_proof,
    read_inclusion_proof,
    read_root,
    root_from_nodes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

MAX_SIZE = 300
EXHAUSTIVE = 64
LEAVES = [leaf_hash(f"entry {i}".encode()) for i in range(MAX_SIZE)]
TREE = MemoryTree(LEAVES)
ROOTS = [root_hash(LEAVES[:n]) for n in range(MAX_SIZE + 1)]

FAST = settings(max_examples=150, deadline=None)


def _flip(proof: Sequence[bytes], which: int, bit: int) -> list[bytes]:
    out = list(proof)
    h = bytearray(out[which])
    h[bit // 8] ^= 1 << (bit % 8)
    out[which] = bytes(h)
    return out


class CountingReader:
    """A NodeReader that counts calls, so tests can check proofs cost one batched read."""

    def __init__(self, tree: MemoryTree) -> None:
        self.tree = tree
        self.calls = 0
        self.nodes_read = 0

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]:
        self.calls += 1
        self.nodes_read += len(coords)
        return self.tree.get_nodes(coords)


# --- hashing basics ---------------------------------------------------------------------


def test_hash_definitions() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    left, right = b"L" * 32, b"R" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert root_hash([]) == EMPTY_ROOT
    assert root_hash(LEAVES[:1]) == LEAVES[0]
    # The RFC 6962 split: largest power of two strictly below n.
    a, b, c, d, e = LEAVES[:5]
    assert root_hash([a, b, c]) == node_hash(node_hash(a, b), c)
    assert root_hash([a, b, c, d]) == node_hash(node_hash(a, b), node_hash(c, d))
    assert root_hash([a, b, c, d, e]) == node_hash(root_hash([a, b, c, d]), e)


def test_rfc6962_reference_root() -> None:
    """The 8-leaf tree from the RFC 6962 test data (as used by the vectors' happy paths)."""
    entries = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        bytes(range(0x40, 0x44)),
        bytes(range(0x50, 0x58)),
        bytes(range(0x60, 0x70)),
    ]
    root = root_hash([leaf_hash(e) for e in entries])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


# --- exhaustive sweep over small trees ----------------------------------------------------


def _check_inclusion(index: int, size: int) -> None:
    proof = inclusion_proof(LEAVES, index, size)
    root = ROOTS[size]
    assert proof == TREE.inclusion_proof(index, size)
    assert verify_inclusion(LEAVES[index], index, size, proof, root)
    assert not verify_inclusion(LEAVES[(index + 1) % MAX_SIZE], index, size, proof, root)
    assert not verify_inclusion(LEAVES[index], index, size, proof, ROOTS[size - 1])
    for other in {0, index - 1, index + 1, index ^ 1, size - 1} - {index}:
        assert not verify_inclusion(LEAVES[index], other, size, proof, root)
    for which in range(len(proof)):
        assert not verify_inclusion(LEAVES[index], index, size, _flip(proof, which, 0), root)
    assert not verify_inclusion(LEAVES[index], index, size, [*proof, root], root)
    if proof:
        assert not verify_inclusion(LEAVES[index], index, size, proof[:-1], root)


def _check_consistency(old: int, new: int) -> None:
    proof = consistency_proof(LEAVES, old, new)
    assert proof == TREE.consistency_proof(old, new)
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    assert not verify_consistency(old, new, ROOTS[old - 1], ROOTS[new], proof)
    if old != new:
        assert not verify_consistency(old, new, ROOTS[old], ROOTS[new - 1], proof)
    for which in range(len(proof)):
        assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], _flip(proof, which, 7))
    assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], [*proof, ROOTS[new]])
    if proof:
        assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], proof[:-1])


def test_exhaustive_small_trees() -> None:
    for size in range(1, EXHAUSTIVE + 1):
        assert TREE.root(size) == ROOTS[size]
        for index in range(size):
            _check_inclusion(index, size)
        for old in range(1, size + 1):
            _check_consistency(old, size)


def test_proofs_bind_tree_sizes_small() -> None:
    """A proof verifies for another claimed size only if it *is* that size's proof."""
    for size in range(1, 25):
        for index in range(size):
            proof = inclusion_proof(LEAVES, index, size)
            for other in range(index + 1, 33):
                expect = proof == inclusion_proof(LEAVES, index, other)
                assert verify_inclusion(LEAVES[index], index, other, proof, ROOTS[other]) is expect
        for old in range(1, size + 1):
            proof = consistency_proof(LEAVES, old, size)
            for other in range(1, size + 1):
                expect = proof == consistency_proof(LEAVES, other, size)
                assert verify_consistency(other, size, ROOTS[other], ROOTS[size], proof) is expect


# --- Hypothesis over larger trees -------------------------------------------------------------


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(1, new)), new


@FAST
@given(size_and_index())
def test_inclusion_verifies_and_tampering_fails(case: tuple[int, int]) -> None:
    size, index = case
    _check_inclusion_sampled(index, size)


def _check_inclusion_sampled(index: int, size: int) -> None:
    proof = inclusion_proof(LEAVES, index, size)
    root = ROOTS[size]
    assert proof == TREE.inclusion_proof(index, size)
    assert verify_inclusion(LEAVES[index], index, size, proof, root)
    assert not verify_inclusion(leaf_hash(b"forged"), index, size, proof, root)
    assert not verify_inclusion(LEAVES[index], index ^ 1, size, proof, root)
    assert not verify_inclusion(LEAVES[index], index, size, proof, node_hash(root, root))
    for which in range(len(proof)):
        assert not verify_inclusion(LEAVES[index], index, size, _flip(proof, which, 255), root)


@FAST
@given(size_and_index(), st.integers(1, MAX_SIZE))
def test_inclusion_wrong_size(case: tuple[int, int], other: int) -> None:
    size, index = case
    if other <= index or other == size:
        return
    proof = inclusion_proof(LEAVES, index, size)
    expect = proof == inclusion_proof(LEAVES, index, other)
    assert verify_inclusion(LEAVES[index], index, other, proof, ROOTS[other]) is expect


@FAST
@given(two_sizes())
def test_consistency_verifies_and_tampering_fails(case: tuple[int, int]) -> None:
    old, new = case
    proof = consistency_proof(LEAVES, old, new)
    assert proof == TREE.consistency_proof(old, new)
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)
    assert not verify_consistency(old, new, leaf_hash(b"forged"), ROOTS[new], proof)
    assert not verify_consistency(old, new, ROOTS[old], leaf_hash(b"forged"), proof)
    for which in range(len(proof)):
        assert not verify_consistency(old, new, ROOTS[old], ROOTS[new], _flip(proof, which, 128))


@FAST
@given(two_sizes(), st.integers(1, MAX_SIZE))
def test_consistency_wrong_size(case: tuple[int, int], other: int) -> None:
    old, new = case
    proof = consistency_proof(LEAVES, old, new)
    if other != old and other <= new:
        expect = proof == consistency_proof(LEAVES, other, new)
        assert verify_consistency(other, new, ROOTS[other], ROOTS[new], proof) is expect
    if other != new and other >= old:
        expect = proof == consistency_proof(LEAVES, old, other)
        assert verify_consistency(old, other, ROOTS[old], ROOTS[other], proof) is expect


_garbage_int = st.one_of(
    st.integers(-5, MAX_SIZE), st.integers(min_value=2**63), st.integers(max_value=-1)
)
_garbage_bytes = st.one_of(
    st.binary(max_size=40), st.sampled_from(LEAVES[:8]), st.none(), st.text()
)
_garbage_proof = st.one_of(
    st.lists(_garbage_bytes, max_size=12), st.none(), st.binary(max_size=64), st.text()
)


@settings(max_examples=150, deadline=None)
@given(_garbage_bytes, _garbage_int, _garbage_int, _garbage_proof, _garbage_bytes)
def test_verifiers_never_raise(
    h: object, a: object, b: object, proof: object, root: object
) -> None:
    assert verify_inclusion(h, a, b, proof, root) in (True, False)  # type: ignore[arg-type]
    assert verify_consistency(a, b, h, root, proof) in (True, False)  # type: ignore[arg-type]


def test_verifier_edge_cases() -> None:
    root1 = ROOTS[1]
    assert verify_inclusion(LEAVES[0], 0, 1, [], root1)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(LEAVES[0], 1, 1, [], root1)
    assert not verify_inclusion(LEAVES[0], -1, 1, [], root1)
    assert not verify_inclusion(LEAVES[0], True, 2, [LEAVES[1]], ROOTS[2])
    assert not verify_inclusion(LEAVES[0][:31], 0, 1, [], root1)
    assert not verify_inclusion(LEAVES[0], 0, 2, [LEAVES[1][:31]], ROOTS[2])
    assert verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    assert not verify_consistency(4, 5, ROOTS[4], ROOTS[5], [])
    assert not verify_consistency(4, 5, ROOTS[4], ROOTS[5], [LEAVES[4]] * 200)


def test_list_functions_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(ValueError, match="exceeds"):
        inclusion_proof(LEAVES[:4], 0, 5)
    with pytest.raises(ValueError, match="0 < old_size"):
        consistency_proof(LEAVES, 0, 5)
    with pytest.raises(ValueError, match="0 < old_size"):
        consistency_proof(LEAVES, 6, 5)
    assert consistency_proof(LEAVES, 5, 5) == []


# --- node-based functions against the list functions -----------------------------------------


def test_memory_tree_matches_list_functions_everywhere() -> None:
    reader = CountingReader(TREE)
    for size in range(MAX_SIZE + 1):
        assert read_root(reader, size) == ROOTS[size]
        assert len(nodes_for_root(size)) == size.bit_count()
    assert reader.calls == MAX_SIZE + 1
    assert TREE.root() == ROOTS[MAX_SIZE]
    assert TREE.leaf_hashes() == LEAVES


@FAST
@given(size_and_index(), two_sizes())
def test_node_proofs_cost_one_read_of_log_n_nodes(
    incl: tuple[int, int], cons: tuple[int, int]
) -> None:
    size, index = incl
    reader = CountingReader(TREE)
    assert read_inclusion_proof(reader, index, size) == inclusion_proof(LEAVES, index, size)
    assert reader.calls == 1
    assert reader.nodes_read <= 2 * size.bit_length()
    old, new = cons
    reader = CountingReader(TREE)
    assert read_consistency_proof(reader, old, new) == consistency_proof(LEAVES, old, new)
    assert reader.calls == 1
    assert reader.nodes_read <= 3 * new.bit_length()


def test_node_coordinates_are_perfect_subtrees_inside_the_tree() -> None:
    for size in range(1, 70):
        for index in range(size):
            for level, i in nodes_for_inclusion(index, size):
                assert (i + 1) << level <= size
        for old in range(1, size + 1):
            for level, i in nodes_for_consistency(old, size):
                assert (i + 1) << level <= size


def test_from_nodes_reports_missing_nodes() -> None:
    small = MemoryTree(LEAVES[:10])
    with pytest.raises(MissingNodesError) as info:
        read_root(small, 12)
    assert (2, 2) in info.value.missing
    with pytest.raises(MissingNodesError):
        root_from_nodes(3, {})
    with pytest.raises(MissingNodesError):
        inclusion_proof_from_nodes(0, 2, {})
    with pytest.raises(MissingNodesError):
        consistency_proof_from_nodes(1, 3, {(0, 0): LEAVES[0]})
    with pytest.raises(ValueError, match="outside"):
        small.root(11)
    assert root_from_nodes(0, {}) == EMPTY_ROOT


def test_appends_report_exactly_the_nodes_that_complete() -> None:
    grown = MemoryTree()
    compact = CompactRange(0, [])
    all_nodes: dict[Coord, bytes] = {}
    for n, leaf in enumerate(LEAVES):
        # The nodes an append reads are the smallest subtrees of the right border.
        border = nodes_for_append(n)
        assert border[::-1] == nodes_for_root(n)[len(nodes_for_root(n)) - len(border) :]
        expected = nodes_completed_by_append(n, leaf, grown)
        assert grown.append(leaf) == expected
        assert compact.append(leaf) == expected
        for coord, h in expected:
            assert coord not in all_nodes
            all_nodes[coord] = h
        assert compact.size == grown.size == n + 1
        assert compact.root() == grown.root() == ROOTS[n + 1]
    # Every perfect subtree was reported exactly once: 2n - popcount(n) nodes.
    assert len(all_nodes) == 2 * MAX_SIZE - MAX_SIZE.bit_count()
    assert all_nodes == TREE.get_nodes(list(all_nodes))


def test_compact_range_resumes_from_stored_nodes() -> None:
    for size in (0, 1, 7, 64, 100, 255):
        partial = MemoryTree(LEAVES[:size])
        compact = partial.compact_range()
        assert compact.root() == ROOTS[size]
        for leaf in LEAVES[size : size + 40]:
            for coord, h in compact.append(leaf):
                assert TREE.get_node(coord) == h
        assert compact.root() == ROOTS[size + 40]
    with pytest.raises(ValueError, match="border"):
        CompactRange(3, [LEAVES[0]])


def test_memory_tree_rejects_non_hash_leaves() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        MemoryTree().append(b"short")
    assert MemoryTree().root() == EMPTY_ROOT
    assert TREE.get_node((0, MAX_SIZE)) is None
    assert TREE.get_node((-1, 0)) is None
    assert TREE.get_node((40, 0)) is None


# --- a node store that keeps one level in four -------------------------------------------


class KeptLevelsReader(CountingReader):
    """The database's reader in memory: only the kept levels are stored, one read of the
    spans they are folded from per call, and every node answered is folded from them."""

    def get_nodes(self, coords: Sequence[Coord]) -> Mapping[Coord, bytes]:
        self.calls += 1
        kept: dict[Coord, bytes] = {}
        for level, first, last in kept_spans(coords):
            assert is_kept_level(level)
            for index in range(first, last + 1):
                digest = self.tree.get_node((level, index))
                if digest is not None:
                    kept[(level, index)] = digest
        self.nodes_read += len(kept)
        return nodes_from_kept(coords, kept)


@FAST
@given(size_and_index(), two_sizes())
def test_proofs_and_heads_from_the_kept_levels_equal_the_rfc_s(
    incl: tuple[int, int], cons: tuple[int, int]
) -> None:
    size, index = incl
    reader = KeptLevelsReader(TREE)
    assert read_inclusion_proof(reader, index, size) == inclusion_proof(LEAVES, index, size)
    assert read_root(reader, size) == ROOTS[size]
    old, new = cons
    assert read_consistency_proof(reader, old, new) == consistency_proof(LEAVES, old, new)
    assert CompactRange.from_reader(reader, new).root() == ROOTS[new]
    assert reader.calls == 4
    # Each node needed is folded from at most 2**(STRATUM - 1) kept ones.
    assert reader.nodes_read <= 4 * 2 ** (STRATUM - 1) * 3 * new.bit_length()


@FAST
@given(st.integers(1, MAX_SIZE), st.integers(0, 8), st.integers(0, MAX_SIZE))
def test_a_node_is_answered_only_when_every_node_it_is_folded_from_is_stored(
    size: int, level: int, index: int
) -> None:
    tree = MemoryTree(LEAVES[:size])
    answered = KeptLevelsReader(tree).get_nodes([(level, index)])
    # MemoryTree keeps every level: it has the node exactly when the subtree is complete.
    expected = tree.get_node((level, index))
    assert answered.get((level, index)) == expected
