"""RankLoop errors survive the trip from a Dask worker to the flow (pickling) with their type and fields."""

from __future__ import annotations

import pickle

from core.errors import ContractViolation, Reason, SourceError


def test_errors_pickle_with_their_reason_and_details() -> None:
    error = ContractViolation("3 of 100 rows quarantined", reason=Reason.CONTRACT,
                              details={"report_path": "/x/report.md", "counts": {"rows_quarantined": 3}})
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is ContractViolation and str(back) == "3 of 100 rows quarantined"
    assert back.reason is Reason.CONTRACT and back.details == error.details
    source = pickle.loads(pickle.dumps(SourceError("down", reason=Reason.UNREACHABLE, transient=True)))
    assert type(source) is SourceError and source.transient is True and source.reason is Reason.UNREACHABLE
