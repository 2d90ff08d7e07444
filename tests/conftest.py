"""Session-wide real servers: one embedded Tansu broker and one Redis for all tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def stack() -> Iterator[object]:
    from worker.embedded import EmbeddedStack

    with EmbeddedStack() as s:
        yield s


@pytest.fixture()
def kafka_options(stack) -> dict[str, object]:
    return {"bootstrap_servers": [stack.bootstrap]}


@pytest.fixture()
def redis_client(stack):
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture()
def uid(request) -> str:
    return f"{request.node.name[:40]}_{uuid.uuid4().hex[:8]}".replace("[", "_").replace("]", "_")
