"""Near-duplicate text: MinHash sketches and LSH over folded text, Arabic and English alike.

A report is sketched once (``sketch``): the character 3-grams of its folded title and
summary (``sources.normalize.fold``, so diacritics, hamza forms, tatweel and case do not
matter) go into a 128-permutation MinHash (datasketch). Event assignment
(``warehouse.cluster``) looks for a report's near-duplicates among the reports of the last
36 hours: one numpy comparison with all of them, or a MinHash LSH index when they are many.

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

NUM_PERM = 128
SHINGLE = 3
THRESHOLD = 0.5
_PROTO = MinHash(num_perm=NUM_PERM)
_DTYPE, _SCHEME = _PROTO.hashvalues.dtype, _PROTO.scheme  # LSH bands hash these bytes: keep one dtype
# Drawing the permutations costs more than sketching a headline: draw them once, share them.
_PERMUTATIONS = _PROTO.permutations

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
    ``sketch(t).hashvalues`` for each: the shingle hashes of a block of texts are permuted
    in one numpy operation and each text's minima taken with ``minimum.reduceat``, instead
    of one MinHash object (and its arrays) per text."""
    out = np.empty((len(folded), NUM_PERM), dtype=_DTYPE)
    a, b = _PERMUTATIONS
    start = 0
    while start < len(folded):
        hashes: list[int] = []
        offsets: list[int] = []
        end = start
        while end < len(folded) and len(hashes) < _BLOCK:
            offsets.append(len(hashes))
            hashes += _gram_hashes(folded[end])  # never empty: a text has >= 1 shingle
            end += 1
        permuted = np.multiply.outer(a, _mix(np.array(hashes, dtype=_DTYPE)))  # (NUM_PERM, shingles)
        permuted += b[:, None]
        out[start:end] = np.minimum.reduceat(permuted, offsets, axis=1).T
        start = end
    return out


_BLOCK = 8_192  # shingles permuted at a time (8k x 128 values: 4 MB)


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
