-- Releases the sweep retries are claimed soonest-due first and put off on failure, so an
-- order whose release keeps failing cannot take every sweep's batch.

ALTER TABLE orders ADD COLUMN release_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN release_next_at timestamptz NOT NULL DEFAULT now();

DROP INDEX orders_unreleased_idx;
CREATE INDEX orders_unreleased_idx ON orders (release_next_at, id)
    WHERE status IN ('CANCELLED', 'EXPIRED') AND released_at IS NULL;
