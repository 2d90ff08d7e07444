"""The latest text of every item, and which items changed since the encoder last looked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from consumers.events import ItemUpdate

__all__ = ["Catalog"]


class Catalog:
    """Item texts keyed by id; an older update (by event time) never overwrites a newer one.

    The worker drains :meth:`take_changed` each cycle and re-encodes only those items,
    so a catalog of millions costs nothing when one title changes.
    """

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self._ts: dict[str, int] = {}
        self._changed: set[str] = set()
        # Checkpoint marks: every accepted update takes the next stamp, and _stamps is
        # ordered by it (re-inserted on update), so what changed since a mark is a suffix.
        self.stamp = 0
        self._stamps: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.texts)

    def upsert(self, update: ItemUpdate) -> bool:
        """Apply one update; return True if the item's text changed."""
        old_ts = self._ts.get(update.item_id)
        if old_ts is not None and update.ts < old_ts:
            return False
        self._ts[update.item_id] = update.ts
        self.stamp += 1
        self._stamps.pop(update.item_id, None)
        self._stamps[update.item_id] = self.stamp
        if self.texts.get(update.item_id) == update.text:
            return False
        self.texts[update.item_id] = update.text
        self._changed.add(update.item_id)
        return True

    def forget(self, item_ids: list[str]) -> None:
        """Drop evicted items: a later update of one is a new item again."""
        for item_id in item_ids:
            self.texts.pop(item_id, None)
            self._ts.pop(item_id, None)
            self._stamps.pop(item_id, None)
            self._changed.discard(item_id)

    def trim(self, cap: int, has_row: Callable[[str], bool]) -> list[str]:
        """Forget the least recently updated texts past ``cap`` of items without a row.

        Texts of items no event has named yet (or not encoded yet) are state too: a
        catalog feed of ever-new items must not grow it without bound.
        """
        excess = len(self.texts) - cap
        out: list[str] = []
        if excess <= 0:
            return out
        for item_id in self._stamps:  # oldest update first
            if item_id in self.texts and not has_row(item_id):
                out.append(item_id)
                if len(out) >= excess:
                    break
        self.forget(out)
        return out

    @property
    def changed(self) -> int:
        """Items whose text changed and has not been taken yet."""
        return len(self._changed)

    def take_changed(self, limit: int | None = None) -> list[str]:
        """Up to ``limit`` ids whose text changed since they were last taken, sorted.

        Ids not taken stay pending, so a huge first catalog is encoded over several cycles
        instead of stalling one.
        """
        out = sorted(self._changed)
        if limit is not None:
            out = out[:limit]
        self._changed.difference_update(out)
        return out

    def state_dict(self, since: int | None = None) -> dict[str, Any]:
        """A JSON-serialisable copy, or only the items updated after stamp ``since``."""
        if since is None:
            return {"texts": self.texts, "ts": self._ts, "changed": sorted(self._changed),
                    "stamp": self.stamp}
        keys = []
        for key, stamp in reversed(self._stamps.items()):
            if stamp <= since:
                break
            keys.append(key)
        return {"delta": True, "texts": {k: self.texts[k] for k in keys if k in self.texts},
                "ts": {k: self._ts[k] for k in keys}, "changed": sorted(self._changed),
                "stamp": self.stamp}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the contents with :meth:`state_dict`'s, or apply a delta of them."""
        if not state.get("delta"):
            self.texts, self._ts, self._stamps = {}, {}, {}
        self.texts.update(state["texts"])
        self._ts.update((k, int(v)) for k, v in state["ts"].items())
        self._changed = set(state["changed"])
        self.stamp = int(state.get("stamp", 0))
        for key in state["ts"]:  # loaded entries count as old: the next delta skips them
            self._stamps.pop(key, None)
            self._stamps[key] = 0
