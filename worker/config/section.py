"""The base of every settings section: unknown keys are errors and values never change."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section"]


class Section(BaseModel):
    """A settings section: ``extra="forbid"`` so a typo fails fast, frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
