#!/usr/bin/env bash
# Installs everything the tests need (cached between runs) and runs every check CI runs:
# formatting, clippy, unit tests, integration tests against a real kube-apiserver + etcd
# + kube-controller-manager and real AWS emulators, and the end-to-end tests in deployments
# mode on a real node (tests/pods.rs: hack/start-cluster.sh, the images of
# hack/build-images.sh, the chart installed as a user would).
#
#   hack/test.sh                 # everything
#   hack/test.sh --test crd      # extra arguments go to `cargo test` (the node starts only
#                                # when tests/pods.rs is among what runs)
#
# The real node needs root and cgroups: elsewhere tests/pods.rs is skipped and says so.
# First run on a fresh machine: ~8 min for the control-plane binaries, ~6 min for promtool,
# ~1 min for toxiproxy,
# ~10 min for the node binaries (kubelet, kube-proxy, kube-scheduler, CoreDNS, crictl), ~1 min
# for the emulators, ~5 min to compile, ~5 min for the release build of the images. Later runs
# reuse all of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source hack/lib/env.sh

step() { printf '\n==> %s\n' "$*" >&2; }
started=$SECONDS

for tool in cargo go node npm python3 java javac mvn openssl; do
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

step "promtool, for the alert rules and metrics checks (first time ~6 min)"
PROMTOOL=$(hack/install-promtool.sh | tail -1)
[[ -x $PROMTOOL ]] || { echo "hack/test.sh: promtool install failed" >&2; exit 1; }
export PROMTOOL

step "toxiproxy, the fault-injecting proxy of tests/network_faults.rs (first time ~1 min)"
ESM_TOXIPROXY=$(hack/install-toxiproxy.sh | tail -1)
[[ -x $ESM_TOXIPROXY ]] || { echo "hack/test.sh: toxiproxy install failed" >&2; exit 1; }
export ESM_TOXIPROXY

# The e2e tests run when they are selected (no arguments, or arguments naming pods) and the
# machine can run a node.
e2e=
if (($# == 0)) || [[ " $* " == *pods* ]]; then
  if [[ $(id -u) != 0 ]]; then
    echo "hack/test.sh: SKIPPING the e2e tests on a real node (tests/pods.rs): hack/start-cluster.sh needs root" >&2
  elif [[ ! -d /sys/fs/cgroup || -z $(ls /sys/fs/cgroup) ]]; then
    echo "hack/test.sh: SKIPPING the e2e tests on a real node (tests/pods.rs): no cgroup file system here" >&2
  else
    e2e=1
  fi
fi
if [[ -n $e2e ]]; then
  step "node binaries: kubelet, kube-proxy, kube-scheduler, CoreDNS, crictl; containerd (first time ~10 min)"
  hack/install-node.sh >/dev/null
fi

step "AWS emulators: moto, fauxqs, ElasticMQ, kinesis-local, DynamoDB Local (first time ~1 min)"
hack/emulators.sh install

step "reference filter engine: event-ruler via Maven, for tests/filter_differential.rs"
ESM_FILTER_ORACLE=$(hack/install-filter-oracle.sh | tail -1)
export ESM_FILTER_ORACLE

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

if [[ -n $e2e ]]; then
  step "real node (hack/start-cluster.sh) and the images (hack/build-images.sh) for tests/pods.rs"
  exports=$(hack/start-cluster.sh) || { echo "hack/test.sh: the cluster did not start (see above)" >&2; exit 1; }
  trap 'hack/stop-cluster.sh' EXIT
  # Only the ESM_CLUSTER_* variables: no other test may see this cluster's KUBECONFIG.
  eval "$(grep '^export ESM_CLUSTER_' <<<"$exports")"
  hack/build-images.sh operator target
fi

step "cargo test"
if (($# > 0)); then
  cargo test --locked --no-fail-fast "$@"
else
  # Every test binary is built first and then run side by side, a few at a time: most of an
  # integration binary's time is spent waiting on the servers it starts, so one binary at a
  # time leaves the cores idle (the binaries share nothing: each starts its own control plane
  # and emulators on free ports; only tests/pods.rs uses the real node).
  hack/lib/run-tests.sh
fi

step "all checks passed in $((SECONDS - started)) s"
