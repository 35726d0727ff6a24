#!/bin/sh
# One logical backup of one database (run by the Store's backup CronJob, one per database,
# in the database's own PostgreSQL image, which has pg_dump and pg_restore).
#
# In:  PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE (libpq's own variables), BACKUP_DIR (the
#      database's folder on the backup volume), BACKUP_RETENTION (how many dumps to keep).
# Out: BACKUP_DIR/<UTC time>.dump, a `pg_dump -Fc` archive that `pg_restore --list` has
#      read whole; the oldest dumps beyond BACKUP_RETENTION removed. Nothing counts until
#      it is checked: a dump is written under a temporary name and renamed only then, so a
#      failed or interrupted run leaves the earlier dumps as they were and exits non-zero.
set -eu
: "${BACKUP_DIR:?BACKUP_DIR is not set}"
: "${BACKUP_RETENTION:?BACKUP_RETENTION is not set}"
case $BACKUP_RETENTION in
  '' | *[!0-9]* | 0) echo "BACKUP_RETENTION must be a whole number above 0, not '$BACKUP_RETENTION'" >&2; exit 2 ;;
esac
mkdir -p "$BACKUP_DIR"
name=$(date -u +%Y%m%dT%H%M%SZ).dump
partial="$BACKUP_DIR/.partial-$name"
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --no-password --file="$partial"
pg_restore --list "$partial" > /dev/null
mv "$partial" "$BACKUP_DIR/$name"
trap - EXIT
echo "backup: $PGDATABASE -> $BACKUP_DIR/$name ($(wc -c < "$BACKUP_DIR/$name") bytes, checked)"
# Names sort by time, and a glob expands sorted: the oldest first. Keep the newest
# BACKUP_RETENTION.
set -- "$BACKUP_DIR"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z.dump
excess=$(($# - BACKUP_RETENTION))
while [ "$excess" -gt 0 ]; do
  rm -f "$1"
  echo "backup: pruned ${1##*/}"
  shift
  excess=$((excess - 1))
done
