-- Hardening: five ways around the schema's rules, closed.
--
-- 1. The sign-in service's column grants (0002: UPDATE (revoked_at) of remembered_browsers,
--    UPDATE (last_used_at) of devices) let it set revoked_at back to NULL, remembering again a
--    browser the desk or a reset had revoked, and move last_used_at back, which switches off the
--    reset's rule that a device used in the last 24 hours needs a second agent. The grants stay
--    (the sign-in service relies on them); BEFORE UPDATE triggers now hold, for every role, the
--    owner's included: a revocation is never undone (H2P03) and revoking again keeps the first
--    time; last_used_at only moves forward (an earlier time or NULL keeps the later use, so two
--    sign-ins on one device may commit in either order); neither may be more than 5 minutes
--    ahead of the database's clock (H2D11), the room left for the sign-in hosts' clocks.
--
-- 2. A deadlock: the audit insert locks the chain's single head row until commit, so it must be
--    every function's last write. confirm_verification (0005) with --release wrote phone.verified
--    and then retired other accounts' devices, and approve_reset (0006) wrote
--    enrollment.reset_approved and then retired the devices; a reset of one of those accounts at
--    the same moment held its devices and waited for the head: "deadlock detected". Both now
--    write their events after every other write, in the same order as before. The reset's
--    writes and its event are split (reset_changes, record_reset) so that approve_reset can put
--    its own event between them; do_reset is the two in a row, as before.
--
-- 3. Code guessing. A wrong try was counted in a row of the caller's transaction, so a tier-1
--    login with psql could guess in a DO block, rolling each wrong guess back in a
--    subtransaction, and never reach the fifth try: thousands of guesses a second, the six
--    digits in minutes. Now every try waits a second before its code is compared, holding the
--    verification's row lock: a rollback can't give the second back, and a cancel (a
--    statement_timeout, pg_cancel_backend) before the second is up learns nothing, which it
--    would if the wait came after a wrong answer was known. Tries at one code are serialised by
--    the lock, from any number of sessions: at most one a second, so at most 600 in a code's
--    10 minutes, 0.06 % of the million codes (three codes an hour per number: 0.18 % an hour).
--    The desk's confirm takes a second longer. Expiry is checked against clock_timestamp(), not
--    now(), which stays at the start of a transaction however long it runs: a code that expires
--    in the middle of one is refused, and an identity proof counts for 15 minutes of the clock
--    (identity_proof), not of a transaction that began earlier.
--
-- 4. `staff grant` by a login with CREATEROLE that is neither a superuser nor a member of the
--    owner failed: record_staff_change (0002) was executable by nobody and the login had no
--    USAGE on hms2fa_api. Operators are now members of the NOLOGIN role hms2fa_operator, which
--    may call that function only; the function itself still refuses a caller without
--    CREATEROLE (or superuser).
--
-- 5. The expiry job could end "complete" with expired rows left: the procedure (0014) stops at
--    the first batch that deleted nothing, and a batch whose rows share one expires_at (the
--    ctid path of 0007) deleted nothing when a sign-in had updated every row it picked between
--    the pick and the delete (the update moves a row to a new ctid, so the delete's recheck no
--    longer matches it); every expired row after them was left too. A batch now takes such rows
--    again by their primary key, which no update changes, and when even that finds none (they
--    were deleted meanwhile) it goes on from there: it returns 0 only when it found no expired
--    row left, so "finished" means exactly that, and the procedure is unchanged.

DO $$
BEGIN
  CREATE ROLE hms2fa_operator NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

SET LOCAL ROLE hms2fa_owner;

-- 1. Revocations stay, last use only moves forward ------------------------------------------

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
    RAISE EXCEPTION 'a remembered browser can''t be revoked at %, more than 5 minutes ahead of the database''s clock',
      NEW.revoked_at USING ERRCODE = 'H2D11';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER remembered_browsers_revocation_kept BEFORE UPDATE ON hms2fa.remembered_browsers
  FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
  EXECUTE FUNCTION hms2fa.remembered_browser_revocation_kept();

CREATE FUNCTION hms2fa.device_last_use_forward() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.last_used_at > clock_timestamp() + interval '5 minutes' THEN
    RAISE EXCEPTION 'a device can''t have been used at %, more than 5 minutes ahead of the database''s clock',
      NEW.last_used_at USING ERRCODE = 'H2D11';
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

-- 2 and 3. confirm_verification: a second per try before the comparison, clock_timestamp()
-- for expiry, the events last -------------------------------------------------------------

