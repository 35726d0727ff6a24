-- Catalog, stock and reservations of the product service.

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    category    text NOT NULL,
    price       bigint NOT NULL CHECK (price >= 0),          -- minor units (cents)
    currency    char(3) NOT NULL,
    stock       integer NOT NULL CHECK (stock >= 0),         -- never negative, whatever races
    active      boolean NOT NULL DEFAULT true,               -- DELETE hides, keeps history
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_category_idx ON products (category, created_at, id) WHERE active;
CREATE INDEX products_listing_idx ON products (created_at, id) WHERE active;

-- One reservation per order, holding stock until committed, released or expired.
CREATE TABLE reservations (
    order_id   uuid PRIMARY KEY,
    status     text NOT NULL CHECK (status IN ('RESERVED', 'COMMITTED', 'RELEASED')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_expiry_idx ON reservations (expires_at) WHERE status = 'RESERVED';

CREATE TABLE reservation_items (
    order_id   uuid NOT NULL REFERENCES reservations (order_id) ON DELETE CASCADE,
    product_id uuid NOT NULL REFERENCES products (id),
    name       text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL,
    currency   char(3) NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
