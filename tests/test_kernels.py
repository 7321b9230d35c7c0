"""Event assignment's compiled loops (``warehouse/_kernels.c``) against their references: the
near-duplicate scan against the plain comparison of every live row, the sketches against
datasketch's own MinHash. Every assignment decision rests on these being exact."""
import numpy as np
import pytest

from sources.normalize import fold
from warehouse import _kernels, neardup
from warehouse.cluster import _AGREE, _LOW, _LOW_AGREE, _Pool

TEXTS = [
    "", "a", "ab", "abc", "  ", "3", "عين", "ـ",
    "Drone attack targets US forces at a base in eastern Syria, officials said on Monday",
    "UPDATE 1-Drone attack targets US forces at a base in eastern Syria, officials said on Monday",
    "هجوم بطائرة مسيّرة على قاعدة عين الأسد التي تضم قوات أمريكية",
    "هجوم بطائرة مسيرة يستهدف قاعدة عين الاسد التي تضم قوات أميركية",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "𝒜𝒷𝒸 emoji 🚀🚀🚀 and astral 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "x" * 5000,
]


def test_signatures_are_datasketchs_minhash_of_every_text():
    folded = [fold(t) for t in TEXTS] + TEXTS  # folded and raw: any code points
    rng = np.random.default_rng(5)
    words = [fold(w) for w in "rocket drone base قاعدة صواريخ هجوم attack US forces 12 14 لم not".split()]
    folded += [" ".join(rng.choice(words, rng.integers(1, 40))) for _ in range(300)]
    got = neardup.signatures(folded)
    assert got.dtype == neardup._DTYPE and got.shape == (len(folded), neardup.NUM_PERM)
    want = np.array([neardup.sketch(t).hashvalues for t in folded], dtype=neardup._DTYPE)
    assert np.array_equal(got, want)
    # one text at a time, and many texts at once across the batches signatures cuts them into
    assert np.array_equal(np.vstack([neardup.signatures([t]) for t in folded[:40]]), want[:40])
    many = folded * (neardup._TEXTS // len(folded) + 2)
    assert np.array_equal(neardup.signatures(many), np.vstack([want] * (neardup._TEXTS // len(folded) + 2)))


def _reference(pool: _Pool, query: np.ndarray) -> tuple[list[int], list[float]]:
    """The scan without its first pass or compiled loop: every live row compared in full."""
    n = len(pool.members)
    agree = np.count_nonzero(pool.matrix[:n] == query, axis=1)
    rows = np.flatnonzero((agree >= _AGREE) & pool.alive[:n])
    return rows.tolist(), (agree[rows] / neardup.NUM_PERM).tolist()


@pytest.mark.parametrize("size", [1, 7, 64, 900, 2048])
def test_pool_scan_is_the_full_comparison_of_every_live_row(size):
    """Rows at, just below and far above the threshold, rows whose agreements lie mostly
    outside the first pass's values, rows whose low bytes agree where the values do not, and
    dead rows (removed members) among them: the compiled scan finds exactly the live rows a
    full comparison finds, in the same order, with the same similarities."""
    rng = np.random.default_rng(size)
    pool = _Pool()
    queries = rng.integers(0, 2**32, size=(6, neardup.NUM_PERM), dtype=np.uint64).astype(neardup._DTYPE)
    for i in range(size):
        q = queries[i % len(queries)]
        row = rng.integers(0, 2**32, size=neardup.NUM_PERM, dtype=np.uint64).astype(neardup._DTYPE)
        kind = i % 5
        if kind < 4:
            agree = int(rng.choice([_AGREE - 1, _AGREE, _AGREE + 1, rng.integers(0, neardup.NUM_PERM + 1)]))
            at = np.arange(neardup.NUM_PERM)[::-1][:agree] if kind == 0 else rng.choice(neardup.NUM_PERM, agree, replace=False)
            row[at] = q[at]
            if kind == 2:  # every other value differs only above its low byte: only the full comparison tells
                rest = np.setdiff1d(np.arange(neardup.NUM_PERM), at)
                row[rest] = q[rest] ^ 0x100
        pool.add(f"m{i:05d}", f"e{i % 97}", row, "")
    for i in range(0, size, 3):  # dead rows, fewer than a compaction needs
        if len(pool.members) - pool.live + 1 > max((pool.live - 1) // 4, 64):
            break
        pool.remove(f"m{i:05d}")
    assert pool.live < len(pool.members) or size == 1
    for q in [*queries, pool.matrix[0].copy()]:
        rows, sims = pool.similar(q)
        assert (rows.tolist(), sims.tolist()) == _reference(pool, q)
    assert sum(len(pool.similar(q)[0]) for q in queries) > 0 or size < 7


def test_the_scan_counts_the_first_pass_exactly():
    """The compiled first pass lets a row through at exactly ``_LOW_AGREE`` agreeing low bytes of
    the first ``_LOW`` values (the fewest a row of ``_AGREE`` values can have there: the bound
    the scan rests on), and the full comparison keeps it at exactly ``_AGREE`` values, not one
    fewer."""
    cap, perm = 16, neardup.NUM_PERM
    query = np.arange(1, perm + 1, dtype=np.uint32) * 0x01010101
    matrix = np.zeros((cap, perm), dtype=np.uint32)  # no value of the query is 0
    # row 0: _LOW_AGREE of the first values agree, and all the others: _AGREE in all; row 1: one
    # of the first fewer; row 2: _AGREE - 1 values; row 3: as row 0, but dead
    assert _LOW_AGREE + (perm - _LOW) == _AGREE
    for r, (first, total) in enumerate([(_LOW_AGREE, _AGREE), (_LOW_AGREE - 1, _AGREE - 1), (_LOW_AGREE, _AGREE - 1), (_LOW_AGREE, _AGREE)]):
        at = np.r_[np.arange(first), np.arange(_LOW, _LOW + total - first)] if total - first <= perm - _LOW else np.arange(total)
        matrix[r, at] = query[at]
    low = np.ascontiguousarray(matrix[:, :_LOW].T.astype(np.uint8))
    alive = np.array([True, True, True, False] + [True] * (cap - 4))
    rows, agree = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
    found = _kernels.similar(low, matrix, alive, query, cap, _LOW_AGREE, _AGREE, np.empty(cap, dtype=np.uint8), rows, agree)
    assert (rows[:found].tolist(), agree[:found].tolist()) == ([0], [_AGREE])


def test_the_kernels_refuse_arrays_of_the_wrong_kind():
    """A wrong dtype or size is an error, never memory read past an array's end."""
    hv = np.zeros(neardup.NUM_PERM, dtype=np.uint32)
    with pytest.raises(ValueError):
        _kernels.minima(np.zeros(3, dtype=np.uint64), np.zeros(1, dtype=np.int64), hv, hv, np.zeros((1, neardup.NUM_PERM), dtype=np.uint32))
    with pytest.raises(ValueError):  # a text with no hash
        _kernels.minima(np.zeros(3, dtype=np.uint32), np.array([0, 3], dtype=np.int64), hv, hv, np.zeros((2, neardup.NUM_PERM), dtype=np.uint32))
    with pytest.raises(ValueError):  # out too small
        _kernels.minima(np.zeros(3, dtype=np.uint32), np.array([0, 1], dtype=np.int64), hv, hv, np.zeros((1, neardup.NUM_PERM), dtype=np.uint32))
    pool = _Pool()
    pool.add("m", "e", hv, "")
    with pytest.raises(ValueError):  # n beyond the matrix
        _kernels.similar(pool.low, pool.matrix, pool.alive, hv, len(pool.matrix) + 1, _LOW_AGREE, _AGREE, pool._acc, pool._rows, pool._agree)
    with pytest.raises(ValueError):
        _kernels.similar(pool.low, pool.matrix.astype(np.uint64), pool.alive, hv, 1, _LOW_AGREE, _AGREE, pool._acc, pool._rows, pool._agree)


def test_pool_rows_hold_their_values_and_low_bytes_through_growth_and_compaction():
    """``_kernels.put`` writes a row's values and its column of low bytes; after the pool
    grows and compacts, every live member's row still holds its own sketch."""
    rng = np.random.default_rng(3)
    pool, sketches = _Pool(), {}
    for i in range(700):
        sketches[f"m{i}"] = rng.integers(0, 2**32, size=neardup.NUM_PERM, dtype=np.uint64).astype(neardup._DTYPE)
        pool.add(f"m{i}", f"e{i}", sketches[f"m{i}"], "")
        if i % 3 == 0:
            pool.remove(f"m{i // 2}") if f"m{i // 2}" in pool.row_of else None
    n = len(pool.members)
    assert n < 700  # compacted at least once
    for m, row in pool.row_of.items():
        assert np.array_equal(pool.matrix[row], sketches[m])
    assert np.array_equal(pool.low[:, :n], pool.matrix[:n, :_LOW].T.astype(np.uint8))
    with pytest.raises(ValueError):  # a row beyond the matrix
        _kernels.put(pool.low, pool.matrix, len(pool.matrix), sketches["m1"])
