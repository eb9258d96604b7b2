"""Serving GRU4Rec: the recommender, the checkpoint made ready to score, the scorer.

Owns nothing itself; one module per part:

- `recommender.py`: `GRURecommender`, the session states, micro-batching, hot reload
  and the fallback to the online recommender;
- `served.py`: finding and loading a checkpoint for serving, the shortlist
  structures (int8 rows, low-rank factors) and exact re-scoring;
- `scoring.py`: scoring one micro-batch, in this process or in a scoring worker
  process.

torch is imported only when this package is.
"""

from .recommender import GRURecommender

__all__ = ["GRURecommender"]
