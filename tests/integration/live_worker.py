"""A real worker run on a thread of the test, with its health endpoints and a producer.

The fault tests start one, inject a fault around it, and read ``/readyz`` and the arm
counters; :meth:`LiveWorker.close` stops the loop the way ``freshrec run`` does.
"""

from __future__ import annotations

import threading
from typing import Any

from consumers.kafka_source import KafkaEventProducer
from worker.config import load_settings
from worker.runtime.app import build_app
from worker.tools.embedded import free_port
from worker.tools.synthetic import encode


def arm_counts(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """What the per-arm counters must end at: events per (arm, type)."""
    want: dict[tuple[str, str], int] = {}
    for e in events:
        want[(e["arm"], e["type"])] = want.get((e["arm"], e["type"]), 0) + 1
    return want


class LiveWorker:
    """``build_app`` on ``cfg`` (a metrics port added), its loop on a thread, a producer."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        cfg["metrics"] = {"port": free_port()}
        self.settings = load_settings(None, cfg)
        self.app = build_app(self.settings)
        self.http = self.app.metrics.serve("127.0.0.1", self.settings.metrics.port)
        self.base = f"http://127.0.0.1:{self.settings.metrics.port}"
        self.stop = threading.Event()
        self.loop = threading.Thread(target=self.app.worker.run, args=(self.stop,),
                                     daemon=True)
        self.loop.start()
        self.producer = KafkaEventProducer(self.settings.kafka.client_options())

    def send(self, events: list[dict[str, Any]]) -> None:
        """Produce ``events`` to the events topic, keyed by user, and wait for the acks."""
        for e in events:
            self.producer.emit(self.settings.kafka.events_topic, str(e["user_id"]).encode(),
                               encode(e))
        self.producer.flush()

    def close(self) -> None:
        """Stop the loop (its final checkpoint included) and everything around it."""
        self.stop.set()
        self.loop.join(60)
        self.http.close()
        self.app.close()
        self.producer.close()