-- 0005's, with the wait, the clock, and the release's device writes before its events.
CREATE OR REPLACE FUNCTION hms2fa.confirm_verification(
  p_verification_id bigint, p_candidate bytea, p_ticket text, p_release boolean
) RETURNS TABLE (outcome text, tries_left integer, account_id text, phone text, purpose text,
                 other_holders jsonb, released jsonb)
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
  v_diff integer := 0;
  v_holders jsonb;
  v_released jsonb := '[]';
  r jsonb;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_release AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'releasing a phone number from another account needs hms2fa_tier2'
      USING ERRCODE = 'H2P01', HINT = 'confirm without --release, and ask a tier-2 agent to release the number';
  END IF;
  SELECT * INTO v FROM hms2fa.phone_verifications x WHERE x.verification_id = p_verification_id FOR UPDATE;
  IF NOT FOUND OR v.state <> 'pending' THEN
    RETURN QUERY SELECT 'not_pending', 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;
  IF p_release AND v.purpose <> 'ownership' THEN
    RAISE EXCEPTION 'only a phone ownership check can release a number' USING ERRCODE = 'H2U06';
  END IF;

  -- Every try costs a second under the row lock, before anything is known of its outcome: tries
  -- at this code, from every session, come at most one a second, whether they are committed,
  -- rolled back or cancelled.
  PERFORM pg_sleep(1);

  IF v.expires_at <= clock_timestamp() THEN
    UPDATE hms2fa.phone_verifications x SET state = 'expired', ended_at = clock_timestamp()
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'code expired',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 0));
    RETURN QUERY SELECT 'expired', 0, v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;

  IF p_candidate IS NULL OR length(p_candidate) <> 32 THEN
    v_diff := 1;
  ELSE
    FOR i IN 0..31 LOOP
      v_diff := v_diff | (get_byte(v.code_hash, i) # get_byte(p_candidate, i));
    END LOOP;
  END IF;

  IF v_diff <> 0 THEN
    UPDATE hms2fa.phone_verifications x
       SET attempts = x.attempts + 1,
           state = CASE WHEN x.attempts + 1 >= 5 THEN 'failed' ELSE 'pending' END,
           ended_at = CASE WHEN x.attempts + 1 >= 5 THEN clock_timestamp() END
     WHERE x.verification_id = v.verification_id;
    PERFORM hms2fa.audit('phone.verification_failed', v.account_id, p_ticket, 'wrong code',
      jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                         'tries_left', 5 - (v.attempts + 1)));
    RETURN QUERY SELECT CASE WHEN v.attempts + 1 >= 5 THEN 'locked' ELSE 'wrong_code' END,
                        5 - (v.attempts + 1), v.account_id, v.phone, v.purpose, NULL::jsonb, NULL::jsonb;
    RETURN;
  END IF;

  UPDATE hms2fa.phone_verifications x
     SET state = 'verified', ended_at = clock_timestamp(), verified_by = session_user
   WHERE x.verification_id = v.verification_id;

  SELECT coalesce(jsonb_agg(jsonb_build_object('account_id', d.account_id, 'device_id', d.device_id)
                            ORDER BY d.account_id, d.device_id), '[]')
    INTO v_holders
    FROM hms2fa.devices d
   WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id;

  IF p_release AND jsonb_array_length(v_holders) > 0 THEN
    WITH retired AS (
      UPDATE hms2fa.devices d
         SET retired_at = now(), retired_reason = 'number reassigned', is_default = false
       WHERE d.phone = v.phone AND d.retired_at IS NULL AND d.account_id <> v.account_id
      RETURNING d.account_id, d.device_id)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
             'account_id', g.account_id, 'device_ids', to_jsonb(g.devices), 'email', g.email,
             'display_name', g.display_name) ORDER BY g.account_id), '[]')
      INTO v_released
      FROM (SELECT t.account_id, array_agg(t.device_id ORDER BY t.device_id) AS devices, a.email, a.display_name
              FROM retired t JOIN hms2fa.accounts a USING (account_id)
             GROUP BY t.account_id, a.email, a.display_name) g;
  END IF;

  -- The events last: the chain's head stays locked from here to the commit.
  PERFORM hms2fa.audit('phone.verified', v.account_id, p_ticket, NULL,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone,
                       'channel', v.channel));
  FOR r IN SELECT e.value FROM jsonb_array_elements(v_released) WITH ORDINALITY e ORDER BY e.ordinality LOOP
    PERFORM hms2fa.audit('phone.released', r->>'account_id', p_ticket, 'number reassigned',
      jsonb_build_object('phone', v.phone, 'device_ids', r->'device_ids',
                         'verified_by_account', v.account_id, 'verification_id', v.verification_id));
  END LOOP;

  RETURN QUERY SELECT 'verified', 5 - v.attempts, v.account_id, v.phone, v.purpose, v_holders, v_released;
END
$$;

