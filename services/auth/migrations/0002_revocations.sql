-- Issue 11: sessions that end everywhere. Access tokens carry their session (`sid`, the
-- refresh family of a login); ended sessions and voided users are logged here and served
-- to every service as a feed (GET /internal/revocations).

-- User tokens issued (iat) before this instant (unix seconds) are void; new tokens are
-- issued no earlier than it.
ALTER TABLE users ADD COLUMN tokens_valid_from bigint NOT NULL DEFAULT 0;

-- The revocation log. Ids are handed out under an advisory lock, so they commit in order
-- and a reader's cursor never skips a row that commits late.
CREATE TABLE revocations (
    id           bigserial PRIMARY KEY,
    sid          uuid,
    sub          uuid,
    not_before   bigint,
    -- Unix seconds after which no token the entry voids can still be valid.
    forget_after bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((sid IS NOT NULL AND sub IS NULL AND not_before IS NULL)
        OR (sid IS NULL AND sub IS NOT NULL AND not_before IS NOT NULL))
);
CREATE INDEX revocations_forget_after_idx ON revocations (forget_after);

-- Replaced by session revocation.
DROP TABLE revoked_access_tokens;

-- Addresses a user has logged in from successfully: these are not slowed by the loose
-- per-username cap that strangers' failed logins use up.
CREATE TABLE login_addresses (
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    address         text NOT NULL,
    last_success_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);
