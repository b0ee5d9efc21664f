"""A small inverted index, one per part of the derived search index, opened memory-mapped.

Each part stores its vocabulary (term -> offset and count into the postings), the postings (unit
row numbers and term frequencies) and every unit's length in terms. A query touches only the
postings of its own terms, so opening a part costs its vocabulary, not its rows. BM25 statistics
(document frequency, average length) are summed over the parts at query time, so scores do not
depend on how units were split into parts.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from search.query import tokenize

K1 = 1.5
B = 0.75


def write_text_index(folder: str, texts: list[str]) -> None:
    """Write the inverted index of ``texts`` (unit order) into ``folder``."""
    postings: dict[str, dict[int, int]] = defaultdict(dict)
    lengths = np.zeros(len(texts), dtype=np.uint32)
    for row, text in enumerate(texts):
        terms = tokenize(text)
        lengths[row] = len(terms)
        for term in terms:
            counts = postings[term]
            counts[row] = counts.get(row, 0) + 1
    vocab: dict[str, list[int]] = {}
    rows_parts, tf_parts = [], []
    offset = 0
    for term in sorted(postings):
        counts = postings[term]
        vocab[term] = [offset, len(counts)]
        rows_parts.append(np.fromiter(counts.keys(), dtype=np.int32, count=len(counts)))
        tf_parts.append(np.fromiter(counts.values(), dtype=np.uint16, count=len(counts)))
        offset += len(counts)
    rows = np.concatenate(rows_parts) if rows_parts else np.zeros(0, np.int32)
    tfs = np.concatenate(tf_parts) if tf_parts else np.zeros(0, np.uint16)
    np.save(os.path.join(folder, "postings_rows.npy"), rows)
    np.save(os.path.join(folder, "postings_tf.npy"), tfs)
    np.save(os.path.join(folder, "lengths.npy"), lengths)
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump(vocab, f, separators=(",", ":"))


@dataclass
class TextIndex:
    """One part's inverted index, memory-mapped."""

    vocab: dict[str, list[int]]
    rows: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray

    @classmethod
    def open(cls, folder: str) -> TextIndex:
        """Open the index written by ``write_text_index`` without reading its postings."""
        with open(os.path.join(folder, "vocab.json")) as f:
            vocab = json.load(f)
        load = lambda name: np.load(os.path.join(folder, name), mmap_mode="r")  # noqa: E731
        return cls(vocab, load("postings_rows.npy"), load("postings_tf.npy"), load("lengths.npy"))

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """The unit rows holding ``term`` and how often each holds it."""
        found = self.vocab.get(term)
        if found is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        start, count = found
        return np.asarray(self.rows[start:start + count], np.int64), np.asarray(self.tfs[start:start + count],
                                                                                 np.float32)

    def total_length(self) -> int:
        """The sum of unit lengths (for the average length BM25 needs)."""
        return int(np.asarray(self.lengths, dtype=np.int64).sum())


def idf(n: int, df: int) -> float:
    """BM25's inverse document frequency, ``log(1 + (n - df + 0.5) / (df + 0.5))``."""
    return float(np.log1p((n - df + 0.5) / (df + 0.5)))


def bm25_term_scores(tf: np.ndarray, lengths: np.ndarray, avg_length: float, term_idf: float) -> np.ndarray:
    """BM25 contributions of one term to the units holding it."""
    norm = K1 * (1 - B + B * lengths / max(avg_length, 1e-9))
    return (term_idf * tf * (K1 + 1) / (tf + norm)).astype(np.float32)
