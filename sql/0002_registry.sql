-- The registry: the tables other systems write (the identity feed: accounts; the sign-in
-- service: devices and remembered browsers), and the helpers every job reads them with.
-- Serves hms2fa_signin (the contract's grants below); staff reach these tables only through
-- hms2fa_api.

SET LOCAL ROLE hms2fa_owner;

-- Whether the text is one address under the rule. A CHECK calling it costs about 2 µs a row more
-- than a bare regular expression (measured: a million inserts, 0.7 s against 2.7 s; a SQL
-- function with the same pinned search_path, which can't be inlined, took 3.2 s): a few seconds
-- on a first load of a million accounts, nothing on a night's few thousand changes.
CREATE FUNCTION hms2fa.is_email_address(p_text text) RETURNS boolean
  LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN octet_length(p_text) <= 254
     AND p_text ~ '^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$';
END
$$;

CREATE TABLE hms2fa.accounts (
  account_id   text PRIMARY KEY
               CONSTRAINT account_id_format
               CHECK (account_id ~ '^[a-z0-9][a-z0-9._-]*$' AND char_length(account_id) <= 64),
  display_name text NOT NULL CONSTRAINT display_name_present CHECK (btrim(display_name) <> ''),
  -- Other systems write it: any case in the domain, but one address under the rule.
  email        text NOT NULL CONSTRAINT email_format CHECK (hms2fa.is_email_address(email)),
  status       text NOT NULL DEFAULT 'active'
               CONSTRAINT status_known CHECK (status IN ('active', 'disabled')),
  high_risk    boolean NOT NULL DEFAULT false,
  login_action text NOT NULL DEFAULT 'ask'
               CONSTRAINT login_action_known CHECK (login_action IN ('ask', 'push', 'call')),
  created_at   timestamptz NOT NULL DEFAULT now()
);

-- Prefix search on id, email and name; the email index also finds an email of record in any case.
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

-- The sign-in service's grants (CONTRACT §1, §2), held in check by the two triggers below.
GRANT SELECT ON hms2fa.accounts TO hms2fa_signin;
GRANT SELECT, INSERT ON hms2fa.devices, hms2fa.remembered_browsers TO hms2fa_signin;
GRANT UPDATE (last_used_at) ON hms2fa.devices TO hms2fa_signin;
GRANT UPDATE (revoked_at) ON hms2fa.remembered_browsers TO hms2fa_signin;

-- A revocation is never undone, for any role, the owner's included (H2P03); revoking again
-- keeps the first time; the time may be at most 5 minutes ahead of the database's clock (H2D11),
-- the room left for the sign-in hosts' clocks.
CREATE FUNCTION hms2fa.remembered_browser_revocation_kept() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF OLD.revoked_at IS NOT NULL THEN
    IF NEW.revoked_at IS NULL THEN
      RAISE EXCEPTION 'a revoked remembered browser stays revoked'
        USING ERRCODE = 'H2P03',
              HINT = 'the person signs in with two factors again and ticks "Remember me" on that browser';
    END IF;
    -- Revoked again: it was revoked when it was first revoked.
    NEW.revoked_at := OLD.revoked_at;
  ELSIF NEW.revoked_at > clock_timestamp() + interval '5 minutes' THEN
    -- A sign-in host's clock far ahead: the revocation holds, as of now.
    NEW.revoked_at := clock_timestamp();
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER remembered_browsers_revocation_kept BEFORE UPDATE ON hms2fa.remembered_browsers
  FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
  EXECUTE FUNCTION hms2fa.remembered_browser_revocation_kept();

-- last_used_at only moves forward (an earlier time or NULL keeps the later use, so two sign-ins
-- on one device may commit in either order), at most 5 minutes ahead of the database's clock:
-- moving it back would switch off the reset's rule for a device used in the last 24 hours.
CREATE FUNCTION hms2fa.device_last_use_forward() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.last_used_at > clock_timestamp() + interval '5 minutes' THEN
    -- A sign-in host's clock far ahead: the use counts, as of now.
    NEW.last_used_at := clock_timestamp();
  END IF;
  -- An earlier use (or none) doesn't undo a later one.
  IF OLD.last_used_at IS NOT NULL AND (NEW.last_used_at IS NULL OR NEW.last_used_at < OLD.last_used_at) THEN
    NEW.last_used_at := OLD.last_used_at;
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER devices_last_use_forward BEFORE UPDATE ON hms2fa.devices
  FOR EACH ROW WHEN (OLD.last_used_at IS DISTINCT FROM NEW.last_used_at)
  EXECUTE FUNCTION hms2fa.device_last_use_forward();

-- Errors raised by this schema use SQLSTATE class H2, read by the tool:
--   H2U.. usage (a malformed ticket, …)     H2D.. bad data (disabled account, wrong code, …)
--   H2N.. no such account                   H2R.. try again later (rate limit)
--   H2P.. not permitted for this login
CREATE FUNCTION hms2fa.check_ticket(p_ticket text) RETURNS text
  LANGUAGE plpgsql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_ticket IS NULL OR p_ticket !~ '^[!-~]([ -~]{0,62}[!-~])?$' THEN
    RAISE EXCEPTION 'a ticket is 1 to 64 printable ASCII characters, without leading or trailing spaces'
      USING ERRCODE = 'H2U01';
  END IF;
  RETURN p_ticket;
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa.check_ticket(text) TO hms2fa_staff_admin;

-- Timestamps leave the database as ISO 8601 UTC text, whatever the session's TimeZone.
CREATE FUNCTION hms2fa.iso(p_at timestamptz) RETURNS text
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"');

-- Enrollment is derived, never stored (CONTRACT §1).
CREATE FUNCTION hms2fa.device_counts(p_kind text, p_activated_at timestamptz) RETURNS boolean
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN p_kind IN ('landline', 'security_key') OR p_activated_at IS NOT NULL;

-- The enrollment of an account: 'enrolled' (a device in use counts), 'pending' (devices, none
-- activated: "Start setup" is hidden) or 'not_enrolled' ("Start setup" is shown).
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

-- Raises H2N01 unless the account exists; returns it locked against concurrent changes.
CREATE FUNCTION hms2fa.account_for_update(p_account_id text) RETURNS hms2fa.accounts
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
BEGIN
  SELECT * INTO v_account FROM hms2fa.accounts WHERE account_id = lower(p_account_id) FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
  END IF;
  RETURN v_account;
END
$$;
