"""Every bench's shared flags and its JSON result: figures, parameters, machine, revision.

A bench builds its parser with :func:`parser` (which adds ``--smoke`` and ``--json-out``)
and ends with :func:`emit`. A full run writes ``bench/results/<name>.json``, the file
``docs/benchmarks.md`` is generated from (``python -m bench.docs``), so a published figure
always names the command, the code revision and the machine that produced it. A
``--smoke`` run is the test suite's: sizes of seconds, no file unless ``--json-out`` says
where, so an interface change breaks CI instead of a reader's reproduction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LIBRARIES = ("torch", "numpy", "redis", "kafka-python", "msgspec", "transformers")


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with the flags every bench shares; ``module`` is ``bench.<name>``."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}",
                                 description=(doc or module).strip().splitlines()[0])
    ap.add_argument("--smoke", action="store_true",
                    help="seconds-long sizes for the test suite (writes no result by default)")
    ap.add_argument("--json-out", type=Path, default=None,
                    help="where to write the JSON result (default: bench/results/<name>.json "
                         "for a full run, nowhere for --smoke)")
    return ap


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu() -> str | None:
    """The first CUDA device's name, or None (torch is imported only if already loaded)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def revision() -> str:
    """The git revision of the checkout, with ``-dirty`` when tracked files differ."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True,  # noqa: S603,S607 - git, fixed args
                             text=True, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""
    rev = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results",
                ":!docs/benchmarks.md")
    return f"{rev}-dirty" if dirty else rev


def machine() -> dict[str, Any]:
    """What ran the bench: CPU, cores, memory, GPU, Python and library versions."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    mem_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gb": mem_gb, "gpu": gpu(),
            "python": platform.python_version(), "libraries": versions}


def emit(module: str, args: argparse.Namespace, figures: dict[str, Any],
         targets: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """Write the bench's result as JSON and return its path (None for a smoke run).

    ``figures`` are the measured numbers (plain JSON values); ``targets`` maps a target's
    name to ``{"value": ..., "target": "<= 2.4 s", "met": bool}``. The command recorded
    is the one that ran, flags included, so the docs can print it verbatim.
    """
    name = module.rsplit(".", 1)[-1]
    out = args.json_out
    if out is None and not args.smoke:
        out = RESULTS / f"{name}.json"
    if out is None:
        return None
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("json_out",)}
    result = {
        "bench": name,
        "command": command(module),
        "parameters": params,
        "figures": figures,
        "targets": targets or {},
        "machine": machine(),
        "revision": revision(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"result: {path}", flush=True)
    return path


def command(module: str) -> str:
    """The command line that ran, less ``--json-out`` (where the result went is not how)."""
    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--json-out":
            skip = True
            continue
        if not arg.startswith("--json-out="):
            argv.append(arg)
    return " ".join(["python -m", module, *map(shlex.quote, argv)])


def target(value: float, op: str, bound: float, unit: str = "") -> dict[str, Any]:
    """A target entry: ``value op bound`` (op is ``<=`` or ``>=``) and whether it is met."""
    met = value <= bound if op == "<=" else value >= bound
    return {"value": value, "target": f"{op} {bound:g}{(' ' + unit) if unit else ''}",
            "met": bool(met)}
