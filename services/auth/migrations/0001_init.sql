-- Users, refresh-token families and service clients of the auth service.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL CONSTRAINT users_username_key UNIQUE,
    email         text NOT NULL CONSTRAINT users_email_key UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('admin', 'customer')),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One family per login; every refresh rotates the token within the family.
-- Presenting a rotated token again revokes the whole family.
CREATE TABLE refresh_families (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX refresh_families_user_idx ON refresh_families (user_id);

-- Only the SHA-256 of each opaque token is stored.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id  uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    rotated_at timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

-- Access tokens revoked by logout before their expiry; consulted by introspection.
CREATE TABLE revoked_access_tokens (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

-- OAuth2 client-credentials clients, one per calling service; synced from configuration.
CREATE TABLE service_clients (
    client_id   text PRIMARY KEY,
    secret_hash bytea NOT NULL,
    scopes      text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
