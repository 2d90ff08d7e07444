"""Wiring: build every component from settings. The only place real clients are made."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from consumers.dedupe import Deduper
from consumers.event_time import TimePolicy
from consumers.eviction import ItemEvictor
from consumers.handover import JoinHandover
from consumers.joiner import Joiner
from consumers.kafka_dlq import KafkaDeadLetterSink
from consumers.kafka_samples import KafkaSampleSink
from consumers.kafka_source import KafkaEventSource, Shard, ensure_topics
from consumers.pipeline import IngestPipeline, Topics
from consumers.replay import ReplayBuffers
from model_store.checkpoints import CheckpointStore
from model_store.counters import RedisCounters
from model_store.documents import RedisDocuments
from model_store.handover import RedisHandoverStore
from model_store.redis_store import RedisVectorStore, connect
from worker.config import Settings
from worker.experiments.drift_monitor import DriftMonitor
from worker.experiments.monitor import ExperimentMonitor
from worker.experiments.ramp import LiveShares, RampController, ramp_key
from worker.learning.encoder import SemanticCache, TextEncoder, resolve_device
from worker.learning.items import ItemTable
from worker.learning.ranked import RankedTrainer, Ranks
from worker.learning.training import Trainer
from worker.runtime.loop import Worker
from worker.runtime.metrics import Metrics

__all__ = ["App", "IngestApp", "build_app", "build_ingest_app", "build_serve", "counters",
           "redis_client", "vector_store"]

log = logging.getLogger(__name__)


@dataclass
class App:
    """Everything a running worker holds."""

    settings: Settings
    metrics: Metrics
    pipeline: IngestPipeline
    trainer: Trainer
    worker: Worker
    store: RedisVectorStore
    drift: DriftMonitor
    monitor: ExperimentMonitor

    def close(self) -> None:
        """Release clients (the consumer leaves its group without committing)."""
        _close_pipeline(self.pipeline)
        Ranks.leave()  # trainer ranks: leave the process group before the process exits


def redis_client(settings: Settings, timeout_s: float | None = None) -> Any:
    """A pooled client for the configured Redis URL (password from settings if given).

    ``timeout_s``: per command; None takes ``redis.timeout_s``.
    """
    password = settings.redis.password
    return connect(settings.redis.url,
                   password.get_secret_value() if password is not None else None,
                   settings.redis.timeout_s if timeout_s is None else timeout_s,
                   settings.redis.cluster)


def vector_store(settings: Settings, client: Any = None) -> RedisVectorStore:
    """The configured Redis vector store (on ``client``, else a new one)."""
    r = settings.redis
    return RedisVectorStore(client if client is not None else redis_client(settings),
                            r.prefix, r.retention_versions, r.wait_replicas, r.wait_replicas_s)


def ramp_controller(settings: Settings, client: Any = None) -> RampController:
    """The experiment's guarded-ramp controller over the configured Redis."""
    return RampController(settings.experiment, RedisDocuments(
        client if client is not None else redis_client(settings)),
        ramp_key(settings.redis.prefix, settings.experiment.name))


def counters(settings: Settings, client: Any = None) -> RedisCounters:
    """Shared per-item and per-arm counters in the configured Redis (on ``client``)."""
    r = settings.redis
    return RedisCounters(client if client is not None else redis_client(settings), r.prefix,
                         replicas=r.wait_replicas, replica_wait_s=r.wait_replicas_s)


@dataclass
class IngestApp:
    """An ingest-tier worker: events in, samples out to the samples topic (no trainer)."""

    settings: Settings
    metrics: Metrics
    pipeline: IngestPipeline
    worker: Worker
    monitor: ExperimentMonitor
    samples: KafkaSampleSink

    def close(self) -> None:
        """Release clients (the consumer leaves its group without committing)."""
        _close_pipeline(self.pipeline)
        self.samples.close()


def _close_pipeline(pipeline: IngestPipeline) -> None:
    """Close the consumer (leaving its group without committing) and the DLQ producer."""
    pipeline.source.close()
    dlq = pipeline.dead_letters
    if isinstance(dlq, KafkaDeadLetterSink):
        dlq.close()


