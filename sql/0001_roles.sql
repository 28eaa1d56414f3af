-- Roles and schemas. Serves every role: it makes them.
--
-- Group roles, all NOLOGIN; logins are members of one of them (`hms2fa-admin staff grant`):
--   hms2fa_owner        owns every table, view and function; no login is a member but the one
--                       that migrates (and a superuser)
--   hms2fa_tier1        desk agents: look-ups, activation links, codes, withdrawing a request
--   hms2fa_tier2        senior agents: all of tier1's (a member of it), resets, revocations
--   hms2fa_batch        the nightly jobs and the roster import
--   hms2fa_auditor      reads and verifies the audit record
--   hms2fa_signin       the sign-in service: the contract's column grants on the registry
--   hms2fa_delivery     the delivery service: makes, stores (hashed) and sends every secret
--   hms2fa_operator     may change staff tiers, through hms2fa_api.change_staff only
--   hms2fa_staff_admin  NOINHERIT; owns change_staff and holds ADMIN OPTION on the tier roles,
--                       nothing else
-- Two schemas, owned by hms2fa_owner: hms2fa (the tables; no staff role may touch them) and
-- hms2fa_api (the SECURITY DEFINER functions and views that are the only way in).
--
-- Errors raised by the schema use SQLSTATE class H2, read by the tool:
--   H2U.. usage (a malformed ticket, …)     H2D.. bad data (disabled account, wrong code, …)
--   H2N.. no such account                   H2R.. try again later (rate limit, busy)
--   H2P.. not permitted for this login      H2I.. internal

-- Roles are the cluster's while migrations run per database: another database of the same
-- cluster (or a concurrent migration) may have made them already. tier2 is made a member of
-- tier1 only by whoever makes the role.
DO $$
DECLARE
  v_role text;
BEGIN
  FOREACH v_role IN ARRAY ARRAY['hms2fa_owner', 'hms2fa_tier1', 'hms2fa_tier2', 'hms2fa_batch',
                                'hms2fa_auditor', 'hms2fa_signin', 'hms2fa_operator', 'hms2fa_delivery'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
      IF v_role = 'hms2fa_tier2' THEN
        GRANT hms2fa_tier1 TO hms2fa_tier2;
      END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      NULL;
    END;
  END LOOP;
  BEGIN
    CREATE ROLE hms2fa_staff_admin NOLOGIN NOINHERIT;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
  END;
END
$$;

-- ADMIN OPTION on the tier roles only: the one thing hms2fa_staff_admin may do is grant them.
GRANT hms2fa_tier1, hms2fa_tier2, hms2fa_batch, hms2fa_auditor, hms2fa_signin, hms2fa_delivery
  TO hms2fa_staff_admin WITH ADMIN OPTION;

-- The login that migrates acts as the owner (and, for a moment in 0004_staff.sql, as
-- hms2fa_staff_admin).
DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'hms2fa_owner', 'MEMBER') THEN
    EXECUTE format('GRANT hms2fa_owner TO %I', current_user);
  END IF;
  IF NOT pg_has_role(current_user, 'hms2fa_staff_admin', 'MEMBER') THEN
    EXECUTE format('GRANT hms2fa_staff_admin TO %I', current_user);
  END IF;
END
$$;

-- The import's staging tables are made by hms2fa_owner in the caller's session: it needs the
-- TEMPORARY privilege, in case PUBLIC's default was revoked.
DO $$
BEGIN
  EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO hms2fa_owner', current_database());
END
$$;

CREATE SCHEMA hms2fa AUTHORIZATION hms2fa_owner;
REVOKE ALL ON SCHEMA hms2fa FROM PUBLIC;
CREATE SCHEMA hms2fa_api AUTHORIZATION hms2fa_owner;
REVOKE ALL ON SCHEMA hms2fa_api FROM PUBLIC;

SET LOCAL ROLE hms2fa_owner;

-- Functions are executable by PUBLIC by default; here nothing is unless granted. (Only the
-- global form can revoke: per-schema defaults can only add to it.)
ALTER DEFAULT PRIVILEGES FOR ROLE hms2fa_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

GRANT USAGE ON SCHEMA hms2fa_api
  TO hms2fa_tier1, hms2fa_tier2, hms2fa_batch, hms2fa_auditor, hms2fa_signin, hms2fa_operator, hms2fa_delivery,
     hms2fa_staff_admin;
-- The sign-in service reads and writes the registry's tables itself (CONTRACT §1, §2);
-- hms2fa_staff_admin's function calls the owner's record_staff_change.
GRANT USAGE ON SCHEMA hms2fa TO hms2fa_signin, hms2fa_staff_admin;
