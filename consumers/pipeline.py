"""One ingestion step: poll ▸ parse ▸ dead-letter ▸ dedupe ▸ join ▸ buffer, and checkpoints.

The pipeline owns all ingestion state (dedupe window, joiner, catalog, replay buffers) and
the offsets that state corresponds to. :meth:`IngestPipeline.checkpoint` makes the state
durable through the ``persist`` callback and only then commits those offsets, so a crash at
any point either replays messages the restored state has not seen, or replays messages
whose ids the restored dedupe window already holds: the result is as if nothing crashed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from zlib import crc32

import numpy as np

from consumers.base import DeadLetterSink, EventSource, Topics
from consumers.catalog import Catalog
from consumers.columns import Columns, RowIndex
from consumers.dedupe import Deduper
from consumers.event_time import TimePolicy
from consumers.events import (
    EVENT_TYPES,
    Message,
    Offsets,
    Reason,
    Rejection,
    Sample,
)
from consumers.handover import JoinHandover
from consumers.joiner import Joiner
from consumers.parse import DEFAULT_MAX_BYTES, parse_event, parse_item
from consumers.pipeline_state import load_pipeline_state, pipeline_marks, pipeline_state
from consumers.replay import ReplayBuffers
from consumers.report import BatchReport
from consumers.samples import decode_sample, sample_key

__all__ = ["BatchReport", "IngestPipeline", "Topics"]

#: Persists the pipeline state (and anything the caller adds) for the given offsets.
PersistFn = Callable[[Offsets], None]


class IngestPipeline:
    """Turns a consumer group's messages into replay-buffer samples, exactly once in effect.

    Args:
        source: the consumer-group member.
        dead_letters: sink for rejected messages.
        topics: contract topic names.
        buffers, joiner, deduper, catalog: the state (configured instances, or defaults).
        max_message_bytes: larger messages are rejected as ``too_large``.
        max_fresh: samples kept for the trainer when nobody drains them (ingest-only).
        idle_partition_s: a partition whose event time has not moved for this long stops
            holding the join watermark back.
        user_buckets: hash buckets of users for the user-level experiment statistics
            (:func:`worker.experiments.stats.user_bucket`); 0 counts none.

    It also implements :class:`worker.learning.feed.SampleFeed` structurally, which is all a
    training cycle sees of it.
    """

    def __init__(self, source: EventSource, dead_letters: DeadLetterSink,
                 topics: Topics | None = None, *, buffers: ReplayBuffers | None = None,
                 joiner: Joiner | None = None, deduper: Deduper | None = None,
                 catalog: Catalog | None = None,
                 max_message_bytes: int = DEFAULT_MAX_BYTES, max_fresh: int = 200_000,
                 idle_partition_s: float = 30.0, time_policy: TimePolicy | None = None,
                 user_buckets: int = 0) -> None:
        self.source = source
        self.dead_letters = dead_letters
        self.topics = topics or Topics()
        # ``is None``, not ``or``: an empty buffer or window is falsy, and ``or`` silently
        # replaced the configured (empty) instances with defaults.
        self.buffers = ReplayBuffers() if buffers is None else buffers
        self.joiner = Joiner() if joiner is None else joiner
        self.deduper = Deduper() if deduper is None else deduper
        self.catalog = Catalog() if catalog is None else catalog
        self.max_message_bytes = max_message_bytes
        self.time_policy = TimePolicy() if time_policy is None else time_policy
        self.max_fresh = max_fresh
        self.user_buckets = user_buckets
        self._bucket_names = {etype: [f"{etype}@{b}" for b in range(user_buckets)]
                              for etype in EVENT_TYPES}
        self.idle_partition_s = idle_partition_s
        self.offsets: Offsets = {}
        self.fresh: list[Sample] = []  # samples not yet seen by the trainer
        self.committed: Offsets = {}
        # Newest event time per events partition, and when it last moved (monotonic s):
        # the join watermark is the minimum over partitions that are not idle.
        self.partition_ts: dict[tuple[str, int], list[float]] = {}
        self._persist: PersistFn | None = None
        # Where pending joins go when a partition moves (None: they stay, and close here).
        self.handover: JoinHandover | None = None
        source.set_revoke_hook(self._on_revoke)

    def set_persist(self, persist: PersistFn) -> None:
        """Install the durable-snapshot callback that :meth:`checkpoint` runs before commit."""
        self._persist = persist

    def step(self, max_records: int = 5000, timeout_s: float = 0.2) -> BatchReport:
        """Poll one batch and process it; never raises for bad message content."""
        report = BatchReport()
        messages = self.source.poll_batch(max_records, timeout_s)
        for topic in self.source.take_recreated():
            # Positions in a log that is gone restart at the new log's head before any of
            # its records land, so no checkpoint pairs an old position with the new log's
            # id. The partitions stay ours: their pending joins are kept, not handed over.
            for tp in [tp for tp in self.offsets if tp[0] == topic]:
                self.offsets[tp] = 0
                self.committed.pop(tp, None)
        assigned = self.source.take_assignment()
        if self.handover is not None:
            if assigned is not None:
                report.handover = self.handover.reassigned(self, assigned)
            if self.handover.awaiting and messages:
                report.handover.update(self.handover.resume(self, messages))
        if not messages:
            return report
        report.messages = len(messages)
        self.item_index.tick += 1  # "seen" clock of the item rows (eviction order)
        before = Counter(self.joiner.outcomes)
        evicted = Counter(self.joiner.evicted) + Counter(dedupe_ids=self.deduper.evicted)
        new: list[Sample] = []
        events_topic, items_topic = self.topics.events, self.topics.items
        samples_topic = self.topics.samples
        limit = self.max_message_bytes
        offsets, part_ts = self.offsets, self.partition_ts
        check_time, watermark_ts = self.time_policy.check, self.time_policy.watermark_ts
        arm_events, item_events = report.arm_events, report.item_events
        n_buckets, bucket_names = self.user_buckets, self._bucket_names
        now = time.monotonic()
        for msg in messages:
            tp = (msg.topic, msg.partition)
            offsets[tp] = msg.offset + 1
            if msg.topic == events_topic:
                event = parse_event(msg.value, limit)
                if isinstance(event, Rejection):
                    self._reject(msg, event, report)
                    continue
                log_ts = msg.timestamp
                bad_time = check_time(event.ts, log_ts)
                if bad_time is not None:
                    self._reject(msg, bad_time, report)
                    continue
                moved = watermark_ts(event.ts, log_ts)
                seen = part_ts.get(tp)
                if seen is None:
                    part_ts[tp] = [moved, now]
                elif moved > seen[0]:
                    seen[0], seen[1] = moved, now
                if self.deduper.seen_before(event.event_id, event.ts):
                    report.duplicates += 1
                else:
                    etype = event.type
                    report.consumed[etype] += 1
                    arm_events[(event.arm, etype)] += 1
                    if n_buckets:
                        arm_events[(event.arm, bucket_names[etype][
                            crc32(event.user_id.encode()) % n_buckets])] += 1
                    item_events[(event.item_id, etype)] += 1
                    if etype == "impression" and event.position == 0:
                        arm_events[(event.arm, "request")] += 1
                    self.joiner.add(event, new, tp)
            elif msg.topic == samples_topic:  # a trainer fed by the ingest tier
                sample = decode_sample(msg.value)
                if isinstance(sample, Rejection):
                    self._reject(msg, sample, report)
                elif self.deduper.seen_before(sample_key(sample), sample.ts):
                    report.duplicates += 1  # produced again after an ingest restart
                else:
                    seen = part_ts.setdefault(tp, [sample.ts, now])
                    if sample.ts > seen[0]:
                        seen[0], seen[1] = sample.ts, now
                    new.append(sample)
            elif msg.topic == items_topic:
                item = parse_item(msg.value, limit)
                if isinstance(item, Rejection):
                    self._reject(msg, item, report)
                else:
                    report.consumed["item"] += 1
                    self.catalog.upsert(item)
            else:
                self._reject(msg, Rejection(Reason.UNKNOWN_TOPIC, msg.topic), report)
        self.joiner.expire(new, self.watermark(now))
        self.deduper.trim()
        self._accept(new, report)
        report.join_outcomes = self.joiner.outcomes - before
        report.evicted = (self.joiner.evicted + Counter(dedupe_ids=self.deduper.evicted)
                          - evicted)
        return report

    def watermark(self, now_s: float | None = None) -> int:
        """Event time up to which every active events partition has been read.

        A partition whose newest event time has not moved for ``idle_partition_s`` (it went
        quiet, or moved to another member) stops holding the watermark back.
        """
        now = time.monotonic() if now_s is None else now_s
        active = [ts for ts, moved in self.partition_ts.values()
                  if now - moved < self.idle_partition_s]
        if active:
            return int(min(active))
        return int(max((ts for ts, _ in self.partition_ts.values()), default=0))

    def flush_joins(self) -> int:
        """Close all pending impressions as negatives (end of a finite run); returns count."""
        new: list[Sample] = []
        self.joiner.expire(new)
        self.joiner.flush(new)
        self._accept(new, BatchReport())
        return len(new)

    def checkpoint(self) -> Offsets:
        """Make state durable, then commit the offsets it covers. Returns what was committed.

        Order matters: dead letters flushed, state persisted, offsets committed. A failure
        at any step raises and leaves the offsets uncommitted, so nothing is lost.
        """
        pending = self._make_durable()
        if pending:
            self.source.commit(pending)
            self.committed.update(pending)
        return pending

    def _make_durable(self) -> Offsets:
        pending = {tp: off for tp, off in self.offsets.items() if self.committed.get(tp) != off}
        self.dead_letters.flush()
        if self._persist is not None:
            self._persist(dict(self.offsets))
        if self.handover is not None and not self.handover.save(self.joiner, self.offsets):
            return {}  # the next owner of a partition would miss its pending joins
        return pending

    def _on_revoke(self) -> Offsets:
        # Persist everything processed so far; the source commits it before the partitions
        # move, so the next owner starts exactly where this one stopped.
        pending = self._make_durable()
        self.committed.update(pending)
        return pending

    def _reject(self, msg: Message, rejection: Rejection, report: BatchReport) -> None:
        self.dead_letters.send(msg, rejection)
        report.rejected[rejection.reason.value] += 1

    def _accept(self, new: list[Sample], report: BatchReport) -> None:
        add = self.buffers.add
        for s in new:
            add(s)
        self.fresh.extend(new)
        if len(self.fresh) > self.max_fresh:
            # Nobody is draining (ingest-only mode): the samples are in the buffers anyway.
            del self.fresh[: len(self.fresh) - self.max_fresh]
        report.samples += len(new)
        report.positives += sum(s.label for s in new)

    # ----------------------------------------------------------------- SampleFeed
    def pending(self) -> int:
        """Samples produced since the last :meth:`take_fresh`."""
        return len(self.fresh)

    def take_fresh(self) -> list[Sample]:
        """Samples produced since the last call (for progressive validation), oldest first."""
        out, self.fresh = self.fresh, []
        return out

    def take_fresh_columns(self) -> tuple[list[Sample], Columns]:
        """:meth:`take_fresh` with the samples' columns, read from the recent ring."""
        fresh = self.take_fresh()
        cols = self.buffers.newest_columns(fresh)
        return fresh, Columns.of(fresh, self.item_index) if cols is None else cols

    def replay_rows(self, n: int, recent_share: float | None = None,
                    holdout_share: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Columns of ``n`` replay samples (see :meth:`ReplayBuffers.sample_rows`)."""
        return self.buffers.sample_rows(n, recent_share, holdout_share)

    @property
    def item_index(self) -> RowIndex:
        """The replay buffers' item rows."""
        return self.buffers.index

    def buffered(self) -> int:
        """Samples held in the replay buffers."""
        return len(self.buffers)

    def held_out_columns(self, holdout_below: int, want: int) -> Columns:
        """The gate's set: the newest held-out samples of the recent window."""
        return self.buffers.recent_columns().newest_held_out(holdout_below, want)

    def changed_items(self) -> int:
        """Catalog items whose text changed and was not taken yet."""
        return self.catalog.changed

    def take_changed_texts(self, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` changed items as ``(item_id, text)``, sorted by id."""
        texts = self.catalog.texts
        return [(i, texts[i]) for i in self.catalog.take_changed(limit)]

    def marks(self) -> dict[str, int]:
        """Where the growing parts of the state stand: what a delta checkpoint starts after."""
        return pipeline_marks(self)

    def state_dict(self, since: dict[str, int] | None = None) -> dict[str, Any]:
        """All ingestion state as JSON-serialisable data, or a delta after ``since``."""
        return pipeline_state(self, since)

    def load_state_dict(self, state: dict[str, Any], final: bool = True) -> None:
        """Restore :meth:`state_dict` output (a chain base first; see pipeline_state)."""
        load_pipeline_state(self, state, final)
