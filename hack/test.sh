#!/usr/bin/env bash
# Installs everything the tests need (cached between runs) and runs every check CI runs:
# formatting, clippy, unit tests, and integration tests against a real kube-apiserver + etcd
# + kube-controller-manager and real AWS emulators.
#
#   hack/test.sh                 # everything
#   hack/test.sh --test crd      # extra arguments go to `cargo test`
#
# First run on a fresh machine: ~8 min for the control-plane binaries, ~1 min for the
# emulators, ~5 min to compile. Later runs reuse all of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh

step() { printf '\n==> %s\n' "$*" >&2; }
started=$SECONDS

for tool in cargo go node npm python3 java openssl; do
  command -v "$tool" >/dev/null || { echo "hack/test.sh: '$tool' is missing; install it first" >&2; exit 1; }
done
for component in rustfmt clippy; do
  cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 ||
    { echo "hack/test.sh: cargo $component is missing: rustup component add $component" >&2; exit 1; }
done

step "control-plane binaries: kube-apiserver, etcd, kube-controller-manager, kubectl, helm (first time ~8 min)"
KUBEBUILDER_ASSETS=$(hack/install-control-plane.sh | tail -1)
[[ -x $KUBEBUILDER_ASSETS/kube-apiserver ]] || { echo "hack/test.sh: control-plane install failed" >&2; exit 1; }
export KUBEBUILDER_ASSETS

step "AWS emulators: moto, fauxqs, kinesis-local, DynamoDB Local (first time ~1 min)"
hack/emulators.sh install

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked --no-fail-fast "$@"

step "all checks passed in $((SECONDS - started)) s"
