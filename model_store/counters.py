"""Shared counters in Redis: per-item impressions/clicks (exploration) and per-arm totals.

Increments are applied exactly once per token: the worker persists its pending deltas and
the next token in its checkpoint *before* applying them, so a crash between apply and the
next checkpoint re-sends the same token and the script skips it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model_store.redis_client import run_script
from model_store.redis_store import translate_errors

__all__ = ["MemoryCounters", "RedisCounters"]

_APPLY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) == false then return 0 end
local i = 2
while i <= #ARGV do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], tonumber(ARGV[i + 2]))
  i = i + 3
end
return 1
"""


@translate_errors
class RedisCounters:
    """Hashes ``{prefix}:stats:item:impression``, ``...:item:click`` and ``{prefix}:stats:arm``.

    Args:
        client: a redis client.
        prefix: key prefix shared with the vector store.
        token_ttl_s: how long an applied token is remembered (longer than any restart).
        replicas: replicas that must hold an application before it counts as done
            (``redis.wait_replicas``); 0 trusts the master's acknowledgement.
        replica_wait_s: how long to wait for them before reporting an outage.
    """

    def __init__(self, client: Any, prefix: str = "freshrec", token_ttl_s: int = 7 * 86400,
                 replicas: int = 0, replica_wait_s: float = 2.0) -> None:
        self.client = client
        self.replicas, self.replica_wait_s = replicas, replica_wait_s
        self.prefix = prefix
        self.token_ttl_s = token_ttl_s
        self._apply = client.register_script(_APPLY)
        # One hash tag for all stats keys: the script touches them together.
        tag = f"{{{prefix}:stats}}"
        self.keys = {"impression": f"{prefix}:{tag}:item:impression",
                     "click": f"{prefix}:{tag}:item:click", "arm": f"{prefix}:{tag}:arm",
                     "token": f"{prefix}:{tag}:applied:"}

    def apply(self, token: str, items: Mapping[tuple[str, str], int],
              arms: Mapping[tuple[str, str], int]) -> bool:
        """Add the deltas once; False if ``token`` was already applied."""
        key_list = [self.keys["token"] + token, self.keys["impression"], self.keys["click"],
                    self.keys["arm"]]
        slot = {"impression": 2, "click": 3}
        args: list[Any] = [self.token_ttl_s]
        for (item, etype), n in items.items():
            if etype in slot and n:
                args += [slot[etype], item, n]
        for (arm, etype), n in arms.items():
            if n:
                args += [4, f"{arm}:{etype}", n]
        return bool(run_script(self._apply, self.client, key_list, args, self.replicas,
                               self.replica_wait_s))

    def item_stats(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) per item, zeros for unseen items."""
        if not ids:
            return np.zeros(0), np.zeros(0)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys["impression"], list(ids))
        pipe.hmget(self.keys["click"], list(ids))
        imps, clicks = pipe.execute()
        return (np.array([int(v or 0) for v in imps], float),
                np.array([int(v or 0) for v in clicks], float))

    def arm_totals(self) -> dict[str, dict[str, int]]:
        """Arm -> {impression, click, purchase, request} totals across all workers."""
        out: dict[str, dict[str, int]] = {}
        for field, value in self.client.hgetall(self.keys["arm"]).items():
            arm, _, etype = field.decode().rpartition(":")
            out.setdefault(arm, {})[etype] = int(value)
        return out


class MemoryCounters:
    """In-memory twin of :class:`RedisCounters` (unit tests, simulations)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, int]] = {"impression": {}, "click": {}}
        self.arms: dict[str, dict[str, int]] = {}
        self.tokens: set[str] = set()

    def apply(self, token: str, items: Mapping[tuple[str, str], int],
              arms: Mapping[tuple[str, str], int]) -> bool:
        """Add the deltas once per token."""
        if token in self.tokens:
            return False
        self.tokens.add(token)
        for (item, etype), n in items.items():
            if etype in self.items:
                self.items[etype][item] = self.items[etype].get(item, 0) + n
        for (arm, etype), n in arms.items():
            self.arms.setdefault(arm, {})[etype] = self.arms.get(arm, {}).get(etype, 0) + n
        return True

    def item_stats(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(impressions, clicks) per item."""
        return (np.array([self.items["impression"].get(i, 0) for i in ids], float),
                np.array([self.items["click"].get(i, 0) for i in ids], float))

    def arm_totals(self) -> dict[str, dict[str, int]]:
        """Arm -> totals."""
        return {a: dict(v) for a, v in self.arms.items()}
