#!/usr/bin/env bash
# The README's two commands:  ./dev.sh demo   (set up + run the closed loop)
#                             ./dev.sh test   (set up + lint + type-check + docs + the whole test suite)
# Set-up is idempotent: a venv in .venv (FRESHREC_VENV overrides), torch pinned to the CPU
# build first, then freshrec with its extras. Re-runs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${FRESHREC_VENV:-.venv}

setup() {
  if [ ! -f "$VENV/.freshrec-installed" ] || [ pyproject.toml -nt "$VENV/.freshrec-installed" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q torch==2.13.0
    "$VENV/bin/python" -m pip install -q -e '.[embedded,dev,report,serve,docs]'
    touch "$VENV/.freshrec-installed"
  fi
  # promtool and prometheus (Debian's prometheus package): the alert-rule tests and the real
  # scrapes. Installed when root on Debian; elsewhere those tests skip (an expected skip).
  if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
      && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus \
      >/dev/null 2>&1) || echo "note: prometheus could not be installed: its tests will skip, and fail the run as unexpected skips"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  demo) setup; exec "$VENV/bin/freshrec" demo "$@" ;;
  test)
    setup
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    site=$(mktemp -d)
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet -d "$site"
    rm -rf "$site"
    "$VENV/bin/python" -m bench.docs --check
    # Two test processes: most integration tests wait on a broker, Redis or a subprocess,
    # so two overlap well even on two cores (FRESHREC_TEST_WORKERS overrides; 0 = one process).
    exec "$VENV/bin/python" -m pytest -q -p no:logging -n "${FRESHREC_TEST_WORKERS:-2}" "$@"
    ;;
  *) echo "usage: ./dev.sh demo [freshrec demo flags] | ./dev.sh test [pytest flags]" >&2; exit 2 ;;
esac