-- 0005's, on the clock rather than the transaction's start.
CREATE OR REPLACE FUNCTION hms2fa.identity_proof(p_account_id text, p_within interval)
RETURNS hms2fa.phone_verifications
  LANGUAGE sql VOLATILE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT * FROM hms2fa.phone_verifications v
   WHERE v.account_id = p_account_id AND v.purpose = 'identity' AND v.state = 'verified'
     AND v.ended_at > clock_timestamp() - p_within
   ORDER BY v.ended_at DESC LIMIT 1;
END;

-- 2. The reset: its writes, then its event -------------------------------------------------

-- What a reset changes in the locked account, without its event: the devices retired (their
-- ids), and how many links, browsers and codes were revoked.
CREATE FUNCTION hms2fa.reset_changes(p_account hms2fa.accounts) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_devices bigint[];
  v_links integer;
  v_browsers integer;
  v_codes integer;
BEGIN
  WITH retired AS (
    UPDATE hms2fa.devices d SET retired_at = now(), retired_reason = 'reset', is_default = false
     WHERE d.account_id = p_account.account_id AND d.retired_at IS NULL
    RETURNING d.device_id)
  SELECT coalesce(array_agg(device_id ORDER BY device_id), '{}') INTO v_devices FROM retired;

  UPDATE hms2fa.activation_links l SET revoked_at = now(), revoked_reason = 'enrollment reset'
   WHERE l.account_id = p_account.account_id AND l.used_at IS NULL AND l.revoked_at IS NULL;
  GET DIAGNOSTICS v_links = ROW_COUNT;

  UPDATE hms2fa.remembered_browsers b SET revoked_at = now()
   WHERE b.account_id = p_account.account_id AND b.revoked_at IS NULL AND b.expires_at > now();
  GET DIAGNOSTICS v_browsers = ROW_COUNT;

  UPDATE hms2fa.phone_verifications v SET state = 'cancelled', ended_at = now()
   WHERE v.account_id = p_account.account_id AND v.state = 'pending';
  GET DIAGNOSTICS v_codes = ROW_COUNT;

  UPDATE hms2fa.accounts a SET login_action = 'ask' WHERE a.account_id = p_account.account_id;

  RETURN jsonb_build_object('device_ids', to_jsonb(v_devices), 'links', v_links, 'browsers', v_browsers,
                            'codes', v_codes);
END
$$;

