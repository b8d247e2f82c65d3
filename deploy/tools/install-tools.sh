#!/usr/bin/env bash
# Install the tools that validate deploy/ offline into ~/.cache/streamproc/bin (or
# $STREAMPROC_CACHE/bin), from the Go module proxy. Idempotent: a pinned version that
# is already there is not built again, so a second run takes seconds.
#
#   kustomize            builds deploy/k8s/overlays/*
#   promtool             checks and unit-tests deploy/prometheus/alerts.yml
#   streamproc-validate  strictly decodes the built manifests into the Kubernetes,
#                        Prometheus Operator and KEDA Go types (deploy/tools/validate)
#
# Needs Go >= 1.26 and the Go module proxy. Cold builds on 2 cores take minutes
# (docs/operations.md, "Validating the deployment offline", has the times).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
# Prometheus v3.16.0 (its Go module is versioned v0.316.0), the same as docker-compose's.
PROMETHEUS_MODULE_VERSION=v0.316.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${STREAMPROC_CACHE:-$HOME/.cache/streamproc}/bin"
mkdir -p "$bin"
command -v go >/dev/null || { echo "install-tools: go is not installed (Go >= 1.26 is needed)" >&2; exit 1; }

# go_install NAME PACKAGE VERSION [BUILD TAGS]: build PACKAGE@VERSION into
# $bin/NAME-VERSION once and point $bin/NAME at it.
go_install() {
    local name=$1 package=$2 version=$3 tags=${4:-}
    local target="$bin/$name-$version"
    if [[ ! -x "$target" ]]; then
        echo "install-tools: building $name $version (first time only)" >&2
        local tmp
        tmp="$(mktemp -d)"
        GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -tags "$tags" "$package@$version"
        mv "$tmp/$(basename "${package%/v[0-9]*}")" "$target"
        rm -rf "$tmp"
    fi
    ln -sfn "$name-$version" "$bin/$name"
}

go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
# Without Prometheus' service-discovery plugins (cloud SDKs: a full build takes over half
# an hour on 2 cores) except DNS, which docker-compose's scrape config uses. Rule checks
# and rule unit tests do not need any of them.
go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_MODULE_VERSION" \
    remove_all_sd,enable_dns_sd

# The validator is part of this repository: `go build` rebuilds it only when its source
# or go.mod changed (Go's build cache), so it is always current.
(cd "$here/validate" && GOFLAGS=-buildvcs=false go build -trimpath -o "$bin/streamproc-validate" .)

echo "install-tools: kustomize $KUSTOMIZE_VERSION, promtool $PROMETHEUS_MODULE_VERSION, streamproc-validate in $bin" >&2
