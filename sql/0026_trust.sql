-- Records that hold against operators, and a two-person rule without side doors.
--
-- * Staff tiers are granted through hms2fa_api.change_staff, owned by hms2fa_staff_admin, a
--   NOLOGIN role that holds ADMIN OPTION on the tier roles and nothing else: operators need no
--   CREATEROLE, and every change is recorded. hms2fa_api.unrecorded_memberships() lists every
--   membership of a tier role that the record doesn't account for, however it was made.
-- * The chain's head can be read by the batch tier (hms2fa_api.audit_head) to be anchored
--   outside the database, and anchored heads checked by the auditor (hms2fa_api.audit_hashes).
-- * While a reset request is pending, no direct reset of the account; a request can be
--   withdrawn; a request uses up the identity proof it relied on; an identity code goes only to
--   a device that counts.
-- * Free text in an audit event (ticket, reason, any string in its details) is at most 500
--   characters, with no control, bidirectional or zero-width characters.
-- * A tier-1 agent cancels only the codes they started.

DO $$
BEGIN
  CREATE ROLE hms2fa_staff_admin NOLOGIN NOINHERIT;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

-- ADMIN OPTION on the tier roles only: the one thing hms2fa_staff_admin may do is grant them.
GRANT hms2fa_tier1, hms2fa_tier2, hms2fa_batch, hms2fa_auditor, hms2fa_signin, hms2fa_delivery
  TO hms2fa_staff_admin WITH ADMIN OPTION;

SET LOCAL ROLE hms2fa_owner;

-- Clean text (hms2fa.is_clean_text, 0024) -----------------------------------------------------

