"""Near-duplicate text: MinHash sketches and LSH over folded text, Arabic and English alike.

A report is sketched once (``sketch``): the character 3-grams of its folded title and
summary (``sources.normalize.fold``, so diacritics, hamza forms, tatweel and case do not
matter) go into a 128-permutation MinHash (datasketch). Event assignment
(``warehouse.cluster``) looks for a report's near-duplicates among the reports of the last
36 hours: one compiled comparison with all of them (``warehouse/_kernels.c``), or a MinHash
LSH index when they are many.

Two texts are near-duplicates when their estimated Jaccard similarity is at least
``THRESHOLD`` and ``same_claim`` holds: they carry the same numbers and the same negation
or reversal words. Character 3-grams were chosen, and 0.5 set, by measuring on the ANS
corpus of real Arabic headline pairs (``marsad dedupe-eval --ans``): paraphrases ('agree')
against look-alikes ('disagree') that reuse most words but say something else. Look-alikes
are exactly what text similarity cannot tell apart ("mortar attack on X" vs "on Y"), which
is why event assignment (``warehouse.events``) never joins on text alone when the reports
name different places.
"""
from __future__ import annotations

import re

import numpy as np
from datasketch import MinHash
from datasketch.hashfunc import sha1_hash32
from datasketch.minhash import _SCHEME_WIDTHS, _fmix

from sources.normalize import fold
from warehouse import _kernels

NUM_PERM = 128
SHINGLE = 3
THRESHOLD = 0.5
_PROTO = MinHash(num_perm=NUM_PERM)
_DTYPE, _SCHEME = _PROTO.hashvalues.dtype, _PROTO.scheme  # LSH bands hash these bytes: keep one dtype
# Drawing the permutations costs more than sketching a headline: draw them once, share them.
_PERMUTATIONS = _PROTO.permutations
_A, _B = (np.ascontiguousarray(p) for p in _PERMUTATIONS)  # as the compiled minima read them (``_signatures``)

# Words that reverse a claim ("denies", "halt", "لم", "نفي"); folded forms. Two reports
# that differ in them are not copies of each other however alike the rest is.
_REVERSAL = frozenset(
    fold(w)
    for w in (
        "not no never without denies denied deny denial halt halted suspends suspended rejects rejected "
        "لا لم لن ليس ليست عدم غير دون بدون نفي ينفي تنفي نفت نفى رفض يرفض ترفض رفضت توقف وقف يوقف تعليق إلغاء يلغي تلغي"
    ).split()
)
_NUMBER = re.compile(r"\d+")
_WIRE_PREFIX = re.compile(r"^(?:(?:update|corrected|refile|wrapup) \d* ?)+")  # "UPDATE 2-...": not a claim


def shingles(folded: str) -> set[bytes]:
    """Character 3-grams of folded text (word boundaries included as spaces)."""
    s = f" {folded} "
    return {s[i : i + SHINGLE].encode("utf-8") for i in range(max(1, len(s) - SHINGLE + 1))}


def _minhash(hashvalues=None) -> MinHash:
    return MinHash(num_perm=NUM_PERM, permutations=_PERMUTATIONS, hashvalues=hashvalues, scheme=_SCHEME, hashfunc=_hashed)


def _hashed(value: int) -> int:
    return value  # the shingles come hashed already (``_shingle_hashes``)


# datasketch's own shingle hash (sha1_hash32), remembered per shingle: news text reuses a
# small set of 3-grams, and the sha1 call costs more than the rest of a sketch.
_HASHES: dict[bytes, int] = {}
_HASHES_MAX = 500_000


def _shingle_hashes(items: set[bytes]) -> list[int]:
    cache = _HASHES
    if len(cache) > _HASHES_MAX:
        cache.clear()
    out = []
    for item in items:
        h = cache.get(item)
        if h is None:
            h = cache[item] = sha1_hash32(item)
        out.append(h)
    return out


def signatures(folded: list[str]) -> np.ndarray:
    """The sketches of many texts as one ``(len(folded), NUM_PERM)`` array, the same values as
    ``sketch(t).hashvalues`` for each: the shingle hashes of all texts (``_all_gram_hashes``)
    are permuted and each text's minima taken in one compiled loop (``_signatures``), instead
    of one MinHash object (and its arrays) per text."""
    out = np.empty((len(folded), NUM_PERM), dtype=_DTYPE)
    for first in range(0, len(folded), _TEXTS):  # a bounded number of texts' 3-grams in memory at a time
        _signatures(folded[first : first + _TEXTS], out[first : first + _TEXTS])
    return out


_TEXTS = 4_096


def _signatures(folded: list[str], out: np.ndarray) -> None:
    """Each text's minima of its pre-mixed 3-gram hashes under every permutation, in one
    compiled loop (``warehouse/_kernels.c``: the same uint32 arithmetic as numpy's
    ``minimum.reduceat`` of ``a * h + b`` over a (permutations, 3-grams) block, with no
    block in memory)."""
    hashes, starts = _all_gram_hashes(folded)
    _kernels.minima(_mix(hashes), np.ascontiguousarray(starts, dtype=np.int64), _A, _B, out)


