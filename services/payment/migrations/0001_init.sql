-- Payments, and the outbox that carries their outcomes to the order service.

CREATE TABLE payments (
    id              uuid PRIMARY KEY,
    order_id        uuid NOT NULL,
    user_id         uuid NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),   -- minor units
    currency        char(3) NOT NULL,
    method          text NOT NULL CHECK (method IN ('fake-card', 'fake-card-declined')),
    status          text NOT NULL CHECK (status IN ('SUCCEEDED', 'DECLINED')),
    idempotency_key text,
    request_hash    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX payments_order_idx ON payments (order_id, created_at);
-- An order can be paid once, whatever races between different keys.
CREATE UNIQUE INDEX payments_one_success_per_order ON payments (order_id) WHERE status = 'SUCCEEDED';

-- Written in the same transaction as the payment; delivered at least once.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    payment_id      uuid NOT NULL REFERENCES payments (id),
    order_id        uuid NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('SUCCEEDED', 'DECLINED')),
    amount          bigint NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
