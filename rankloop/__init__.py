"""RankLoop: weekly retraining of rankers, bandit tables and Q-policies from interaction logs."""

__version__ = "0.1.0"