def _all_gram_hashes(folded: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, starts): the hashes of the character 3-grams of every text, one after another
    (a text's repeated 3-grams repeated: a minimum does not care), and where each text's
    begin. The 3-grams are cut from the texts' code points as integers in numpy, and each
    distinct 3-gram is hashed (datasketch's ``sha1_hash32`` of its UTF-8 bytes, remembered)
    once, not once per occurrence. Texts too short for one 3-gram go through ``_gram_hashes``."""
    padded = [f" {t} " for t in folded]
    lens = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    if lens.min() < SHINGLE:  # an empty text: its one shingle is two spaces
        short = np.flatnonzero(lens < SHINGLE).tolist()
        long = [t for t, n in zip(folded, lens.tolist()) if n >= SHINGLE]
        hashes, starts = _all_gram_hashes(long) if long else (np.empty(0, dtype=_DTYPE), np.empty(0, dtype=np.int64))
        ends = np.append(starts[1:], len(hashes)).tolist()
        pieces, k = [], 0
        for i, t in enumerate(folded):
            if short and short[0] == i:
                short.pop(0)
                pieces.append(np.array(_gram_hashes(t), dtype=_DTYPE))
            else:
                pieces.append(hashes[int(starts[k]) : ends[k]])
                k += 1
        counts = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        return np.concatenate(pieces), np.cumsum(counts) - counts
    points = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    grams = (points[:-2] << np.uint64(42)) | (points[1:-1] << np.uint64(21)) | points[2:]
    keep = np.ones(len(grams) + 2, dtype=bool)  # no 3-gram that runs into the next text
    ends = np.cumsum(lens)
    keep[ends - 1] = keep[ends - 2] = False
    grams = grams[keep[:-2]]
    distinct, inverse = np.unique(grams, return_inverse=True)
    cache = _CODES
    values = [cache.get(c) for c in distinct.tolist()]
    if None in values:
        if len(cache) > _HASHES_MAX:
            cache.clear()
        values = [cache[c] if c in cache else cache.setdefault(c, sha1_hash32(_gram_text(c).encode("utf-8")))
                  for c in distinct.tolist()]
    counts = lens - (SHINGLE - 1)
    return np.array(values, dtype=_DTYPE)[inverse.ravel()], np.cumsum(counts) - counts


_CODES: dict[int, int] = {}  # as _HASHES, keyed by the 3-gram's three code points as one integer


def _gram_text(code: int) -> str:
    return chr(code >> 42) + chr((code >> 21) & 0x1FFFFF) + chr(code & 0x1FFFFF)


def _mix(hv: np.ndarray) -> np.ndarray:
    """datasketch's pre-mix of the hash values for the MinHash scheme in use (``_SCHEME``)."""
    if _SCHEME == "legacy":  # pragma: no cover - datasketch < 1.7; permutations are (h*a+b) % p there
        raise RuntimeError("datasketch's legacy MinHash scheme is not supported by neardup.signatures")
    return _fmix(hv, _SCHEME_WIDTHS[_SCHEME])


_GRAMS: dict[str, int] = {}  # as _HASHES, keyed by the 3-gram itself (no encoding per lookup)


def _gram_hashes(folded: str) -> list[int]:
    """``_shingle_hashes(shingles(folded))`` in another order (a MinHash does not care)."""
    s = f" {folded} "
    grams = {s[i : i + SHINGLE] for i in range(max(1, len(s) - SHINGLE + 1))}
    cache = _GRAMS
    out = [cache.get(g) for g in grams]
    if None in out:
        if len(cache) > _HASHES_MAX:
            cache.clear()
        out = [cache.get(g) or cache.setdefault(g, sha1_hash32(g.encode("utf-8"))) for g in grams]
    return out


def sketch(folded: str) -> MinHash:
    m = _minhash()
    m.update_batch(_shingle_hashes(shingles(folded)))
    return m


def signature(folded: str) -> list[int]:
    """The sketch as plain integers."""
    return [int(v) for v in sketch(folded).hashvalues]


def from_signature(values) -> MinHash:
    return _minhash(np.asarray(values, dtype=_DTYPE))


def similarity(a: MinHash, b: MinHash) -> float:
    """Estimated Jaccard similarity of the two texts' shingle sets."""
    return float(a.jaccard(b))


def claim(folded: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """What two copies of one claim must share: its numbers and its reversal words.
    Computed once per text; ``same_claim`` compares two of these."""
    folded = _WIRE_PREFIX.sub("", folded)
    return tuple(sorted(_NUMBER.findall(folded))), frozenset(w for w in folded.split() if w in _REVERSAL)


def same_claim(folded_a: str, folded_b: str) -> bool:
    """Same numbers and same reversal words: "3 killed" is not "5 killed", "denies" not "claims"."""
    return claim(folded_a) == claim(folded_b)


def near_duplicates(folded_a: str, folded_b: str, threshold: float = THRESHOLD) -> bool:
    """The pairwise decision (what event assignment applies to each candidate report)."""
    return similarity(sketch(folded_a), sketch(folded_b)) >= threshold and same_claim(folded_a, folded_b)
