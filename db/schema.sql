-- The three tables of the Next.js app's PostgreSQL database that KiloClaw reads or writes
-- (original-behaviour.md §7.6). Next.js owns and migrates them in production; this file creates
-- them for local runs (`kiloclaw up --database-url …`) and for the tests, which apply it to a
-- database of their own.
--
-- KiloClaw's access:
--   kilocode_users          read   (token revocation: api_token_pepper; the session JWT's pepper)
--   kiloclaw_instances      read   (restoring a lost instance record)
--   kiloclaw_access_codes   read + write (redeeming a one-time code; `kiloclaw access-code`)

CREATE TABLE IF NOT EXISTS kilocode_users (
    id               text PRIMARY KEY,
    api_token_pepper text
);

CREATE TABLE IF NOT EXISTS kiloclaw_instances (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      text NOT NULL REFERENCES kilocode_users (id) ON DELETE CASCADE,
    sandbox_id   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz
);

-- One active instance per user (Next.js's `INSERT … ON CONFLICT DO NOTHING` relies on it).
CREATE UNIQUE INDEX IF NOT EXISTS "UQ_kiloclaw_instances_active"
    ON kiloclaw_instances (user_id, sandbox_id) WHERE destroyed_at IS NULL;

CREATE TABLE IF NOT EXISTS kiloclaw_access_codes (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code         text NOT NULL UNIQUE,
    kilo_user_id text NOT NULL REFERENCES kilocode_users (id) ON DELETE CASCADE,
    status       text NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'redeemed', 'expired')),
    expires_at   timestamptz NOT NULL,
    redeemed_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- At most one active code per user; generating a new code expires the older ones first.
CREATE UNIQUE INDEX IF NOT EXISTS "UQ_kiloclaw_access_codes_one_active_per_user"
    ON kiloclaw_access_codes (kilo_user_id) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS "IDX_kiloclaw_access_codes_user_status"
    ON kiloclaw_access_codes (kilo_user_id, status);
