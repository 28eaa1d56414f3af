-- "Remember me for 30 days", one row per browser: listing for the desk (tier1) and revoking
-- every active one of a person (tier2).

SET LOCAL ROLE hms2fa_owner;

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

CREATE FUNCTION hms2fa_api.remembered_browsers(p_account_id text)
RETURNS TABLE (browser text, created_at timestamptz, expires_at timestamptz,
               revoked_at timestamptz, state text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
    RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
  END IF;
  -- Never the token hash: the desk has no use for it.
  RETURN QUERY
    SELECT r.browser, r.created_at, r.expires_at, r.revoked_at,
           CASE WHEN r.revoked_at IS NOT NULL THEN 'revoked'
                WHEN r.expires_at <= now() THEN 'expired'
                ELSE 'active' END
      FROM hms2fa.remembered_browsers r
     WHERE r.account_id = lower(p_account_id)
     ORDER BY r.created_at DESC;
END
$$;

-- Revokes every active remembered browser of a person; writes remembered.revoked when there was
-- at least one (nothing to revoke writes nothing).
CREATE FUNCTION hms2fa_api.revoke_remembered_browsers(p_account_id text, p_ticket text, p_reason text DEFAULT NULL)
RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_revoked integer;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  v_account := hms2fa.account_for_update(p_account_id);
  UPDATE hms2fa.remembered_browsers
     SET revoked_at = now()
   WHERE account_id = v_account.account_id AND revoked_at IS NULL AND expires_at > now();
  GET DIAGNOSTICS v_revoked = ROW_COUNT;
  IF v_revoked > 0 THEN
    PERFORM hms2fa.audit('remembered.revoked', v_account.account_id, p_ticket, p_reason,
                         jsonb_build_object('revoked', v_revoked));
  END IF;
  RETURN v_revoked;
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.remembered_browsers(text) TO hms2fa_tier1;
GRANT EXECUTE ON FUNCTION hms2fa_api.revoke_remembered_browsers(text, text, text) TO hms2fa_tier2;
