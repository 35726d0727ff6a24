#!/usr/bin/env bash
# Prints a PostgreSQL server URL for tests and the devstack, finding or starting a server:
#   1. $DATABASE_URL when set;
#   2. a server already answering on 127.0.0.1:5432 (user postgres, trust auth);
#   3. otherwise a throwaway cluster under .state/postgres, started from the system's
#      PostgreSQL binaries on port $MERCATO_PG_PORT (default 55432).
# Progress goes to stderr; only the URL goes to stdout.
# MERCATO_PG_THROWAWAY=1 skips steps 1-2 (used to test step 3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.state/postgres"
port="${MERCATO_PG_PORT:-55432}"
say() { echo "postgres: $*" >&2; }

if [[ "${MERCATO_PG_THROWAWAY:-0}" != 1 ]]; then
  if [[ -n "${DATABASE_URL:-}" ]]; then
    echo "$DATABASE_URL"; exit 0
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    say "using the server on 127.0.0.1:5432"
    echo "postgres://postgres@127.0.0.1:5432/postgres"; exit 0
  fi
fi

find_bin() {
  local name=$1 dir
  if command -v "$name" >/dev/null 2>&1; then dirname "$(command -v "$name")"; return 0; fi
  for dir in /usr/lib/postgresql/*/bin /usr/local/pgsql/bin /opt/homebrew/opt/postgresql*/bin /usr/local/opt/postgresql*/bin; do
    [[ -x "$dir/$name" ]] && { echo "$dir"; return 0; }
  done
  return 1
}

if ! bindir="$(find_bin initdb)" || [[ ! -x "$bindir/pg_ctl" ]]; then
  cat >&2 <<'MSG'
postgres: no PostgreSQL server is reachable and no PostgreSQL binaries were found.
  Either point DATABASE_URL at a server (e.g. postgres://postgres@127.0.0.1:5432/postgres),
  or install PostgreSQL so a throwaway server can be started:
    Debian/Ubuntu:  sudo apt-get install postgresql
    Fedora:         sudo dnf install postgresql-server
    macOS:          brew install postgresql@16
MSG
  exit 1
fi

# PostgreSQL refuses to run as root; run it as the `postgres` user when we are root.
as_pg=()
if [[ "$(id -u)" == 0 ]]; then
  if id postgres >/dev/null 2>&1; then
    as_pg=(runuser -u postgres --)
  else
    say "running as root and there is no 'postgres' user to start the server as"; exit 1
  fi
fi

mkdir -p "$state"
[[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$state"
if [[ ! -f "$state/data/PG_VERSION" ]]; then
  say "initialising a throwaway cluster in $state/data"
  "${as_pg[@]}" "$bindir/initdb" -D "$state/data" -U postgres --auth=trust -E UTF8 >"$state/initdb.log" 2>&1 \
    || { say "initdb failed; see $state/initdb.log"; exit 1; }
fi
if ! "${as_pg[@]}" "$bindir/pg_ctl" -D "$state/data" status >/dev/null 2>&1; then
  say "starting it on 127.0.0.1:$port"
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$state/data" -l "$state/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c max_connections=300 -c fsync=off" start >&2 \
    || { say "the server did not start; see $state/server.log"; exit 1; }
fi
echo "postgres://postgres@127.0.0.1:$port/postgres"
