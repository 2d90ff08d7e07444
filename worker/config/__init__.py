"""The settings tree every other part of the worker receives its slice of."""

from worker.config.settings import (
    ArmSettings,
    DriftSettings,
    ExperimentSettings,
    IngestSettings,
    KafkaSettings,
    MetricsSettings,
    ModelSettings,
    RedisSettings,
    ServeSettings,
    Settings,
    StoreSettings,
    TrainingSettings,
    load_settings,
)

__all__ = ["ArmSettings", "DriftSettings", "ExperimentSettings", "IngestSettings",
           "KafkaSettings", "MetricsSettings", "ModelSettings", "RedisSettings", "ServeSettings",
           "Settings", "StoreSettings", "TrainingSettings", "load_settings"]
