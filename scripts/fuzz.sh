#!/usr/bin/env bash
# `make fuzz`: schemathesis, with every check (fuzz/schemathesis.toml), against the
# OpenAPI document of every service and the gateway's merged one, on a store of its own
# started like `make dev` does: its own databases (mercato_fuzz_*), state folder
# (.state/fuzz, reset each run) and ports, so a `make dev` store can keep running.
# Requests that need a bearer token carry the admin's, from the store's generated
# credentials. The gateway's per-client rate limit is lifted (the fuzzer is one client
# sending thousands of requests); auth's login limits stay, and their 429 is documented.
# The store is stopped at the end, whatever happens.
#
# Environment: MERCATO_BIN_DIR (the service binaries; the Makefile builds them),
# FUZZ_EXAMPLES (examples per operation, default 100; CI runs fewer), FUZZ_SEED
# (default 1), FUZZ_PORT_BASE (default: the first free one from 18080, stepping by 10),
# FUZZ_WORKERS (default 2), FUZZ_PYTHON (the Python of its virtualenv; default the newest
# of python3.13, python3.12, pyenv's 3.12/3.13, python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TOOLS=${MERCATO_TOOLS_DIR:-$ROOT/.tools}
VENV=$TOOLS/fuzz-venv
BIN_DIR=${MERCATO_BIN_DIR:-target/debug}
EXAMPLES=${FUZZ_EXAMPLES:-100}
SEED=${FUZZ_SEED:-1}
WORKERS=${FUZZ_WORKERS:-2}
STATE=$ROOT/.state/fuzz

say() { printf 'fuzz: %s\n' "$*" >&2; }

# schemathesis trips over a CPython 3.11 bug ("SystemError: AST constructor recursion
# depth mismatch"): prefer a newer Python when there is one.
pick_python() {
  local p
  for p in python3.13 python3.12 "$(pyenv root 2>/dev/null)"/versions/3.1[23]*/bin/python3 python3; do
    if "$p" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  say "no python3 found"; return 1
}
PYTHON=${FUZZ_PYTHON:-$(pick_python)}

ensure_schemathesis() {
  local want lock
  want="$(sha256sum fuzz/requirements.txt | cut -d' ' -f1) $("$PYTHON" --version 2>&1)"
  mkdir -p "$TOOLS" && exec {lock}>"$TOOLS/.fuzz-lock"
  flock "$lock"
  if [[ ! -x $VENV/bin/schemathesis || "$(cat "$VENV/.pinned" 2>/dev/null)" != "$want" ]]; then
    say "installing schemathesis into $VENV (once)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || { say "$PYTHON -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"; return 1; }
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r fuzz/requirements.txt
    echo "$want" >"$VENV/.pinned"
  fi
  exec {lock}>&-
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port_base() {
  local base
  for ((base = 18080; base < 19080; base += 10)); do
    if port_free "$base" && port_free $((base + 1)) && port_free $((base + 2)) \
      && port_free $((base + 3)) && port_free $((base + 4)); then
      echo "$base"; return 0
    fi
  done
  say "no free ports between 18080 and 19080"; return 1
}

ensure_schemathesis
PORT_BASE=${FUZZ_PORT_BASE:-$(pick_port_base)}
GATEWAY=http://127.0.0.1:$PORT_BASE
PG_URL=$(scripts/postgres.sh)
mkdir -p "$STATE"
LOG=$STATE/store.log

say "starting a store on $GATEWAY (log: $LOG)"
MERCATO_POSTGRES_URL="$PG_URL" MERCATO_STATE_DIR="$STATE/store" MERCATO_DB_PREFIX=mercato_fuzz_ \
  PORT_BASE=$PORT_BASE RESET=true MERCATO_BIN_DIR="$BIN_DIR" LOG_LEVEL=warn \
  "$BIN_DIR/mercato-dev" --no-seed --service-flag=gateway=--rate-limit-per-minute=1000000 \
  >"$LOG" 2>&1 &
STORE=$!
stop_store() {
  if kill -0 "$STORE" 2>/dev/null; then
    say "stopping the store"
    kill -INT "$STORE" 2>/dev/null || true
    wait "$STORE" 2>/dev/null || true
  fi
}
trap stop_store EXIT

for ((i = 0; ; i++)); do
  if curl -fsS -o /dev/null "$GATEWAY/health" 2>/dev/null; then break; fi
  if ! kill -0 "$STORE" 2>/dev/null || ((i >= 240)); then
    say "the store did not become healthy; its log:"; tail -n 40 "$LOG" >&2; exit 1
  fi
  sleep 0.5
done

ADMIN_PASSWORD=$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_password"])' "$STATE/store/secrets.json")
MERCATO_FUZZ_TOKEN=$(curl -fsS "$GATEWAY/auth/login" -H 'content-type: application/json' \
  -d "$("$VENV/bin/python" -c 'import json,sys; print(json.dumps({"username": "admin", "password": sys.argv[1]}))' "$ADMIN_PASSWORD")" \
  | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
export MERCATO_FUZZ_TOKEN

failed=()
# The gateway's port is PORT_BASE; auth, product, order and payment the next four.
for entry in gateway:0 auth:1 product:2 order:3 payment:4; do
  name=${entry%%:*}
  url=http://127.0.0.1:$((PORT_BASE + ${entry##*:}))
  say "$name: $url/openapi.json, $EXAMPLES examples per operation"
  if ! "$VENV/bin/schemathesis" --config-file fuzz/schemathesis.toml run "$url/openapi.json" \
    --url "$url" --max-examples "$EXAMPLES" --seed "$SEED" --workers "$WORKERS" \
    --checks all; then
    failed+=("$name")
  fi
done

if ((${#failed[@]})); then
  say "failures in: ${failed[*]}"
  exit 1
fi
say "no failures against any document"
