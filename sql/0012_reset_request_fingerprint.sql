-- A reset request is approved as it was made. A request for a second agent's approval (0006)
-- may wait up to 24 hours; meanwhile a device may be enrolled or retired, or the email of
-- record changed, and the approver would carry out a reset neither agent saw. A request now
-- records the fingerprint (0011) of the plan it was made on, and approving it is refused
-- (H2R12, exit 75) when the plan is no longer that plan; the requester then verifies the caller
-- again and makes a new request. Both happen in a trigger, under the account's row lock that
-- reset_enrollment and approve_reset take before they write the request, so neither function
-- changes. Requests made before this migration have no fingerprint and are not checked.

SET LOCAL ROLE hms2fa_owner;

ALTER TABLE hms2fa.reset_requests ADD COLUMN plan_fingerprint text;

CREATE FUNCTION hms2fa.reset_request_plan() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_account hms2fa.accounts;
  v_fingerprint text;
BEGIN
  SELECT * INTO STRICT v_account FROM hms2fa.accounts a WHERE a.account_id = NEW.account_id;
  v_fingerprint := hms2fa.reset_plan_fingerprint(hms2fa.reset_plan(v_account));
  IF TG_OP = 'INSERT' THEN
    NEW.plan_fingerprint := v_fingerprint;
  ELSIF OLD.state = 'pending' AND NEW.state = 'approved' AND OLD.plan_fingerprint IS NOT NULL
        AND OLD.plan_fingerprint <> v_fingerprint THEN
    RAISE EXCEPTION 'the enrollment of % changed since reset request % was made; nothing was changed',
      NEW.account_id, NEW.request_id
      USING ERRCODE = 'H2R12',
            HINT = 'the requesting agent verifies the caller again and makes a new request';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER reset_requests_plan BEFORE INSERT OR UPDATE OF state ON hms2fa.reset_requests
  FOR EACH ROW EXECUTE FUNCTION hms2fa.reset_request_plan();

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
