"""What served a request: the ``policy_version`` a serving host logs with every impression.

A served request names, per model kind, the version that served it and the release it belongs to
(the champion and previous versions when it was served)::

    ranker:3@3/2+bandit:5@5/4      ranker v3 (champion 3, previous 2), bandit v5 (champion 5, previous 4)
    ranker:2@3/2+bandit:5@5/4      the same release, the ranker's holdback arm: its previous version served
    ranker:1@1/-                   a first release (no previous); no bandit blended in

Serving keeps a small share of requests (the *holdback*) on each kind's previous version, so every
release has two concurrent arms, and the release in the tag tells the traffic since a promotion
from the traffic before it (and after a rollback) without trusting any clock: ``rankloop ab``
and the guardrail compare the arms of one release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = re.compile(r"^(?P<kind>[a-z]+):(?P<version>\d+)@(?P<champion>\d+)/(?P<previous>\d+|-)$")


@dataclass(frozen=True)
class Served:
    """One kind's share of a policy_version: the version that served, in the release (champion, previous)."""

    kind: str
    version: int
    champion: int
    previous: int | None

    @property
    def arm(self) -> str:
        """``champion`` or ``previous``: which side of its release served."""
        return "champion" if self.version == self.champion else "previous"

    @property
    def release(self) -> str:
        """The release, e.g. ``3/2``."""
        return f"{self.champion}/{self.previous if self.previous is not None else '-'}"

    def tag(self) -> str:
        return f"{self.kind}:{self.version}@{self.release}"


def policy_tag(served: list[Served]) -> str:
    """The policy_version of a request served by ``served`` (one entry per kind)."""
    return "+".join(s.tag() for s in served)


def parse_policy(tag: str | None) -> dict[str, Served]:
    """Kind -> :class:`Served` of a policy_version; empty for a tag not written by serving (e.g. the
    simulator's logging policy ``pl-popularity-v1``, or null)."""
    if not tag:
        return {}
    out: dict[str, Served] = {}
    for part in tag.split("+"):
        match = _PART.match(part)
        if match is None:
            return {}
        previous = match["previous"]
        out[match["kind"]] = Served(match["kind"], int(match["version"]), int(match["champion"]),
                                    None if previous == "-" else int(previous))
    return out
