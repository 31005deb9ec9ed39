#!/usr/bin/env bash
# Install LocalStack (host mode, no Docker) into its own virtual environment: .localstack/venv.
#
# LocalStack 2026.3.0 (the last localstack-core release on PyPI) needs Python 3.13, while the
# project runs on 3.11, so it gets a venv of its own. The interpreter is, in order:
# $LOCALSTACK_PYTHON, python3.13 on PATH, /root/.pyenv/versions/3.13.*/bin/python3.13.
# Idempotent: a stamp file records what was installed; nothing runs when it matches.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE=.localstack
VENV=$STATE/venv
STAMP=$VENV/.cloudex-localstack-installed

# Everything pip installs, pinned. localstack-core 2026.3.0 breaks with cbor2 6, pyOpenSSL 25
# and cryptography 45, and imports service_identity and joserfc without declaring them.
PACKAGES=(
  "localstack-core[base-runtime]==2026.3.0"
  "cbor2<6"
  "pyopenssl<25"
  "cryptography<45"
  "service_identity"
  "joserfc"
)

is_python_313() {
  [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1
}

find_python() {
  if [ -n "${LOCALSTACK_PYTHON:-}" ]; then
    if is_python_313 "$LOCALSTACK_PYTHON"; then
      echo "$LOCALSTACK_PYTHON"
      return
    fi
    echo "LOCALSTACK_PYTHON=$LOCALSTACK_PYTHON is not a working Python 3.13." >&2
    exit 1
  fi
  local candidate
  # A pyenv shim for python3.13 is on PATH even when it refuses to run, so each is tried.
  for candidate in "$(command -v python3.13 || true)" /root/.pyenv/versions/3.13.*/bin/python3.13; do
    if is_python_313 "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  cat >&2 <<'EOF'
LocalStack needs Python 3.13 (3.11 and 3.12 do not run localstack-core 2026.3.0) and none was found.
Install one, then run this again, for example:
  pyenv install 3.13            (pyenv)
  apt-get install python3.13    (Debian 13 / Ubuntu 24.10+)
or point LOCALSTACK_PYTHON at a python3.13 executable.
EOF
  exit 1
}

want=$(printf '%s\n' "${PACKAGES[@]}" | sha256sum | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

python=$(find_python)
mkdir -p "$STATE"
if ! is_python_313 "$VENV/bin/python"; then
  echo "==> creating $VENV with $python"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
fi
echo "==> installing ${PACKAGES[0]} into $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${PACKAGES[@]}"
echo "$want" > "$STAMP"
