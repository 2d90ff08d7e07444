"""MkDocs hook: render the HTTP API's OpenAPI document into the HTTP contract page.

The document is generated from the service itself (:func:`worker.serving.http.create_app`
over an in-memory store), so the page always shows what ``freshrec serve`` answers.
"""

from __future__ import annotations

import json
from typing import Any

MARKER = "<!-- openapi -->"


def openapi() -> dict[str, Any]:
    """``/openapi.json`` of a service with the default settings."""
    from model_store.memory_store import MemoryVectorStore  # noqa: PLC0415
    from worker.config import load_settings  # noqa: PLC0415
    from worker.serving.http import create_app  # noqa: PLC0415
    from worker.serving.service import RankService  # noqa: PLC0415

    settings = load_settings()
    service = RankService(MemoryVectorStore(), settings.experiment.arms)
    api = create_app(service, settings.serve)
    while not hasattr(api, "openapi"):  # the hot routes' ASGI layers wrap FastAPI
        api = api.app
    return dict(api.openapi())


def render(doc: dict[str, Any]) -> str:
    """A table of the operations, then the whole document."""
    rows = ["| method | path | summary |", "|---|---|---|"]
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            summary = op.get("summary") or op.get("description", "").split("\n")[0]
            rows.append(f"| `{method.upper()}` | `{path}` | {summary} |")
    body = json.dumps(doc, indent=2)
    return ("\n".join(rows) + "\n\nThe document itself (`GET /openapi.json`):\n\n"
            f"```json\n{body}\n```\n")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker on the HTTP contract page with the rendered document."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(openapi()))
