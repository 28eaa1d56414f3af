-- The registry's roster version: a random value that every statement changing an account's feed
-- columns (or adding, deleting, truncating accounts) replaces, whoever runs it. A roster import
-- that kept a copy of the roster as it left it (in the feed's style, in a file of the batch
-- host) may compare the next feed with that copy instead of reading a million accounts again,
-- but only when the version is still the one the copy was made at, and when the copy's SHA-256
-- is the one noted here. Anything else, and the import reads the roster from the registry, as
-- before.
--
-- The version is changed BEFORE each statement: a writer takes this row's lock before any
-- account's, always in that order, so two writers can't deadlock over it. A transaction
-- snapshot that changes accounts after someone else changed the version gets a serialization
-- failure here (the import then tries again), never a copy that misses the other's change. (So
-- an account added by hand during an import now stops it here, with this message, before 0022's
-- "added by another session" could.)

SET LOCAL ROLE hms2fa_owner;

CREATE TABLE hms2fa.roster_version (
  only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  -- This registry, for the name of the copy's file: copies of two databases never meet.
  registry      uuid NOT NULL DEFAULT gen_random_uuid(),
  version       uuid NOT NULL DEFAULT gen_random_uuid(),
  changed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
  -- The SHA-256 of the copy made at this version, once its import noted it.
  copy_digest   bytea CHECK (octet_length(copy_digest) = 32),
  copy_noted_at timestamptz
);
INSERT INTO hms2fa.roster_version DEFAULT VALUES;
REVOKE ALL ON hms2fa.roster_version FROM PUBLIC;

-- Owner's rights: anyone who may change accounts changes the version with them.
CREATE FUNCTION hms2fa.roster_changed() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  BEGIN
    UPDATE hms2fa.roster_version
       SET version = gen_random_uuid(), changed_at = clock_timestamp(), copy_digest = NULL, copy_noted_at = NULL;
  EXCEPTION WHEN serialization_failure THEN
    -- A transaction snapshot (an import) that changes accounts after another session did.
    RAISE EXCEPTION 'the accounts were changed by another session while this ran; nothing was changed'
      USING ERRCODE = '40001', HINT = 'run it again';
  END;
  RETURN NULL;
END
$$;

CREATE TRIGGER roster_version
  BEFORE INSERT OR DELETE OR TRUNCATE OR UPDATE OF account_id, display_name, email, status, high_risk
  ON hms2fa.accounts
  FOR EACH STATEMENT EXECUTE FUNCTION hms2fa.roster_changed();
-- Also for changes that arrive by logical replication (session_replication_role = replica),
-- which skips ordinary triggers: only an owner who disables it can get past it.
ALTER TABLE hms2fa.accounts ENABLE ALWAYS TRIGGER roster_version;

-- The registry's id, its roster's version and the digest of the copy made at that version (NULL
-- when none was noted), as this transaction sees them.
CREATE FUNCTION hms2fa_api.roster_version(OUT registry uuid, OUT version uuid, OUT copy_digest bytea)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT v.registry, v.version, v.copy_digest FROM hms2fa.roster_version v
$$;

-- Notes the SHA-256 of the copy an import made of the roster at p_version. Nothing is noted
-- when the roster has changed since (returns false): that copy is then never used.
CREATE FUNCTION hms2fa_api.note_roster_copy(p_version uuid, p_digest bytea) RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_version IS NULL OR p_digest IS NULL OR octet_length(p_digest) <> 32 THEN
    RAISE EXCEPTION 'a roster copy is noted by its version and its SHA-256 (32 bytes)'
      USING ERRCODE = '22023';
  END IF;
  UPDATE hms2fa.roster_version
     SET copy_digest = p_digest, copy_noted_at = clock_timestamp()
   WHERE version = p_version;
  RETURN FOUND;
END
$$;

REVOKE EXECUTE ON FUNCTION hms2fa.roster_changed(), hms2fa_api.roster_version(),
  hms2fa_api.note_roster_copy(uuid, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.roster_version(), hms2fa_api.note_roster_copy(uuid, bytea) TO hms2fa_batch;
