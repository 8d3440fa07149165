#!/usr/bin/env bash
# Builds every Lambda function of the workspace for AWS Lambda (provided.al2023, arm64) with
# `cargo lambda build --release --arm64` and reports the size of each binary. cargo-lambda and
# zig come from PyPI into a virtualenv (.venv/cargo-lambda): much faster than compiling
# cargo-lambda. The binaries land in target/lambda/<function>/bootstrap (under $CARGO_TARGET_DIR
# when that is set).
#
# Not part of tests/run.sh: a release cross-build takes minutes. `sam build` (infra/samconfig.toml)
# runs the same cargo-lambda build per function.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LAMBDA_VERSION=1.9.2
VENV=.venv/cargo-lambda

installed=$("$VENV/bin/pip" show cargo-lambda 2>/dev/null || true)
if ! grep -qx "Version: ${CARGO_LAMBDA_VERSION}" <<<"$installed"; then
  echo "installing cargo-lambda ${CARGO_LAMBDA_VERSION} (with zig) into ${VENV}" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "cargo-lambda==${CARGO_LAMBDA_VERSION}"
fi
# cargo finds `cargo-lambda` on PATH; cargo-lambda finds zig (the linker for arm64) the same way.
export PATH="$PWD/$VENV/bin:$PATH"

# Every function crate of the workspace: the package name is also the binary name.
packages=()
for manifest in functions/*/Cargo.toml; do
  packages+=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$manifest" | head -n 1)")
done

# One build per function, as `sam build` does it: cargo unifies the features of the packages of
# one build, so building them together would give every function the SDKs of all.
start=$SECONDS
for package in "${packages[@]}"; do
  cargo lambda build --release --arm64 --package "$package" "$@"
done
echo "built ${#packages[@]} functions for arm64 in $((SECONDS - start)) s"

target_dir=${CARGO_TARGET_DIR:-target}
status=0
printf '%-34s %12s\n' function "binary bytes"
for package in "${packages[@]}"; do
  binary="${target_dir}/lambda/${package}/bootstrap"
  if [ -f "$binary" ]; then
    printf '%-34s %12s\n' "$package" "$(wc -c <"$binary")"
  else
    printf '%-34s %12s\n' "$package" missing
    status=1
  fi
done
exit "$status"
