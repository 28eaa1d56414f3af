-- A reset request is approved as it was made. A request for a second agent's approval (0006)
-- may wait up to 24 hours; meanwhile a device may be enrolled or retired, or the email of
-- record changed, and the approver would carry out a reset neither agent saw. A request now
-- records the fingerprint of the plan it was made on (0011's, taken under the same lock, by a
-- trigger, so reset_enrollment itself is unchanged), and approve_reset refuses (H2R12, exit 75)
-- when the plan is no longer that plan; the requester then verifies the caller again and makes
-- a new request. Requests made before this migration have no fingerprint and are not checked.

SET LOCAL ROLE hms2fa_owner;

ALTER TABLE hms2fa.reset_requests ADD COLUMN plan_fingerprint text;

CREATE FUNCTION hms2fa.reset_request_fingerprint() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
BEGIN
  SELECT * INTO STRICT v_account FROM hms2fa.accounts a WHERE a.account_id = NEW.account_id;
  NEW.plan_fingerprint := hms2fa.reset_plan_fingerprint(hms2fa.reset_plan(v_account));
  RETURN NEW;
END
$$;

CREATE TRIGGER reset_requests_fingerprint BEFORE INSERT ON hms2fa.reset_requests
  FOR EACH ROW EXECUTE FUNCTION hms2fa.reset_request_fingerprint();

-- As in 0006, with the request's plan checked before anything is written.
CREATE OR REPLACE FUNCTION hms2fa_api.approve_reset(p_request_id bigint, p_ticket text) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
  v_account hms2fa.accounts;
  v_plan jsonb;
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
  -- The approver approves the request as it was made: under the lock, the plan must be the same.
  v_plan := hms2fa.reset_plan(v_account);
  IF v_request.plan_fingerprint IS NOT NULL
     AND v_request.plan_fingerprint <> hms2fa.reset_plan_fingerprint(v_plan) THEN
    RAISE EXCEPTION 'the enrollment of % changed since reset request % was made; nothing was changed',
      v_account.account_id, p_request_id
      USING ERRCODE = 'H2R12',
            HINT = 'the requesting agent verifies the caller again and makes a new request';
  END IF;

  UPDATE hms2fa.reset_requests r
     SET state = 'approved', approved_by = session_user, approved_at = now(), approval_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  PERFORM hms2fa.audit('enrollment.reset_approved', v_account.account_id, p_ticket, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket, 'verified_via', v_request.verified_via));
  RETURN v_plan || hms2fa.do_reset(v_account, p_ticket, v_request.verified_via, v_request.reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'approved_by', session_user::text));
END
$$;

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
