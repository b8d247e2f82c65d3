#!/usr/bin/env bash
# Idempotent set-up of everything streamproc needs on a Debian machine (fast when warm):
# Debian packages, the virtual environment (outside the clone), streamproc and the
# bundled plugins installed through their entry points, Kafka's jars, deployment tools.
#
#   STREAMPROC_CACHE  cache root (default ~/.cache/streamproc)
#   STREAMPROC_VENV   virtual environment (default $STREAMPROC_CACHE/venv)
set -euo pipefail
shopt -s nullglob

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${STREAMPROC_CACHE:-$HOME/.cache/streamproc}"
VENV="${STREAMPROC_VENV:-$CACHE/venv}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$CACHE"
say() { printf '[setup] %s\n' "$*" >&2; }
started=$(date +%s)

# 1. Debian packages: the core's (Java, Maven, Redis) and every plugin's apt-packages.txt.
packages=(openjdk-17-jre-headless maven redis-server)
for list in "$ROOT"/plugins/*/apt-packages.txt; do
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
stamp="$VENV/.streamproc-installed"
# The clone's path is part of the stamp: editable installs must point at this clone.
digest=$( (echo "$ROOT"; cat "$ROOT/pyproject.toml" "$ROOT"/streamproc/*/pyproject.toml "$ROOT"/plugins/*/pyproject.toml \
          "$ROOT"/plugins/*/requirements-nodeps.txt) 2>/dev/null | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  say "installing streamproc and the bundled plugins (first run downloads torch: several GB) ..."
  editable=(-e "$ROOT[test,dev,bench]" -e "$ROOT/streamproc/dev" -e "$ROOT/streamproc/bench")
  for plugin in "$ROOT"/plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && editable+=(-e "${plugin%/}[test]")
  done
  "$VENV/bin/pip" install -q --progress-bar off "${editable[@]}"
  for nodeps in "$ROOT"/plugins/*/requirements-nodeps.txt; do
    [ -f "$nodeps" ] && "$VENV/bin/pip" install -q --no-deps -r "$nodeps"
  done
  echo "$digest" > "$stamp"
fi

# 3. Apache Kafka's jars (Maven Central), cached outside the clone.
"$VENV/bin/python" -m streamproc stack fetch >/dev/null

# 4. Deployment tools for the offline manifest checks, when the recipe exists.
if [ -x "$ROOT/deploy/tools/install-tools.sh" ]; then
  "$ROOT/deploy/tools/install-tools.sh"
fi

say "ready in $(( $(date +%s) - started )) s (venv: $VENV)"
