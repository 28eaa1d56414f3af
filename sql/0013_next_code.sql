-- When the next code can go to a number: after five wrong tries, or an expired code, the desk is
-- told when it may send a new one instead of being sent into the hourly limit. Serves
-- hms2fa_tier1.

SET LOCAL ROLE hms2fa_owner;

-- The time the hourly limit (3 codes per number, whoever asks: start_verification) lets the
-- next code go to p_phone; NULL when one may go now.
CREATE FUNCTION hms2fa_api.next_code_at(p_phone text) RETURNS timestamptz
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT CASE WHEN count(*) >= 3 THEN min(r.created_at) + interval '1 hour' END
    FROM (SELECT v.created_at FROM hms2fa.phone_verifications v
           WHERE v.phone = p_phone AND v.created_at > now() - interval '1 hour'
           ORDER BY v.created_at DESC LIMIT 3) r;
END;
GRANT EXECUTE ON FUNCTION hms2fa_api.next_code_at(text) TO hms2fa_tier1;