-- Every event, whoever inserts it: its ticket, reason and every string in its details.
CREATE OR REPLACE FUNCTION hms2fa.audit_chain_append() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_head hms2fa.audit_chain_head;
BEGIN
  IF NOT hms2fa.is_clean_text(coalesce(NEW.ticket, '')) OR NOT hms2fa.is_clean_text(coalesce(NEW.reason, '')) THEN
    RAISE EXCEPTION 'a ticket or reason is at most 500 characters, without control or invisible characters'
      USING ERRCODE = 'H2U10', HINT = 'type it plainly, shorter';
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_path_query(coalesce(NEW.details, '{}'), 'strict $.**') v
              WHERE jsonb_typeof(v) = 'string' AND NOT hms2fa.is_clean_text(v #>> '{}')) THEN
    RAISE EXCEPTION 'text in an audit event is at most 500 characters, without control or invisible characters'
      USING ERRCODE = 'H2U10';
  END IF;
  SELECT * INTO STRICT v_head FROM hms2fa.audit_chain_head FOR UPDATE;
  NEW.event_id := v_head.last_event_id + 1;
  NEW.at := clock_timestamp();
  -- The login that made the change, never a name a client supplied.
  NEW.actor := session_user;
  NEW.details := coalesce(NEW.details, '{}');
  NEW.prev_hash := v_head.last_hash;
  NEW.hash := hms2fa.audit_digest(NEW.prev_hash, NEW.event_id, NEW.at, NEW.actor, NEW.action,
                                  NEW.account_id, NEW.ticket, NEW.reason, NEW.details);
  UPDATE hms2fa.audit_chain_head SET last_event_id = NEW.event_id, last_hash = NEW.hash;
  RETURN NEW;
END
$$;

-- Staff tiers --------------------------------------------------------------------------------

DROP FUNCTION hms2fa_api.record_staff_change(text, text, boolean, text);

-- The record of a staff change, for hms2fa_api.change_staff only (it alone may call this).
CREATE FUNCTION hms2fa.record_staff_change(p_login text, p_group text, p_granted boolean, p_ticket text)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_granted IS DISTINCT FROM EXISTS (
       SELECT 1 FROM pg_auth_members m
         JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
        WHERE g.rolname = p_group AND u.rolname = p_login) THEN
    RAISE EXCEPTION 'the membership of % in % is not what is being recorded', p_login, p_group
      USING ERRCODE = 'H2D01';
  END IF;
  RETURN hms2fa.audit(CASE WHEN p_granted THEN 'staff.granted' ELSE 'staff.revoked' END,
                      NULL, p_ticket, NULL,
                      jsonb_build_object('login', p_login, 'role', p_group));
END
$$;

REVOKE ALL ON FUNCTION hms2fa.record_staff_change(text, text, boolean, text) FROM PUBLIC;
GRANT USAGE ON SCHEMA hms2fa TO hms2fa_staff_admin;
GRANT EXECUTE ON FUNCTION hms2fa.record_staff_change(text, text, boolean, text) TO hms2fa_staff_admin;
GRANT EXECUTE ON FUNCTION hms2fa.check_ticket(text) TO hms2fa_staff_admin;

-- The function is created by hms2fa_staff_admin itself, which may create in hms2fa_api only for
-- the moment it takes.
RESET ROLE;
GRANT USAGE, CREATE ON SCHEMA hms2fa_api TO hms2fa_staff_admin;
DO $$
BEGIN
  IF NOT pg_has_role(current_user, 'hms2fa_staff_admin', 'MEMBER') THEN
    EXECUTE format('GRANT hms2fa_staff_admin TO %I', current_user);
  END IF;
END
$$;
SET LOCAL ROLE hms2fa_staff_admin;

-- Grants (p_grant) or revokes a staff tier, and records it in the same transaction. Granting a
-- membership that exists already records it: how an operator adopts one that
-- unrecorded_memberships() reported, after checking it.
CREATE FUNCTION hms2fa_api.change_staff(p_login text, p_tier text, p_grant boolean, p_ticket text)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_role pg_roles;
  v_group text;
  v_member boolean;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_grant IS NULL THEN
    RAISE EXCEPTION 'say whether to grant or revoke' USING ERRCODE = 'H2U02';
  END IF;
  IF p_tier IS NULL OR p_tier NOT IN ('tier1', 'tier2', 'batch', 'auditor', 'signin', 'delivery') THEN
    RAISE EXCEPTION 'unknown staff tier %', p_tier
      USING ERRCODE = 'H2U02', HINT = 'tier1, tier2, batch, auditor, signin or delivery';
  END IF;
  v_group := 'hms2fa_' || p_tier;
  SELECT * INTO v_role FROM pg_roles r WHERE r.rolname = p_login;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no database login %', p_login
      USING ERRCODE = 'H2D01', HINT = 'create it first (CREATE ROLE … LOGIN)';
  END IF;
  IF NOT v_role.rolcanlogin OR p_login LIKE 'hms2fa\_%' THEN
    RAISE EXCEPTION '% is a group role, not a login; staff tiers go to logins', p_login USING ERRCODE = 'H2D01';
  END IF;
  v_member := EXISTS (SELECT 1 FROM pg_auth_members m WHERE m.roleid = v_group::regrole AND m.member = v_role.oid);
  IF p_grant AND NOT v_member THEN
    EXECUTE format('GRANT %I TO %I', v_group, p_login);
  ELSIF NOT p_grant AND v_member THEN
    EXECUTE format('REVOKE %I FROM %I', v_group, p_login);
  END IF;
  RETURN hms2fa.record_staff_change(p_login, v_group, p_grant, p_ticket);
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.change_staff(text, text, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.change_staff(text, text, boolean, text) TO hms2fa_operator;

RESET ROLE;
REVOKE CREATE ON SCHEMA hms2fa_api FROM hms2fa_staff_admin;
SET LOCAL ROLE hms2fa_owner;

-- Memberships of the tier roles the record doesn't account for: a member whose last recorded
-- change isn't a grant, or a recorded grant whose member is gone. Roles are the cluster's, so
-- any login that may connect here counts.
CREATE FUNCTION hms2fa_api.unrecorded_memberships()
  RETURNS TABLE (login text, role text, problem text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  WITH members AS (
    SELECT u.rolname::text AS login, g.rolname::text AS role
      FROM pg_auth_members m
      JOIN pg_roles g ON g.oid = m.roleid
      JOIN pg_roles u ON u.oid = m.member
     WHERE g.rolname IN ('hms2fa_tier1', 'hms2fa_tier2', 'hms2fa_batch', 'hms2fa_auditor', 'hms2fa_signin',
                         'hms2fa_delivery')
       -- The group roles the migrations made members: tier2 of tier1, and the staff admin. A
       -- login merely named like them is no exception.
       AND NOT (u.rolname IN ('hms2fa_tier2', 'hms2fa_staff_admin') AND NOT u.rolcanlogin)
       -- Logins that may connect to this registry's database: all of them, unless CONNECT was
       -- revoked from PUBLIC, as on a cluster shared by several registries.
       AND has_database_privilege(u.oid, current_database(), 'CONNECT')
  ), recorded AS (
    SELECT DISTINCT ON (e.details->>'login', e.details->>'role')
           e.details->>'login' AS login, e.details->>'role' AS role, e.action, e.event_id
      FROM hms2fa.audit_events e
     WHERE e.action IN ('staff.granted', 'staff.revoked')
     ORDER BY e.details->>'login', e.details->>'role', e.event_id DESC
  )
  SELECT m.login, m.role,
         CASE WHEN r.action IS NULL THEN 'a member, and no grant was ever recorded'
              ELSE 'a member, but the last recorded change (event ' || r.event_id || ') revoked it' END
    FROM members m LEFT JOIN recorded r ON r.login = m.login AND r.role = m.role
   WHERE r.action IS DISTINCT FROM 'staff.granted'
  UNION ALL
  SELECT r.login, r.role, 'recorded as granted (event ' || r.event_id || '), but no longer a member'
    FROM recorded r
   WHERE r.action = 'staff.granted'
     AND NOT EXISTS (SELECT 1 FROM members m WHERE m.login = r.login AND m.role = r.role)
   ORDER BY 1, 2;
END;

REVOKE ALL ON FUNCTION hms2fa_api.unrecorded_memberships() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.unrecorded_memberships() TO hms2fa_auditor, hms2fa_batch, hms2fa_operator;

-- Anchors ------------------------------------------------------------------------------------

-- The chain's head, to be written outside the database, after the chain is checked from the
-- first event: a broken chain is never anchored.
CREATE FUNCTION hms2fa_api.audit_head(
  OUT event_id bigint, OUT hash text, OUT at timestamptz, OUT ok boolean, OUT problem text
) RETURNS record
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v record;
BEGIN
  SELECT * INTO v FROM hms2fa_api.audit_verify();
  ok := v.ok;
  problem := v.problem;
  SELECT h.last_event_id, encode(h.last_hash, 'hex') INTO event_id, hash FROM hms2fa.audit_chain_head h;
  at := clock_timestamp();
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.audit_head() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_head() TO hms2fa_batch, hms2fa_auditor;

-- The hashes the events p_ids have now, to compare with anchors (missing events: no row).
CREATE FUNCTION hms2fa_api.audit_hashes(p_ids bigint[])
  RETURNS TABLE (event_id bigint, hash text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT e.event_id, encode(e.hash, 'hex') FROM hms2fa.audit_events e WHERE e.event_id = ANY (p_ids)
   ORDER BY e.event_id;
END;

REVOKE ALL ON FUNCTION hms2fa_api.audit_hashes(bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_hashes(bigint[]) TO hms2fa_auditor;

-- Reset requests: no side door ---------------------------------------------------------------

ALTER TABLE hms2fa.reset_requests DROP CONSTRAINT state_known;
ALTER TABLE hms2fa.reset_requests
  ADD CONSTRAINT state_known CHECK (state IN ('pending', 'approved', 'withdrawn')),
  ADD COLUMN withdrawn_by text,
  ADD COLUMN withdrawn_at timestamptz,
  ADD COLUMN withdrawal_ticket text,
  ADD COLUMN identity_verification_id bigint REFERENCES hms2fa.phone_verifications;

-- The open request of an account, if any (an expired one is no longer open).
CREATE FUNCTION hms2fa.open_request(p_account_id text) RETURNS hms2fa.reset_requests
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT r.* FROM hms2fa.reset_requests r
   WHERE r.account_id = p_account_id AND r.state = 'pending' AND r.expires_at > now()
   ORDER BY r.request_id DESC LIMIT 1;
END;

CREATE OR REPLACE FUNCTION hms2fa_api.reset_enrollment(
  p_account_id text, p_ticket text, p_verified_via text, p_reason text, p_dry_run boolean
) RETURNS jsonb
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_plan jsonb;
  v_needed text[];
  v_proof hms2fa.phone_verifications;
  v_request hms2fa.reset_requests;
  v_open hms2fa.reset_requests;
  v_details jsonb := '{}';
  v_event bigint;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  IF p_verified_via IS NULL
     OR p_verified_via NOT IN ('code-on-file', 'callback', 'in-person', 'video', 'manager') THEN
    RAISE EXCEPTION 'the identity check must be code-on-file, callback, in-person, video or manager'
      USING ERRCODE = 'H2U07';
  END IF;
  -- A dry run takes no lock: it only reads.
  IF p_dry_run THEN
    SELECT * INTO v_account FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id);
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
  ELSE
    v_account := hms2fa.account_for_update(p_account_id);
  END IF;
  IF v_account.status <> 'active' THEN
    RAISE EXCEPTION 'account % is disabled; its enrollment is not reset', v_account.account_id
      USING ERRCODE = 'H2D03', HINT = 'a disabled account signs in nowhere; nothing to fix at the desk';
  END IF;

  -- A pending request is the way this account is reset, whatever verified the caller now: it is
  -- approved by a second agent, or withdrawn first.
  v_open := hms2fa.open_request(v_account.account_id);
  IF v_open.request_id IS NOT NULL AND NOT p_dry_run THEN
    RAISE EXCEPTION 'reset request % for % is pending (made by % at % UTC); nothing was changed',
      v_open.request_id, v_account.account_id, v_open.requested_by,
      to_char(v_open.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
      USING ERRCODE = 'H2R13',
            HINT = format('a different tier-2 agent approves it (enrollment approve %s), or it is withdrawn '
                          '(enrollment withdraw %s)', v_open.request_id, v_open.request_id);
  END IF;

  v_plan := hms2fa.reset_plan(v_account);
  IF v_open.request_id IS NOT NULL THEN
    v_plan := v_plan || jsonb_build_object('pending_request_id', v_open.request_id);
  END IF;
  IF jsonb_array_length(v_plan->'devices') = 0 AND (v_plan->>'links')::int = 0
     AND (v_plan->>'browsers')::int = 0 AND (v_plan->>'codes')::int = 0 THEN
    RETURN v_plan || jsonb_build_object('status', 'nothing_to_reset', 'enrollment', 'not_enrolled',
                                        'start_setup_visible', true);
  END IF;

  IF p_verified_via = 'code-on-file' THEN
    v_proof := hms2fa.identity_proof(v_account.account_id, interval '15 minutes');
    IF v_proof.verification_id IS NULL THEN
      RAISE EXCEPTION 'no identity check of % was confirmed in the last 15 minutes', v_account.account_id
        USING ERRCODE = 'H2D08',
              HINT = 'run hms2fa-admin identity check, then identity confirm, or verify the caller another way';
    END IF;
    v_details := jsonb_build_object('identity_verification_id', v_proof.verification_id,
                                    'identity_phone', v_proof.phone);
  END IF;

  v_needed := hms2fa.reset_approval_needed(v_account, p_verified_via);
  IF p_dry_run THEN
    RETURN v_plan || jsonb_build_object('status', 'dry_run', 'approval_needed', to_jsonb(v_needed));
  END IF;

  IF cardinality(v_needed) > 0 THEN
    INSERT INTO hms2fa.reset_requests (account_id, ticket, verified_via, reason, approval_needed,
                                       identity_verification_id)
    VALUES (v_account.account_id, p_ticket, p_verified_via, p_reason, v_needed, v_proof.verification_id)
    RETURNING * INTO v_request;
    -- The proof is spent on this request: it opens no other.
    IF v_proof.verification_id IS NOT NULL THEN
      UPDATE hms2fa.phone_verifications v SET used_at = clock_timestamp()
       WHERE v.verification_id = v_proof.verification_id;
    END IF;
    v_event := hms2fa.audit('enrollment.reset_requested', v_account.account_id, p_ticket, p_reason,
      jsonb_build_object('request_id', v_request.request_id, 'verified_via', p_verified_via,
                         'approval_needed', to_jsonb(v_needed), 'expires_at', hms2fa.iso(v_request.expires_at))
      || v_details);
    RETURN v_plan || jsonb_build_object(
      'status', 'pending_approval', 'request_id', v_request.request_id, 'approval_needed', to_jsonb(v_needed),
      'expires_at', hms2fa.iso(v_request.expires_at), 'event_id', v_event);
  END IF;

  RETURN v_plan || hms2fa.do_reset(v_account, p_ticket, p_verified_via, p_reason, v_details);
END
$$;

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
  IF v_request.state = 'approved' THEN
    RAISE EXCEPTION 'reset request % was already approved by % at % UTC', p_request_id, v_request.approved_by,
      to_char(v_request.approved_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
  ELSIF v_request.state = 'withdrawn' THEN
    RAISE EXCEPTION 'reset request % was withdrawn by % at % UTC', p_request_id, v_request.withdrawn_by,
      to_char(v_request.withdrawn_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') USING ERRCODE = 'H2D09';
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

-- Withdraws a pending request: its requester, or any tier-2 agent.
CREATE FUNCTION hms2fa_api.withdraw_reset(p_request_id bigint, p_ticket text, p_reason text DEFAULT NULL)
  RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_request hms2fa.reset_requests;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'there is no reset request %', p_request_id USING ERRCODE = 'H2D09',
      HINT = 'hms2fa-admin enrollment requests lists the open ones';
  END IF;
  PERFORM hms2fa.account_for_update(v_request.account_id);
  SELECT * INTO v_request FROM hms2fa.reset_requests r WHERE r.request_id = p_request_id FOR UPDATE;
  IF v_request.requested_by <> session_user AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'reset request % was made by %; only they or a tier-2 agent may withdraw it', p_request_id,
      v_request.requested_by USING ERRCODE = 'H2P05';
  END IF;
  IF v_request.state <> 'pending' OR v_request.expires_at <= now() THEN
    RAISE EXCEPTION 'reset request % is no longer pending (%)', p_request_id,
      CASE WHEN v_request.state = 'pending' THEN 'expired' ELSE v_request.state END USING ERRCODE = 'H2D09';
  END IF;
  UPDATE hms2fa.reset_requests r
     SET state = 'withdrawn', withdrawn_by = session_user, withdrawn_at = now(), withdrawal_ticket = p_ticket
   WHERE r.request_id = p_request_id;
  RETURN hms2fa.audit('enrollment.reset_withdrawn', v_request.account_id, p_ticket, p_reason,
    jsonb_build_object('request_id', p_request_id, 'requested_by', v_request.requested_by,
                       'request_ticket', v_request.ticket));
END
$$;

REVOKE ALL ON FUNCTION hms2fa_api.withdraw_reset(bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.withdraw_reset(bigint, text, text) TO hms2fa_tier1;

DROP FUNCTION hms2fa_api.reset_requests(boolean);
CREATE FUNCTION hms2fa_api.reset_requests(p_all boolean)
  RETURNS TABLE (request_id bigint, account_id text, requested_by text, ticket text, verified_via text,
                 reason text, approval_needed text[], created_at timestamptz, expires_at timestamptz, state text,
                 approved_by text, approved_at timestamptz, withdrawn_by text, withdrawn_at timestamptz)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT r.request_id, r.account_id, r.requested_by, r.ticket, r.verified_via, r.reason, r.approval_needed,
         r.created_at, r.expires_at,
         CASE WHEN r.state = 'pending' AND r.expires_at <= now() THEN 'expired' ELSE r.state END,
         r.approved_by, r.approved_at, r.withdrawn_by, r.withdrawn_at
    FROM hms2fa.reset_requests r
   WHERE (p_all AND r.created_at > now() - interval '30 days') OR (r.state = 'pending' AND r.expires_at > now())
   ORDER BY r.request_id;
END;

REVOKE ALL ON FUNCTION hms2fa_api.reset_requests(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.reset_requests(boolean) TO hms2fa_tier1;

-- Identity codes only to a device that counts --------------------------------------------------

CREATE OR REPLACE FUNCTION hms2fa_api.start_identity_check(
  p_account_id text, p_device_id bigint, p_channel text, p_ticket text
) RETURNS TABLE (verification_id bigint, phone text, expires_at timestamptz, replaced integer, device_id bigint,
                 message_id bigint)
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_device hms2fa.devices;
BEGIN
  -- Only a phone the person has proven they hold: an activated mobile or tablet, or a landline.
  -- A phone typed in during a setup never finished may be anyone's (the caller's own).
  SELECT * INTO v_device FROM hms2fa.devices d
   WHERE d.account_id = lower(p_account_id) AND d.retired_at IS NULL AND d.phone IS NOT NULL
     AND (d.kind = 'landline' OR (d.kind IN ('mobile', 'tablet') AND d.activated_at IS NOT NULL))
     AND (CASE WHEN p_device_id IS NULL THEN d.is_default ELSE d.device_id = p_device_id END);
  IF NOT FOUND THEN
    IF NOT EXISTS (SELECT 1 FROM hms2fa.accounts a WHERE a.account_id = lower(p_account_id)) THEN
      RAISE EXCEPTION 'no account has the id %', p_account_id USING ERRCODE = 'H2N01';
    END IF;
    IF p_device_id IS NULL THEN
      RAISE EXCEPTION '% has no default device in use with a phone number on file', lower(p_account_id)
        USING ERRCODE = 'H2D07', HINT = 'name a phone of theirs in use with --device (see user show), or verify identity another way';
    END IF;
    RAISE EXCEPTION 'device % is not a phone of % in use (a phone never activated does not count)', p_device_id,
      lower(p_account_id)
      USING ERRCODE = 'H2D07', HINT = 'see user show for the devices on file';
  END IF;
  RETURN QUERY
    SELECT s.verification_id, s.phone, s.expires_at, s.replaced, v_device.device_id, s.message_id
      FROM hms2fa.start_verification('identity', p_account_id, v_device.phone, v_device.device_id,
                                     p_channel, p_ticket) s;
END
$$;

-- ... and a proof only from such a device, should one be recorded another way.
CREATE FUNCTION hms2fa.identity_device_counts() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NEW.purpose = 'identity' AND NOT EXISTS (
       SELECT 1 FROM hms2fa.devices d
        WHERE d.device_id = NEW.device_id AND d.account_id = NEW.account_id AND d.retired_at IS NULL
          AND d.phone = NEW.phone
          AND (d.kind = 'landline' OR (d.kind IN ('mobile', 'tablet') AND d.activated_at IS NOT NULL))) THEN
    RAISE EXCEPTION 'an identity code goes only to a phone of the account in use' USING ERRCODE = 'H2D07';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER phone_verifications_identity_device
  BEFORE INSERT ON hms2fa.phone_verifications
  FOR EACH ROW EXECUTE FUNCTION hms2fa.identity_device_counts();

-- Cancelling a code: its starter, or a tier-2 agent ----------------------------------------

CREATE OR REPLACE FUNCTION hms2fa_api.cancel_verification(p_verification_id bigint, p_ticket text, p_reason text)
  RETURNS boolean
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v hms2fa.phone_verifications;
BEGIN
  PERFORM hms2fa.check_ticket(p_ticket);
  SELECT * INTO v FROM hms2fa.phone_verifications x WHERE x.verification_id = p_verification_id FOR UPDATE;
  IF NOT FOUND OR v.state <> 'pending' THEN
    RETURN false;
  END IF;
  IF v.created_by <> session_user AND NOT pg_has_role(session_user, 'hms2fa_tier2', 'MEMBER') THEN
    RAISE EXCEPTION 'code % was sent by %; only they or a tier-2 agent may cancel it', p_verification_id,
      v.created_by USING ERRCODE = 'H2P06';
  END IF;
  UPDATE hms2fa.phone_verifications x SET state = 'cancelled', ended_at = now()
   WHERE x.verification_id = v.verification_id;
  PERFORM hms2fa.audit('phone.verification_cancelled', v.account_id, p_ticket, p_reason,
    jsonb_build_object('verification_id', v.verification_id, 'purpose', v.purpose, 'phone', v.phone));
  RETURN true;
END
$$;
