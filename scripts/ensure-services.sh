#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers the tests use answer on their default local ports.
# Starts the machine's own servers when they are down (the commands this machine's images use),
# and otherwise throwaway ones from the local binaries, kept under .services/.
set -euo pipefail

PG_PORT=${PG_PORT:-5432}
REDIS_PORT=${REDIS_PORT:-6379}
here=$(cd "$(dirname "$0")/.." && pwd)
state="$here/.services"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
  for _ in $(seq 1 60); do up "$1" && return 0; sleep 0.5; done
  echo "ensure-services: $2 did not come up on port $1" >&2
  return 1
}

start_postgres() {
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start && return 0
  fi
  local bindir
  bindir=$(dirname "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")
  mkdir -p "$state"
  if [ ! -d "$state/pg" ]; then
    "$bindir/initdb" -D "$state/pg" -U postgres --auth=trust >/dev/null
  fi
  "$bindir/pg_ctl" -D "$state/pg" -o "-p $PG_PORT -k $state -c listen_addresses=127.0.0.1" -l "$state/pg.log" start >/dev/null
}

start_redis() {
  mkdir -p "$state"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$state" --logfile "$state/redis.log"
}

if ! up "$PG_PORT"; then
  echo "ensure-services: starting PostgreSQL on port $PG_PORT"
  start_postgres
  wait_up "$PG_PORT" PostgreSQL
fi
if ! up "$REDIS_PORT"; then
  echo "ensure-services: starting Redis on port $REDIS_PORT"
  start_redis
  wait_up "$REDIS_PORT" Redis
fi
# The tests connect as `postgres` to the `test` database; a throwaway cluster needs that database.
if ! psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -qAtc 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null
fi
echo "ensure-services: PostgreSQL :$PG_PORT and Redis :$REDIS_PORT are up"
