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
    from worker.tools.embedded import EmbeddedStack

    with EmbeddedStack() as s:
        yield s


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[object]:
    """A real 3-master Redis Cluster (cluster-mode redis-server processes), once per session."""
    from worker.tools.cluster import EmbeddedCluster

    with EmbeddedCluster(3) as c:
        yield c


@pytest.fixture()
def cluster_client(redis_cluster):
    from model_store.redis_store import connect

    client = connect(redis_cluster.url, cluster=True)
    yield client
    client.close()


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


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A randomly initialised 2-layer BERT with the real MiniLM tokenizer (fast unit tests)."""
    import shutil

    from transformers import BertConfig, BertModel

    from worker.learning.encoder import default_model_path

    out = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    src = default_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy(f"{src}/{name}", out / name)
    return str(out)


@pytest.fixture(scope="session")
def real_encoder():
    """The real all-MiniLM-L6-v2 from the installed package (loaded once)."""
    from worker.learning.encoder import TextEncoder

    return TextEncoder()


# --- Skips: listed with their reasons at the end, and a skip nobody expects fails the run.
# The README's "Tests" section lists the expected ones; keep the two in step.

def expected_skip_reasons() -> set[str]:
    """Skip reasons that are normal on this machine."""
    import shutil

    # Doctest examples that need a live server are marked +SKIP (named so when the tests
    # run on several workers).
    reasons = {"no CUDA device", "all tests skipped by +SKIP option"}
    can_install = hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if not can_install:  # the set-up installs Prometheus only as root on Debian
        reasons |= {"promtool not installed", "prometheus not installed"}
    return reasons


_SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
        _SKIPS.append((report.nodeid, reason))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly:
        return
    expected = expected_skip_reasons()
    unexpected = [(node, why) for node, why in _SKIPS if why not in expected]
    if unexpected and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_SKIP_KEY] = unexpected


_SKIP_KEY = pytest.StashKey[list[tuple[str, str]]]()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not _SKIPS:
        terminalreporter.write_line("skipped: none")
        return
    counts: dict[str, int] = {}
    for _, why in _SKIPS:
        counts[why] = counts.get(why, 0) + 1
    terminalreporter.write_line(f"skipped: {len(_SKIPS)} test(s)")
    for why, n in sorted(counts.items()):
        terminalreporter.write_line(f"  {n} x {why}")
    for node, why in config.stash.get(_SKIP_KEY, []):
        terminalreporter.write_line(f"UNEXPECTED SKIP (not listed in the README): {node}: {why}",
                                    red=True)
