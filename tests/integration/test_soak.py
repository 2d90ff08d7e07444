"""The fault-injection soak (bench/soak.py) at CI scale.

A real worker under a kill -9, hostile messages, a Redis outage and a broker restart,
checked against ground truth.
"""

from __future__ import annotations

import argparse

import pytest

from bench.soak import soak

pytestmark = pytest.mark.integration


def test_soak_at_ci_scale_loses_and_duplicates_nothing() -> None:
    result = soak(argparse.Namespace(
        events=1500, hostile=300, kills=1, redis_outage_s=3.0, no_broker_restart=False,
        rate=600.0, seed=7, drain_timeout_s=300.0))
    assert result["broker_restarts"] == 1
    assert result["counter_mismatches"] == {}
    assert result["dlq_duplicates"] == 0 and result["dlq_reasons_match"]
    assert result["labels"]["wrong"] == 0 and result["labels"]["missing"] == 0
    assert result["labels"]["negatives"] > 0
    assert result["unexpected_exits"] == 0 and result["final_exit_code"] == 0
    assert result["ok"], result
