#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first, into the repository:
# a Python virtualenv (.venv) with the local AWS-compatible server (moto, pinned) and cfn-lint.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0

if [ ! -x .venv/bin/moto_server ] || ! .venv/bin/pip show moto 2>/dev/null | grep -q "^Version: ${MOTO_VERSION}$"; then
  echo "installing moto ${MOTO_VERSION} into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi
if [ ! -x .venv/bin/cfn-lint ] || ! .venv/bin/pip show cfn-lint 2>/dev/null | grep -q "^Version: ${CFN_LINT_VERSION}$"; then
  echo "installing cfn-lint ${CFN_LINT_VERSION} into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "cfn-lint==${CFN_LINT_VERSION}"
fi

export MOTO_SERVER="$PWD/.venv/bin/moto_server"
export CFN_LINT="$PWD/.venv/bin/cfn-lint"

cargo test --workspace --all-targets --locked "$@"