def _pipeline(settings: Settings, subscribe: list[str], role: str,
              ranks: Ranks | None = None) -> IngestPipeline:
    """The consumer-group member and its ingestion state; creates topics if configured.

    A trainer rank reads a fixed share of the samples partitions and the whole catalog,
    committing under a group of its own (``<group>.rank<r>``).
    """
    k, ing = settings.kafka, settings.ingest
    opts = k.client_options()
    topics = Topics(k.events_topic, k.items_topic, k.dlq_topic, k.samples_topic)
    if k.create_topics:
        ensure_topics(opts, {topics.events: k.partitions, topics.items: 1, topics.dlq: 1,
                             topics.samples: k.partitions})
    names = [getattr(topics, name) for name in subscribe]
    source = (KafkaEventSource(names, k.group_id, opts) if ranks is None else KafkaEventSource(
        names, f"{k.group_id}.rank{ranks.rank}", opts,
        Shard(ranks.rank, ranks.world, frozenset([topics.items]))))
    # An ingest-tier process only passes samples on: it keeps no replay buffers.
    recent, reservoir = (1, 1) if role == "ingest" else (ing.recent_capacity,
                                                        ing.reservoir_capacity)
    pipeline = IngestPipeline(
        source, KafkaDeadLetterSink(topics.dlq, opts, ing.dlq_max_value_bytes), topics,
        buffers=ReplayBuffers(recent, reservoir, ing.recent_share, ing.seed, ing.history_len),
        joiner=Joiner(int(ing.join_window_s * 1000), ing.history_len,
                      max_users=ing.join_max_users, closed_memory=ing.join_closed_keys),
        deduper=Deduper(ing.dedupe_max_ids, int(ing.dedupe_window_s * 1000)),
        max_message_bytes=ing.max_message_bytes,
        time_policy=TimePolicy(int(ing.max_future_skew_s * 1000), int(ing.max_event_age_s * 1000)),
        user_buckets=settings.experiment.user_buckets)
    if "events" in subscribe:  # pending joins follow their partition at a rebalance
        pipeline.handover = JoinHandover(RedisHandoverStore(
            redis_client(settings), settings.redis.prefix, k.group_id), topics.events)
    return pipeline


def build_ingest_app(settings: Settings) -> IngestApp:
    """``freshrec run --role ingest``: parse, dedupe, join; samples to the samples topic.

    Ingest processes share one consumer group on the events topic (keyed by user, so a
    user's impressions and clicks meet in one process) and scale by its partitions.
    """
    k = settings.kafka
    pipeline = _pipeline(settings, ["events"], "ingest")
    metrics = Metrics()
    metrics.configure_experiment(settings.experiment.name,
                                 [a.name for a in settings.experiment.arms])
    client = redis_client(settings)
    shared = counters(settings, client)
    monitor = ExperimentMonitor(settings.experiment, shared)
    sink = KafkaSampleSink(k.samples_topic, k.client_options())
    worker = Worker(pipeline, CheckpointStore(settings.store.checkpoint_dir, settings.store.keep),
                    metrics, monitor=monitor, ramps=ramp_controller(settings, client),
                    shared_totals=shared.arm_totals,
                    checkpoint_interval_s=settings.ingest.checkpoint_interval_s,
                    stats_interval_s=settings.experiment.stats_interval_s,
                    poll_max_records=k.poll_max_records, poll_timeout_s=k.poll_timeout_s,
                    checkpoint_full_every=settings.store.full_every, samples=sink)
    return IngestApp(settings, metrics, pipeline, worker, monitor, sink)


