#!/usr/bin/env bash
# Start LocalStack (SQS only) in host mode, without Docker, in the background.
#
# Does nothing when something on 127.0.0.1:4566 already reports SQS healthy (a LocalStack
# container, or one started earlier). Otherwise installs LocalStack if needed (install.sh),
# starts it detached, and waits until SQS is up. State lives in .localstack/:
#   fs/               LocalStack's FILESYSTEM_ROOT
#   localstack.log    its output
#   localstack.pid    its process id (stop.sh reads it)
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=127.0.0.1
PORT=4566
ENDPOINT="http://$HOST:$PORT"
STATE=$PWD/.localstack
LOG=$STATE/localstack.log
PIDFILE=$STATE/localstack.pid
TIMEOUT=${LOCALSTACK_START_TIMEOUT:-60}

sqs_healthy() {
  curl -sf -m 2 "$ENDPOINT/_localstack/health" 2>/dev/null |
    grep -Eq '"sqs": *"(available|running)"'
}

if sqs_healthy; then
  echo "LocalStack SQS already up at $ENDPOINT"
  exit 0
fi

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  # Ours, but not healthy (still starting, or wedged): wait for it below instead of starting
  # a second one that could not bind the port.
  pid=$(cat "$PIDFILE")
  echo "==> LocalStack (pid $pid) is running but not healthy yet; waiting"
else
  localstack/install.sh
  mkdir -p "$STATE/fs"
  echo "==> starting LocalStack (SQS) at $ENDPOINT; log in .localstack/localstack.log"
  # - OVERRIDE_IN_DOCKER=0: inside any container (a CI runner, a dev container) LocalStack
  #   otherwise takes itself for its own image, ignores FILESYSTEM_ROOT and writes to
  #   /var/lib/localstack and /tmp/localstack (which it wipes on exit).
  # - SERVICES=sqs with STRICT_SERVICE_LOADING (on by default): SQS and nothing else, loaded at
  #   start (EAGER_SERVICE_LOADING) so that a broken install fails here, not in the first test.
  # - SQS_ENDPOINT_STRATEGY=path with LOCALSTACK_HOST: queue URLs such as
  #   http://127.0.0.1:4566/queue/us-east-1/000000000000/orders.fifo, which need no DNS for
  #   *.localhost.localstack.cloud.
  # - DNS_ADDRESS=0: no DNS server (it wants port 53 and an upstream resolver).
  # - DISABLE_EVENTS: no analytics sent home. SKIP_SSL_CERT_DOWNLOAD: no certificate download.
  env \
    GATEWAY_LISTEN="$HOST:$PORT" \
    LOCALSTACK_HOST="$HOST:$PORT" \
    FILESYSTEM_ROOT="$STATE/fs" \
    OVERRIDE_IN_DOCKER=0 \
    SERVICES=sqs \
    EAGER_SERVICE_LOADING=1 \
    SQS_ENDPOINT_STRATEGY=path \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    PERSISTENCE=0 \
    setsid nohup "$STATE/venv/bin/python" -m localstack.runtime.main \
    >"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
fi

started=${EPOCHREALTIME/./}
deadline=$(($(date +%s) + TIMEOUT))
until sqs_healthy; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "LocalStack exited before SQS came up. Last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    rm -f "$PIDFILE"
    exit 1
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "LocalStack SQS not up after ${TIMEOUT}s (pid $pid still running). Last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  sleep 0.2
done
waited_ms=$(((${EPOCHREALTIME/./} - started) / 1000))
echo "LocalStack SQS up at $ENDPOINT (pid $pid, ready after ${waited_ms} ms)"
