"""Event time against log time: which timestamps to trust, and how far they move the watermark.

An event's ``ts`` comes from the app's clock; the record's log timestamp from the producer
or broker. A ``ts`` far ahead of the log time (a client clock in 2036, seconds mistaken for
milliseconds the other way round) would drag the join watermark forward and close every
pending impression early; one far behind it (seconds instead of milliseconds) is nonsense.
Both are rejected as ``bad_ts``. A record without a log timestamp (<= 0) is not checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from consumers.events import Reason, Rejection

__all__ = ["TimePolicy"]


@dataclass(frozen=True)
class TimePolicy:
    """Accepted skew of event time against log time, in ms (0 disables a bound).

    >>> policy = TimePolicy(max_future_ms=3_600_000, max_age_ms=0)
    >>> policy.check(ts=10_000_000, log_ts=1_000) is None
    False
    >>> policy.check(ts=1_000, log_ts=10_000_000) is None
    True
    """

    max_future_ms: int = 3_600_000
    max_age_ms: int = 30 * 24 * 3_600_000

    def check(self, ts: int, log_ts: int) -> Rejection | None:
        """Why ``ts`` is out of range for a record logged at ``log_ts``; None if it is fine."""
        if log_ts <= 0:
            return None
        if self.max_future_ms and ts > log_ts + self.max_future_ms:
            return Rejection(Reason.BAD_TS, f"'ts' is {(ts - log_ts) / 1000:.0f} s ahead of "
                             f"the log time (limit {self.max_future_ms / 1000:.0f} s)")
        if self.max_age_ms and ts < log_ts - self.max_age_ms:
            return Rejection(Reason.BAD_TS, f"'ts' is {(log_ts - ts) / 1000:.0f} s behind "
                             f"the log time (limit {self.max_age_ms / 1000:.0f} s)")
        return None

    @staticmethod
    def watermark_ts(ts: int, log_ts: int) -> int:
        """How far this event may move its partition's event time: never past the log time."""
        return min(ts, log_ts) if log_ts > 0 else ts
