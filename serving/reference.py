"""Reference serving: how the seed systems used their models, on top of the registry loader.

Two recipes, both driven by a frozen :class:`ServingConfig` (never by constants in the bodies):

* **blend** (the Thompson-sampling seed): score = 0.6 x similarity(user, item) + 0.4 x a Thompson
  draw from the champion Beta tables; then each slot is, with probability 0.15, given to a random
  not-yet-shown candidate instead (exploration).
* **ranked + MMR** (the LightGBM seed): the champion ranker scores the candidates, then maximal
  marginal relevance with lambda 0.7 trades relevance against cosine similarity between item embeddings.

Typical use::

    from registry import load
    recommender = ReferenceRecommender(ranker=load("ranker"), bandit=load("bandit"))
    recommender.refresh()  # periodically: follows the aliases after a promotion or rollback
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ServingConfig:
    """Blend weights, exploration rate and the MMR trade-off, validated at construction."""

    similarity_weight: float = 0.6
    bandit_weight: float = 0.4
    exploration_rate: float = 0.15
    mmr_lambda: float = 0.7

    def __post_init__(self) -> None:
        bad = {
            n: getattr(self, n)
            for n in ("similarity_weight", "bandit_weight", "exploration_rate", "mmr_lambda")
            if not 0.0 <= getattr(self, n) <= 1.0
        }
        if bad:
            raise ValueError(f"ServingConfig values must lie in [0, 1], found {bad}")
        if not np.isclose(self.similarity_weight + self.bandit_weight, 1.0):
            raise ValueError(
                f"similarity_weight + bandit_weight must be 1, found "
                f"{self.similarity_weight} + {self.bandit_weight}"
            )


class Sampler(Protocol):
    def sample(self, item_ids: Sequence[Any], rng: np.random.Generator) -> np.ndarray: ...


class Scorer(Protocol):
    def predict(self, frame: pd.DataFrame) -> np.ndarray: ...


def _unit_rows(embeddings: np.ndarray) -> np.ndarray:
    matrix = np.asarray(embeddings, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D array (n_items, dim), found shape {matrix.shape}")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def cosine_to(query: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector (dim,) to each row of ``embeddings`` (n, dim); shape (n,)."""
    return _unit_rows(embeddings) @ _unit_rows(np.asarray(query, dtype=float)[None, :])[0]


def blend_scores(similarity: np.ndarray, bandit_draw: np.ndarray, config: ServingConfig) -> np.ndarray:
    """``w_sim * (1 + cos) / 2 + w_bandit * draw``, shape (n,): cosine is mapped to [0, 1], the draws' scale."""
    return config.similarity_weight * (1.0 + similarity) / 2.0 + config.bandit_weight * np.asarray(
        bandit_draw
    )


def explore(ranked: Sequence[Any], k: int, rate: float, rng: np.random.Generator) -> list[Any]:
    """The top ``k`` of ``ranked``, each slot replaced with probability ``rate`` by a random lower-ranked item."""
    chosen: list[Any] = []
    pool = list(ranked)
    for _ in range(min(k, len(pool))):
        index = int(rng.integers(len(pool))) if rng.random() < rate else 0
        chosen.append(pool.pop(index))
    return chosen


def mmr(
    item_ids: Sequence[Any], relevance: np.ndarray, embeddings: np.ndarray, k: int, lambda_: float
) -> list[Any]:
    """Maximal marginal relevance: repeatedly take argmax ``lambda * rel - (1 - lambda) * max cos(chosen)``.

    Args:
        item_ids: candidates, length n; relevance: scores (n,), min-max scaled here to [0, 1];
        embeddings: (n, dim); k: how many to pick; lambda_: 1 = pure relevance.
    """
    rel = np.asarray(relevance, dtype=float)
    span = rel.max() - rel.min() if rel.size else 0.0
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    unit = _unit_rows(embeddings)
    sim, chosen = unit @ unit.T, []
    remaining = list(range(len(item_ids)))
    while remaining and len(chosen) < k:
        redundancy = sim[np.ix_(remaining, chosen)].max(axis=1) if chosen else np.zeros(len(remaining))
        best = remaining[int(np.argmax(lambda_ * rel[remaining] - (1 - lambda_) * redundancy))]
        chosen.append(best)
        remaining.remove(best)
    return [item_ids[i] for i in chosen]


def diversity(embeddings: np.ndarray) -> float:
    """1 - mean pairwise cosine similarity of a slate (0 for fewer than two items)."""
    unit = _unit_rows(embeddings)
    n = len(unit)
    if n < 2:
        return 0.0
    sim = unit @ unit.T
    return float(1.0 - (sim.sum() - np.trace(sim)) / (n * (n - 1)))


class ReferenceRecommender:
    """The seed recipes over loaded models (``registry.load`` results, or anything with the same verbs)."""

    def __init__(
        self,
        *,
        ranker: Scorer | None = None,
        bandit: Sampler | None = None,
        config: ServingConfig | None = None,
    ):
        self.ranker, self.bandit = ranker, bandit
        self.config = config or ServingConfig()

    def blend(
        self,
        user_embedding: np.ndarray,
        item_ids: Sequence[Any],
        item_embeddings: np.ndarray,
        k: int,
        rng: np.random.Generator,
    ) -> list[Any]:
        """Top ``k`` by similarity/Thompson blend, with exploration."""
        if self.bandit is None:
            raise ValueError("blend needs bandit tables; this recommender was built without bandit=")
        _check_lengths(item_ids, item_embeddings)
        scores = blend_scores(
            cosine_to(user_embedding, item_embeddings), self.bandit.sample(item_ids, rng), self.config
        )
        ranked = [item_ids[i] for i in np.argsort(-scores, kind="stable")]
        return explore(ranked, k, self.config.exploration_rate, rng)

    def ranked(
        self, features: pd.DataFrame, item_ids: Sequence[Any], item_embeddings: np.ndarray, k: int
    ) -> list[Any]:
        """Top ``k`` by ranker score, diversified with MMR (row i of ``features`` describes ``item_ids[i]``)."""
        if self.ranker is None:
            raise ValueError("ranked needs a ranker; this recommender was built without ranker=")
        _check_lengths(item_ids, item_embeddings)
        if len(features) != len(item_ids):
            raise ValueError(f"features has {len(features)} rows for {len(item_ids)} items")
        return mmr(item_ids, self.ranker.predict(features), item_embeddings, k, self.config.mmr_lambda)

    def refresh(self) -> bool:
        """Follow moved aliases of the loaded models; True when any of them changed version."""
        changed = [m.refresh() for m in (self.ranker, self.bandit) if hasattr(m, "refresh")]
        return any(changed)


def _check_lengths(item_ids: Sequence[Any], item_embeddings: np.ndarray) -> None:
    if len(item_ids) != len(item_embeddings):
        raise ValueError(f"{len(item_ids)} item ids but {len(item_embeddings)} embedding rows")
