#!/usr/bin/env bash
# Idempotent set-up of what streamproc needs on a Debian machine (fast when warm), by purpose:
#
#   setup.sh demo   what `make demo` needs: Debian packages (Java, Maven, Redis, the plugins'
#                   data), the virtual environment (outside the clone), streamproc with its
#                   dev tools and the bundled plugins, Kafka's jars.
#   setup.sh test   (the default) the demo's set, plus the test extras, the bench tools,
#                   deploy/local/test-apt-packages.txt (Chromium and its driver for the
#                   browser tests) and the deployment validators built with Go
#                   (deploy/tools/install-tools.sh; without Go the deploy tests skip).
#
#   STREAMPROC_CACHE  cache root (default ~/.cache/streamproc)
#   STREAMPROC_VENV   virtual environment (default $STREAMPROC_CACHE/venv)
set -euo pipefail
shopt -s nullglob

PURPOSE="${1:-test}"
case "$PURPOSE" in
  demo|test) ;;
  *) echo "usage: setup.sh [demo|test]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${STREAMPROC_CACHE:-$HOME/.cache/streamproc}"
VENV="${STREAMPROC_VENV:-$CACHE/venv}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"
say() { printf '[setup] %s\n' "$*" >&2; }
started=$(date +%s)

# 1. Debian packages: the core's (Java, Maven, Redis), every plugin's apt-packages.txt and,
#    for the tests only, deploy/local/test-apt-packages.txt.
packages=(openjdk-17-jre-headless maven redis-server)
lists=("$ROOT"/plugins/*/apt-packages.txt)
[ "$PURPOSE" = test ] && lists+=("$ROOT"/deploy/local/test-apt-packages.txt)
for list in "${lists[@]}"; do
  [ -f "$list" ] && while read -r pkg; do [ -n "${pkg%%#*}" ] && packages+=("${pkg%%#*}"); done < "$list"
done
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    say "missing Debian packages and no apt-get: ${missing[*]}"; exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The virtual environment, and the Python packages when any pyproject changed.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# One stamp per purpose; the test install is a superset of the demo's, so it satisfies both.
test_stamp="$VENV/.streamproc-installed"
demo_stamp="$VENV/.streamproc-installed-demo"
# The clone's path is part of the stamp: editable installs must point at this clone.
digest=$( (echo "$ROOT"; cat "$ROOT/pyproject.toml" "$ROOT"/streamproc/*/pyproject.toml "$ROOT"/plugins/*/pyproject.toml \
          "$ROOT"/plugins/*/requirements-nodeps.txt) 2>/dev/null | sha256sum | cut -c1-16)
installed() { [ "$(cat "$1" 2>/dev/null)" = "$digest" ]; }
if ! installed "$test_stamp" && { [ "$PURPOSE" = test ] || ! installed "$demo_stamp"; }; then
  say "installing streamproc and the bundled plugins for the $PURPOSE (first run downloads torch: several GB) ..."
  if [ "$PURPOSE" = test ]; then
    editable=(-e "$ROOT[test,dev,bench]" -e "$ROOT/streamproc/dev" -e "$ROOT/streamproc/bench")
    plugin_extra="[test]"
  else
    editable=(-e "$ROOT[dev]" -e "$ROOT/streamproc/dev")
    plugin_extra=""
  fi
  for plugin in "$ROOT"/plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && editable+=(-e "${plugin%/}$plugin_extra")
  done
  "$VENV/bin/pip" install -q --progress-bar off "${editable[@]}"
  for nodeps in "$ROOT"/plugins/*/requirements-nodeps.txt; do
    [ -f "$nodeps" ] && "$VENV/bin/pip" install -q --no-deps -r "$nodeps"
  done
  if [ "$PURPOSE" = test ]; then echo "$digest" > "$test_stamp"; else echo "$digest" > "$demo_stamp"; fi
fi

# 3. Apache Kafka's jars (Maven Central), cached outside the clone.
"$VENV/bin/python" -m streamproc stack fetch >/dev/null

# 4. Tests only: the validators of deploy/ (kustomize, promtool, streamproc-validate), built
#    from the Go module proxy once (minutes and ~3 GB of Go caches cold). The demo never needs
#    them; without Go the deployment tests skip with that reason.
if [ "$PURPOSE" = test ]; then
  if command -v go >/dev/null; then
    "$ROOT/deploy/tools/install-tools.sh"
  else
    say "Go is not installed: the deployment tests (tests/deploy) will be skipped"
  fi
fi

say "ready for the $PURPOSE in $(( $(date +%s) - started )) s (venv: $VENV)"
