#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first, into the repository:
# a Python virtualenv (.venv) with the local AWS-compatible server (moto, pinned) and cfn-lint, and
# AWS SAM CLI in a virtualenv of its own (.venv/sam: its boto3 pin conflicts with moto's).
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
SAM_CLI_VERSION=1.170.0

# `pip show` is read whole before matching: `grep -q` closing the pipe early would fail it under
# pipefail and force a reinstall.
moto_installed=$(.venv/bin/pip show moto 2>/dev/null || true)
if [ ! -x .venv/bin/moto_server ] || ! grep -qx "Version: ${MOTO_VERSION}" <<<"$moto_installed"; then
  echo "installing moto ${MOTO_VERSION} into .venv" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
fi
cfn_lint_installed=$(.venv/bin/pip show cfn-lint 2>/dev/null || true)
if [ ! -x .venv/bin/cfn-lint ] || ! grep -qx "Version: ${CFN_LINT_VERSION}" <<<"$cfn_lint_installed"; then
  echo "installing cfn-lint ${CFN_LINT_VERSION} into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "cfn-lint==${CFN_LINT_VERSION}"
fi

sam_installed=$(.venv/sam/bin/pip show aws-sam-cli 2>/dev/null || true)
if ! grep -qx "Version: ${SAM_CLI_VERSION}" <<<"$sam_installed"; then
  echo "installing aws-sam-cli ${SAM_CLI_VERSION} into .venv/sam (about 2 minutes, once)" >&2
  python3 -m venv .venv/sam
  .venv/sam/bin/pip install --quiet --disable-pip-version-check "aws-sam-cli==${SAM_CLI_VERSION}"
fi

export MOTO_SERVER="$PWD/.venv/bin/moto_server"
export CFN_LINT="$PWD/.venv/bin/cfn-lint"
export SAM_CLI="$PWD/.venv/sam/bin/sam"

# `--tests`: unit tests of every library and binary that has them (`test = true`) and the
# integration tests; binaries whose tests live in their library are not linked a second time.
cargo test --workspace --tests --locked "$@"
