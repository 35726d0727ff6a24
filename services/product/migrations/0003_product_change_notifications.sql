-- Every committed change to a product, whoever made it (an admin's edit, a reservation
-- taking or returning stock, the expiry sweep, a hand-written UPDATE), tells every replica
-- on the channel `product_changes`, with the product's id as payload: each replica drops
-- what its catalogue cache holds of it (`src/cache`). A trigger, like the version's, so no
-- statement that writes a product (now or later) can forget to. PostgreSQL delivers the
-- notification only once the transaction commits, and not at all if it rolls back.

CREATE FUNCTION products_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('product_changes', OLD.id::text);
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.id <> OLD.id) THEN
        PERFORM pg_notify('product_changes', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER products_notify_change AFTER INSERT OR UPDATE OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION products_notify_change();

-- A TRUNCATE has no rows to name: an empty payload means "everything changed".
CREATE FUNCTION products_notify_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('product_changes', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER products_notify_truncate AFTER TRUNCATE ON products
    FOR EACH STATEMENT EXECUTE FUNCTION products_notify_truncate();
