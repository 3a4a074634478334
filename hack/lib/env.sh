# Environment of hack/test.sh, hack/quickstart.sh and hack/bench.sh (sourced, not run).
# One cache and one cargo target dir outside the checkout, so fresh clones (CI) reuse earlier
# builds; test credentials for the AWS emulators, and never the EC2 instance metadata service:
# everything these scripts talk to is on loopback.
export ESM_CACHE_DIR=${ESM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/esm-operator}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ESM_CACHE_DIR/target}
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
