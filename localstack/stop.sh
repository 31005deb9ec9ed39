#!/usr/bin/env bash
# Stop the LocalStack that start.sh started (its pid is in .localstack/localstack.pid).
# Leaves alone any LocalStack it did not start (a container, another checkout's).
set -euo pipefail
cd "$(dirname "$0")/.."

PIDFILE=.localstack/localstack.pid

if [ ! -f "$PIDFILE" ]; then
  echo "LocalStack: not started by localstack/start.sh (no $PIDFILE); nothing to stop"
  exit 0
fi
pid=$(cat "$PIDFILE")

# The pid may be stale and since reused by something else: only signal our own process.
if ! kill -0 "$pid" 2>/dev/null ||
  ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main'; then
  echo "LocalStack: pid $pid is no longer running; removing $PIDFILE"
  rm -f "$PIDFILE"
  exit 0
fi

# start.sh runs it under setsid, so it leads its own process group: signal the group so that
# anything it spawned goes too. SIGTERM lets LocalStack shut its services down cleanly.
target=$pid
if [ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
  target=-$pid
fi
echo "==> stopping LocalStack (pid $pid)"
kill -TERM -- "$target" 2>/dev/null || true
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "LocalStack did not stop within 10 s; killing it" >&2
  kill -KILL -- "$target" 2>/dev/null || true
fi
rm -f "$PIDFILE"
echo "LocalStack stopped"
