-- The audit record: hash-chained, append-only, written under session_user by every change in
-- the change's own transaction; its head anchored outside the database. Serves every role
-- that changes anything (through hms2fa.audit), hms2fa_tier1 and hms2fa_auditor (the view),
-- hms2fa_auditor (verify, hashes) and hms2fa_batch (the head, to anchor it).

SET LOCAL ROLE hms2fa_owner;

-- Clean text -------------------------------------------------------------------------------

-- Text a person typed that the record keeps: 1 to 500 characters, no C0 or C1 control, DEL,
-- bidirectional override or isolate, or zero-width character (what can hide or reorder text).
CREATE FUNCTION hms2fa.is_clean_text(p_text text) RETURNS boolean
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
RETURN char_length(p_text) <= 500
   AND p_text !~ '[\x01-\x1F\x7F-\x9F\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]';

-- The same text made clean, for text a program wrote (a delivery program's error line).
CREATE FUNCTION hms2fa.clean_text(p_text text) RETURNS text
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  SET search_path = pg_catalog, pg_temp
RETURN left(regexp_replace(p_text, '[\x01-\x1F\x7F-\x9F\u061C\u200B-\u200F\u202A-\u202E\u2060-\u2069\uFEFF]', ' ', 'g'),
            500);

CREATE TABLE hms2fa.audit_events (
  event_id   bigint PRIMARY KEY,
  at         timestamptz NOT NULL,
  actor      text NOT NULL,
  action     text NOT NULL CONSTRAINT action_format CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
  account_id text,
  ticket     text,
  reason     text,
  details    jsonb NOT NULL DEFAULT '{}',
  prev_hash  bytea NOT NULL,
  hash       bytea NOT NULL
);

CREATE INDEX audit_events_account_idx ON hms2fa.audit_events (account_id, event_id);
CREATE INDEX audit_events_actor_idx ON hms2fa.audit_events (actor, event_id);
CREATE INDEX audit_events_at_idx ON hms2fa.audit_events (at);

-- The chain's head: the last event's id and hash. Appending locks this row until commit, which
-- orders concurrent writers and keeps ids gapless (a missing id means a deleted event).
CREATE TABLE hms2fa.audit_chain_head (
  only_row      boolean PRIMARY KEY DEFAULT true CONSTRAINT single_row CHECK (only_row),
  last_event_id bigint NOT NULL,
  last_hash     bytea NOT NULL
);
INSERT INTO hms2fa.audit_chain_head (last_event_id, last_hash) VALUES (0, decode(repeat('00', 32), 'hex'));

-- hash = sha256(prev_hash || canonical JSON array of the event's fields). jsonb's text form is
-- canonical (keys sorted, no insignificant space); the time is fixed to UTC microseconds so the
-- session's TimeZone can't change it.
CREATE FUNCTION hms2fa.audit_digest(
  p_prev_hash bytea, p_event_id bigint, p_at timestamptz, p_actor text, p_action text,
  p_account_id text, p_ticket text, p_reason text, p_details jsonb
) RETURNS bytea
  LANGUAGE sql STABLE PARALLEL SAFE
  RETURN sha256(p_prev_hash || convert_to(jsonb_build_array(
           p_event_id,
           to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           p_actor, p_action, p_account_id, p_ticket, p_reason, p_details)::text, 'UTF8'));

-- Every event, whoever inserts it: its ticket, reason and every string in its details.
CREATE FUNCTION hms2fa.audit_chain_append() RETURNS trigger
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

-- Refuses every UPDATE, DELETE and TRUNCATE of the record and of the chain's head, for every
-- role, the owner's included.
CREATE FUNCTION hms2fa.audit_events_append_only() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_events_chain BEFORE INSERT ON hms2fa.audit_events
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_chain_append();
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON hms2fa.audit_events
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON hms2fa.audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_chain_head_kept BEFORE DELETE ON hms2fa.audit_chain_head
  FOR EACH ROW EXECUTE FUNCTION hms2fa.audit_events_append_only();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON hms2fa.audit_chain_head
  FOR EACH STATEMENT EXECUTE FUNCTION hms2fa.audit_events_append_only();

-- What every change-making function calls last, in its own transaction.
CREATE FUNCTION hms2fa.audit(
  p_action text, p_account_id text, p_ticket text, p_reason text, p_details jsonb
) RETURNS bigint
  LANGUAGE sql
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  INSERT INTO hms2fa.audit_events (action, account_id, ticket, reason, details)
  VALUES (p_action, p_account_id, p_ticket, p_reason, coalesce(p_details, '{}'))
  RETURNING event_id;
END;

-- The record as staff read it: everything but the chain's hashes.
CREATE VIEW hms2fa_api.audit_events AS
  SELECT event_id, at, actor, action, account_id, ticket, reason, details
    FROM hms2fa.audit_events;
GRANT SELECT ON hms2fa_api.audit_events TO hms2fa_tier1, hms2fa_auditor;

-- Walks the chain in order; stops at the first event that doesn't match.
CREATE FUNCTION hms2fa_api.audit_verify(
  OUT events bigint, OUT ok boolean, OUT first_bad_event bigint, OUT problem text,
  OUT head_hash text
)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_event hms2fa.audit_events;
  v_expected_id bigint := 1;
  v_prev bytea := decode(repeat('00', 32), 'hex');
  v_head hms2fa.audit_chain_head;
BEGIN
  events := 0;
  ok := true;
  FOR v_event IN SELECT * FROM hms2fa.audit_events ORDER BY event_id LOOP
    IF v_event.event_id <> v_expected_id THEN
      ok := false;
      first_bad_event := v_expected_id;
      problem := format('event %s is missing (the next one is %s)', v_expected_id, v_event.event_id);
      RETURN;
    END IF;
    IF v_event.prev_hash <> v_prev THEN
      ok := false;
      first_bad_event := v_event.event_id;
      problem := format('event %s does not follow event %s', v_event.event_id, v_expected_id - 1);
      RETURN;
    END IF;
    IF v_event.hash <> hms2fa.audit_digest(v_event.prev_hash, v_event.event_id, v_event.at,
         v_event.actor, v_event.action, v_event.account_id, v_event.ticket, v_event.reason,
         v_event.details) THEN
      ok := false;
      first_bad_event := v_event.event_id;
      problem := format('event %s was altered after it was written', v_event.event_id);
      RETURN;
    END IF;
    events := events + 1;
    v_prev := v_event.hash;
    v_expected_id := v_expected_id + 1;
  END LOOP;
  SELECT * INTO STRICT v_head FROM hms2fa.audit_chain_head;
  IF v_head.last_event_id <> v_expected_id - 1 OR v_head.last_hash <> v_prev THEN
    ok := false;
    first_bad_event := v_expected_id;
    problem := format('the log ends at event %s but %s were written', v_expected_id - 1,
                      v_head.last_event_id);
    RETURN;
  END IF;
  head_hash := encode(v_prev, 'hex');
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_verify() TO hms2fa_auditor;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_head() TO hms2fa_auditor, hms2fa_batch;

-- The hashes the events p_ids have now, to compare with anchors (missing events: no row).
CREATE FUNCTION hms2fa_api.audit_hashes(p_ids bigint[])
  RETURNS TABLE (event_id bigint, hash text)
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
  SELECT e.event_id, encode(e.hash, 'hex') FROM hms2fa.audit_events e WHERE e.event_id = ANY (p_ids)
   ORDER BY e.event_id;
END;
GRANT EXECUTE ON FUNCTION hms2fa_api.audit_hashes(bigint[]) TO hms2fa_auditor;
