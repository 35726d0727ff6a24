-- Orders of the order service, and the payment events applied to them.

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    status          text NOT NULL CHECK (status IN ('PENDING', 'PAID', 'CANCELLED', 'EXPIRED')),
    total           bigint NOT NULL CHECK (total >= 0),          -- minor units, from the product service
    currency        char(3) NOT NULL,
    idempotency_key text,
    request_hash    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    paid_at         timestamptz,
    -- Set once the product service has returned a cancelled or expired order's stock;
    -- the sweeper retries until it is.
    released_at     timestamptz,
    CONSTRAINT orders_idempotency_key UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_user_idx ON orders (user_id, created_at DESC);
CREATE INDEX orders_status_idx ON orders (status, created_at DESC);
CREATE INDEX orders_pending_expiry_idx ON orders (expires_at) WHERE status = 'PENDING';
CREATE INDEX orders_unreleased_idx ON orders (updated_at)
    WHERE status IN ('CANCELLED', 'EXPIRED') AND released_at IS NULL;

CREATE TABLE order_items (
    order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id uuid NOT NULL,
    name       text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    currency   char(3) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- Every payment event applied, so a redelivery changes nothing.
CREATE TABLE payment_events (
    event_id    uuid PRIMARY KEY,
    order_id    uuid NOT NULL REFERENCES orders (id),
    payment_id  uuid NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('SUCCEEDED', 'DECLINED')),
    applied     boolean NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