-- Writes enrollment.reset for the changes reset_changes made; returns the reset's result.
CREATE FUNCTION hms2fa.record_reset(
  p_account hms2fa.accounts, p_changes jsonb, p_ticket text, p_verified_via text, p_reason text,
  p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_retired integer := jsonb_array_length(p_changes->'device_ids');
  v_event bigint;
BEGIN
  v_event := hms2fa.audit('enrollment.reset', p_account.account_id, p_ticket, p_reason,
    jsonb_build_object('devices_retired', v_retired, 'device_ids', p_changes->'device_ids',
                       'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
                       'codes_cancelled', p_changes->'codes', 'login_action_was', p_account.login_action,
                       'verified_via', p_verified_via)
    || coalesce(p_details, '{}'));

  RETURN jsonb_build_object(
    'status', 'reset', 'account_id', p_account.account_id, 'event_id', v_event,
    'devices_retired', v_retired, 'links_revoked', p_changes->'links', 'browsers_revoked', p_changes->'browsers',
    'codes_cancelled', p_changes->'codes', 'enrollment', hms2fa.enrollment_of(p_account.account_id),
    'start_setup_visible', hms2fa.enrollment_of(p_account.account_id) = 'not_enrolled',
    'email', p_account.email, 'display_name', p_account.display_name, 'verified_via', p_verified_via,
    'at', hms2fa.iso(now()));
END
$$;

-- 0006's, as the two steps above.
CREATE OR REPLACE FUNCTION hms2fa.do_reset(
  p_account hms2fa.accounts, p_ticket text, p_verified_via text, p_reason text, p_details jsonb
) RETURNS jsonb
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN hms2fa.record_reset(p_account, hms2fa.reset_changes(p_account), p_ticket, p_verified_via, p_reason,
                             p_details);
END
$$;

-- 0006's, with enrollment.reset_approved written after the reset's changes and before its event.
CREATE OR REPLACE FUNCTION hms2fa_api.approve_reset(p_request_id bigint, p_ticket text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
  v_account hms2fa.accounts;
  v_plan jsonb;
  v_changes jsonb;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no reset request %', p_request_id USING ERRCODE = 'H2D09',
      HINT = 'hms2fa-admin enrollment requests lists the open ones';
  END IF;
  -- The account first, then the request: the same order as reset_enrollment.
  v_account := hms2fa.account_for_update(v_request.account_id);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id FOR UPDATE;
  IF v_request.state <> 'pending' THEN
    RAISE EXCEPTION 'reset request % was already approved by % at % UTC', p_request_id, v_request.approved_by,
      to_char(v_request.approved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
  END IF;
  IF v_request.expires_at <= now() THEN
    RAISE EXCEPTION 'reset request % expired at % UTC', p_request_id,
      to_char(v_request.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09',
      HINT = 'verify the caller again and make a new request';
  END IF;
  IF v_request.requested_by = session_user THEN
    RAISE EXCEPTION 'you made reset request % yourself; a different tier-2 agent must approve it', p_request_id
      USING ERRCODE = 'H2P02';
  END IF;
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; its enrollment is not reset', v_account.account_id
      USING ERRCODE = 'H2D03';
  END IF;

  -- The request's trigger (0012) compares the plan before anything of the reset is changed.
  UPDATE hms2fa.reset_requests r
     SET state = 'approved', approved_by = session_user, approved_at = now(), approval_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  v_plan := hms2fa.reset_plan(v_account);
  v_changes := hms2fa.reset_changes(v_account);
  -- The events last: the chain's head stays locked from here to the commit.
  PERFORM hms2fa.audit('enrollment.reset_approved', v_account.account_id, p_ticket, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket, 'verified_via', v_request.verified_via));
  RETURN v_plan || hms2fa.record_reset(v_account, v_changes, p_ticket, v_request.verified_via, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'approved_by', session_user::text));
END
$$;

-- 5. An expiry batch returns 0 only when no expired row is left -----------------------------

-- 0007's, with the ctid path's rows taken again by key when an update moved every one of them,
-- and the search going on past rows that were deleted meanwhile.
CREATE OR REPLACE FUNCTION hms2fa_api.expire_remembered_batch(
  p_limit integer, p_before timestamptz DEFAULT NULL, p_after timestamptz DEFAULT NULL
) RETURNS TABLE (deleted integer, resume_at timestamptz)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
  SET enable_seqscan = off
  SET enable_bitmapscan = off
AS $$
DECLARE
  v_before timestamptz := least(coalesce(p_before, now()), now());
  v_from timestamptz := coalesce(p_after, '-infinity');
  v_next timestamptz;
  v_deleted integer;
BEGIN
  IF p_limit IS NULL OR p_limit < 1 OR p_limit > 100000 THEN
    RAISE EXCEPTION 'a batch is 1 to 100000 rows' USING ERRCODE = 'H2U04';
  END IF;
  LOOP
    SELECT x.expires_at INTO v_next
      FROM hms2fa.remembered_browsers x
     WHERE x.expires_at >= v_from AND x.expires_at < v_before
     ORDER BY x.expires_at
    OFFSET p_limit LIMIT 1;
    IF v_next IS NULL THEN
      v_next := v_before;  -- the rest fits in this batch
    END IF;
    -- At most p_limit rows lie before the (p_limit + 1)-th.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.expires_at >= v_from AND r.expires_at < v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    -- Nothing deleted up to the cutoff: no expired row is left.
    EXIT WHEN v_deleted > 0 OR v_next >= v_before;
    -- The first p_limit + 1 rows all expire at v_next.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.ctid = ANY (ARRAY(
             SELECT x.ctid FROM hms2fa.remembered_browsers x
              WHERE x.expires_at = v_next
              LIMIT p_limit))
       AND r.expires_at = v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    EXIT WHEN v_deleted > 0;
    -- An update (a sign-in's) moved every row picked to a new ctid between the pick and the
    -- delete: pick them again by key, which an update doesn't change.
    DELETE FROM hms2fa.remembered_browsers r
     WHERE r.token_hash = ANY (ARRAY(
             SELECT x.token_hash FROM hms2fa.remembered_browsers x
              WHERE x.expires_at = v_next
              LIMIT p_limit))
       AND r.expires_at = v_next;
    GET DIAGNOSTICS v_deleted = ROW_COUNT;
    EXIT WHEN v_deleted > 0;
    -- None is left at v_next (deleted meanwhile): the expired rows after it are still this
    -- batch's to find.
    v_from := v_next;
  END LOOP;
  RETURN QUERY SELECT v_deleted, v_next;
END
$$;

-- 4. Operators record the staff changes they make ------------------------------------------

GRANT USAGE ON SCHEMA hms2fa_api TO hms2fa_operator;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.record_staff_change(text, text, boolean, text) TO hms2fa_operator;
GRANT EXECUTE ON FUNCTION hms2fa_api.approve_reset(bigint, text) TO hms2fa_tier2;
GRANT EXECUTE ON FUNCTION hms2fa_api.expire_remembered_batch(integer, timestamptz, timestamptz) TO hms2fa_batch;
