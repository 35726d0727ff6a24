-- Every change to a product, an admin's edit or a reservation taking or returning stock,
-- gives it a new version: the strong ETag an admin's If-Match must still carry. A trigger,
-- so no statement that writes a product (now or later) can forget to bump it.

ALTER TABLE products ADD COLUMN version bigint NOT NULL DEFAULT 1;

CREATE FUNCTION products_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;

CREATE TRIGGER products_version BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION products_next_version();