def build_app(settings: Settings, encoder: TextEncoder | None = None, role: str = "all") -> App:
    """Build (but do not start) the worker; creates topics when configured to.

    ``role``: ``all`` reads events and the catalog and does everything; ``train`` reads
    the samples topic (the ingest tier's output) and the catalog, and trains, publishes
    and checkpoints (see :func:`build_ingest_app` for ``ingest``).
    """
    if role not in ("all", "train"):
        raise ValueError(f"role {role!r}: use all, train (or build_ingest_app)")
    k, ing = settings.kafka, settings.ingest
    device = resolve_device(settings.model.device)
    # Several trainer ranks (torchrun's environment): lockstep cycles, rank 0 publishes.
    ranks = Ranks.from_env(device) if role == "train" else None
    pipeline = _pipeline(settings, ["events", "items"] if role == "all"
                         else ["samples", "items"], role, ranks)
    metrics = Metrics()
    metrics.configure_experiment(settings.experiment.name,
                                 [a.name for a in settings.experiment.arms])
    encoder = encoder or TextEncoder(settings.model.encoder_path, device,
                                     settings.model.encoder_batch_size,
                                     settings.model.encoder_max_length)
    ckpt_dir = Path(settings.store.checkpoint_dir)
    cache_dir = ckpt_dir.parent / "semantic-cache"
    if ranks is not None:  # a checkpoint chain and a text cache per rank
        ckpt_dir, cache_dir = (ckpt_dir / f"rank-{ranks.rank}",
                               cache_dir.with_name(f"semantic-cache-rank-{ranks.rank}"))
    cache = SemanticCache(encoder, cache_dir)

    def encode(texts: Any) -> Any:
        before = cache.misses
        out = cache.get(texts)
        metrics.record_encoded(cache.misses - before)
        return out

    client = redis_client(settings)  # one pool for vectors and counters
    store = vector_store(settings, client)
    drift = DriftMonitor(settings.drift, settings.experiment.control,
                         on_response=metrics.record_drift_response)
    make = Trainer if ranks is None else partial(RankedTrainer, ranks=ranks)
    trainer = make(settings.experiment.arms, settings.training,
                   ItemTable(encoder.dim, device, pipeline.item_index), encode, store,
                   dim=settings.model.dim, device=device, seed=settings.model.seed, drift=drift)
    shared = counters(settings, client)
    monitor = ExperimentMonitor(settings.experiment, shared)
    worker = Worker(pipeline, CheckpointStore(ckpt_dir, settings.store.keep), metrics,
                    trainer=trainer, monitor=monitor, drift=drift,
                    # events are read here: this process may move guarded ramps
                    ramps=ramp_controller(settings, client) if role == "all" else None,
                    shared_totals=shared.arm_totals,
                    checkpoint_interval_s=ing.checkpoint_interval_s,
                    stats_interval_s=settings.experiment.stats_interval_s,
                    poll_max_records=k.poll_max_records, poll_timeout_s=k.poll_timeout_s,
                    # Ranks agree on every cycle and every row: cycles run in the loop
                    # (each rank asks once per poll) and items are not evicted.
                    overlap=settings.training.overlap and ranks is None,
                    checkpoint_full_every=settings.store.full_every,
                    evictor=ItemEvictor(ing.max_items) if ranks is None else None)
    return App(settings, metrics, pipeline, trainer, worker, store, drift, monitor)


def build_serve(settings: Settings) -> Any:
    """The ``freshrec serve`` ASGI app on the configured Redis (see :mod:`worker.serving.http`)."""
    from worker.serving.cache import CachedVectors  # noqa: PLC0415
    from worker.serving.http import create_app  # noqa: PLC0415 - FastAPI only when serving
    from worker.serving.metrics import ServeMetrics  # noqa: PLC0415
    from worker.serving.service import RankService  # noqa: PLC0415

    cfg = settings.serve
    client = redis_client(settings, cfg.redis_timeout_s)
    store = vector_store(settings, client)
    vectors = (CachedVectors(store, cfg.version_max_age_s, cfg.cache_rows)
               if cfg.cache_rows else None)
    exp = settings.experiment
    ramps = ramp_controller(settings, client)
    service = RankService(vectors or store, exp.arms, exp.salt, counters(settings, client),
                          cfg.seed, cfg.propensity_draws, exp.control,
                          LiveShares(ramps) if ramps.ramped else None)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    metrics = ServeMetrics()
    if vectors is not None:
        metrics.watch_cache(vectors)
    return create_app(service, cfg, ping, metrics)
