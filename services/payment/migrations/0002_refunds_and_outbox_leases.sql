-- A success the order refused is refunded; the outbox claims rows with a lease instead of
-- a lock held across the call, caps attempts and keeps poison events as dead letters.

ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('SUCCEEDED', 'DECLINED', 'REFUNDED'));
ALTER TABLE payments ADD COLUMN refunded_at timestamptz;

-- Claimed by a dispatcher until then; an expired lease (a dispatcher that died) is free.
ALTER TABLE outbox ADD COLUMN locked_until timestamptz;
-- Set when the event will not be delivered: refused for good, or out of attempts.
ALTER TABLE outbox ADD COLUMN dead_at timestamptz;

DROP INDEX outbox_due_idx;
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX outbox_dead_idx ON outbox (dead_at) WHERE dead_at IS NOT NULL;
