#!/bin/sh
# Restores a database from a backup the Store's backup CronJob made. Mounted into
# /docker-entrypoint-initdb.d of the database's PostgreSQL container, so the image's
# entrypoint runs it only when the data directory is new: an existing database is never
# touched. It runs against the entrypoint's private init server (unix socket only), so no
# service can connect before the restore has finished.
#
# In:  POSTGRES_USER POSTGRES_DB (the image's own), RESTORE_DIR (the database's folder on
#      the backup volume), RESTORE_FILE (a dump's name in it, or `latest`); PGHOST and
#      friends where the server is not the local socket.
# Out: the dump restored in one transaction, owned by POSTGRES_USER; or, if anything goes
#      wrong, nothing restored, a marker file in PGDATA (the readiness probe then never
#      passes, so the store does not start on an empty database) and a non-zero exit.
set -eu
: "${RESTORE_DIR:?RESTORE_DIR is not set}"
: "${RESTORE_FILE:?RESTORE_FILE is not set}"
fail() {
  echo "restore: $*" >&2
  if [ -n "${PGDATA:-}" ]; then echo "$*" > "$PGDATA/mercato-restore-failed"; fi
  exit 1
}
if [ "$RESTORE_FILE" = latest ]; then
  # A glob expands sorted, and the names sort by time: the last is the newest.
  newest=
  for f in "$RESTORE_DIR"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.dump; do
    if [ -f "$f" ]; then newest=${f##*/}; fi
  done
  [ -n "$newest" ] || fail "no backup in $RESTORE_DIR"
  RESTORE_FILE=$newest
fi
case $RESTORE_FILE in
  */* | .*) fail "RESTORE_FILE names a dump in $RESTORE_DIR, not a path: '$RESTORE_FILE'" ;;
esac
dump="$RESTORE_DIR/$RESTORE_FILE"
[ -f "$dump" ] || fail "$dump does not exist"
tables=$(psql --no-psqlrc --no-password --tuples-only --no-align --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --command "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')") ||
  fail "cannot read $POSTGRES_DB"
[ "$tables" = 0 ] || fail "$POSTGRES_DB already has $tables tables: it is never overwritten"
pg_restore --no-password --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --no-owner --no-privileges --single-transaction --exit-on-error "$dump" ||
  fail "pg_restore of $dump failed"
echo "restore: $POSTGRES_DB <- $dump"
