-- The registry: the tables other systems write (the identity feed: accounts; the sign-in
-- service: devices and remembered browsers), owned by a NOLOGIN role so that no staff login
-- owns anything.

-- Roles are cluster-wide while migrations run per database: another database of the same
-- cluster (or a concurrent migration) may have created it already.
DO $$
BEGIN
  CREATE ROLE hms2fa_owner NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'hms2fa_owner', 'MEMBER') THEN
    EXECUTE format('GRANT hms2fa_owner TO %I', current_user);
  END IF;
END
$$;

CREATE SCHEMA hms2fa AUTHORIZATION hms2fa_owner;
REVOKE ALL ON SCHEMA hms2fa FROM PUBLIC;

SET LOCAL ROLE hms2fa_owner;

-- Functions are executable by PUBLIC by default; here nothing is unless granted. (Only the
-- global form can revoke: per-schema defaults can only add to it.)
ALTER DEFAULT PRIVILEGES FOR ROLE hms2fa_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

CREATE TABLE hms2fa.accounts (
  account_id   text PRIMARY KEY
               CONSTRAINT account_id_format CHECK (account_id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  display_name text NOT NULL CONSTRAINT display_name_present CHECK (btrim(display_name) <> ''),
  email        text NOT NULL CONSTRAINT email_format CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
  status       text NOT NULL DEFAULT 'active'
               CONSTRAINT status_known CHECK (status IN ('active', 'disabled')),
  high_risk    boolean NOT NULL DEFAULT false,
  login_action text NOT NULL DEFAULT 'ask'
               CONSTRAINT login_action_known CHECK (login_action IN ('ask', 'push', 'call')),
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- Lookups: by email of record (case-insensitive), and prefix search on id, email and name.
CREATE INDEX accounts_email_idx ON hms2fa.accounts (lower(email));
CREATE INDEX accounts_id_prefix_idx ON hms2fa.accounts (account_id text_pattern_ops);
CREATE INDEX accounts_email_prefix_idx ON hms2fa.accounts (lower(email) text_pattern_ops);
CREATE INDEX accounts_name_prefix_idx ON hms2fa.accounts (lower(display_name) text_pattern_ops);

CREATE TABLE hms2fa.devices (
  device_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  account_id     text NOT NULL REFERENCES hms2fa.accounts,
  kind           text NOT NULL
                 CONSTRAINT kind_known CHECK (kind IN ('mobile', 'tablet', 'landline', 'security_key')),
  platform       text CONSTRAINT platform_known CHECK (platform IN ('ios', 'android', 'other')),
  phone          text CONSTRAINT phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{6,14}$'),
  label          text,
  activated_at   timestamptz,
  is_default     boolean NOT NULL DEFAULT false,
  created_at     timestamptz NOT NULL DEFAULT now(),
  last_used_at   timestamptz,
  retired_at     timestamptz,
  retired_reason text,
  CONSTRAINT platform_only_for_mobile CHECK (platform IS NULL OR kind = 'mobile'),
  CONSTRAINT phone_only_for_phones CHECK (phone IS NULL OR kind IN ('mobile', 'landline')),
  CONSTRAINT landline_has_phone CHECK (kind <> 'landline' OR phone IS NOT NULL),
  CONSTRAINT reason_only_when_retired CHECK (retired_reason IS NULL OR retired_at IS NOT NULL)
);

CREATE INDEX devices_account_idx ON hms2fa.devices (account_id);
CREATE INDEX devices_phone_idx ON hms2fa.devices (phone) WHERE phone IS NOT NULL;
-- At most one default among a person's devices in use.
CREATE UNIQUE INDEX devices_one_default_idx ON hms2fa.devices (account_id)
  WHERE is_default AND retired_at IS NULL;

CREATE TABLE hms2fa.remembered_browsers (
  token_hash bytea PRIMARY KEY CONSTRAINT token_hash_is_sha256 CHECK (length(token_hash) = 32),
  account_id text NOT NULL REFERENCES hms2fa.accounts,
  browser    text,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz
);

CREATE INDEX remembered_browsers_account_idx ON hms2fa.remembered_browsers (account_id);
CREATE INDEX remembered_browsers_expiry_idx ON hms2fa.remembered_browsers (expires_at);

-- Enrollment is derived, never stored (CONTRACT §1).
CREATE FUNCTION hms2fa.device_counts(p_kind text, p_activated_at timestamptz) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN p_kind IN ('landline', 'security_key') OR p_activated_at IS NOT NULL;

CREATE FUNCTION hms2fa.enrollment_of(p_account_id text) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  BEGIN ATOMIC
    SELECT CASE
             WHEN bool_or(hms2fa.device_counts(d.kind, d.activated_at)) THEN 'enrolled'
             WHEN count(*) > 0 THEN 'pending'
             ELSE 'not_enrolled'
           END
      FROM hms2fa.devices d
     WHERE d.account_id = p_account_id AND d.retired_at IS NULL;
  END;

-- Timestamps leave the database as ISO 8601 UTC text, whatever the session's TimeZone.
CREATE FUNCTION hms2fa.iso(p_at timestamptz) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');
