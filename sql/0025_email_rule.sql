-- One strict rule for email addresses, in the registry, the roster import and the mailer. 0001's
-- check ('^[^@[:space:]]+@[^@[:space:]]+$') and the roster staging table's (0008) took any text
-- without spaces around one '@': 'attacker>,<x@hms.harvard.edu' passed both, and sendmail -t,
-- reading the To: header, mailed an activation link to both addresses in it. An address is now
-- a single RFC 5322 addr-spec in dot-atom form, ASCII only: atext (letters, digits and
-- !#$%&'*+/=?^_`{|}~-) in dot-separated parts before the '@', a domain of two or more labels of
-- letters, digits and '-' (none starting or ending with '-') after it, at most 254 bytes. No
-- display name, comma, angle bracket, quote, parenthesis, space or control character. The tool
-- holds the same rule (EmailAddress.flaw(in:)), and passes the recipient to sendmail as an
-- argument.
--
-- hms2fa.accounts keeps accepting domains in any case (other systems write it); the roster's
-- staging table keeps asking for a lowercase domain, since the import lowercases domains.
--
-- A registry that holds an email breaking the rule can't take the constraint: the migration
-- names those accounts and stops, so that a person fixes them (nobody can tell which of the
-- addresses in such a text was meant), and then migrates again.

SET LOCAL ROLE hms2fa_owner;

-- Whether the text is one address under the rule. A CHECK calling it costs about 2 µs a row more
-- than 0001's bare regular expression (measured: a million inserts, 0.7 s against 2.7 s; a SQL
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

REVOKE EXECUTE ON FUNCTION hms2fa.is_email_address(text) FROM PUBLIC;
-- The batch login COPYs into the roster's staging table, whose CHECK calls it with the
-- caller's rights.
GRANT EXECUTE ON FUNCTION hms2fa.is_email_address(text) TO hms2fa_batch;

-- Nothing may add or change an account between the look below and the new constraint.
LOCK TABLE hms2fa.accounts IN ACCESS EXCLUSIVE MODE;

DO $$
DECLARE
  v_count bigint;
  v_ids text;
BEGIN
  SELECT count(*), string_agg(b.account_id, ', ' ORDER BY b.account_id) FILTER (WHERE b.n <= 20)
    INTO v_count, v_ids
    FROM (SELECT a.account_id, row_number() OVER (ORDER BY a.account_id) AS n
            FROM hms2fa.accounts a
           WHERE hms2fa.is_email_address(a.email) IS NOT TRUE) b;
  IF v_count > 0 THEN
    RAISE EXCEPTION '% account(s) have an email of record that is not a single plain address (no display name, comma, angle bracket, quote or space; e.g. jd123@hms.harvard.edu): %; correct their email in hms2fa.accounts, then run db migrate again',
      v_count, v_ids || CASE WHEN v_count > 20 THEN format(' and %s more', v_count - 20) ELSE '' END
      USING ERRCODE = 'check_violation',
            HINT = 'an address is letters, digits and !#$%&''*+/=?^_`{|}~- in parts joined by single dots, then @, then a domain such as hms.harvard.edu';
  END IF;
END
$$;

ALTER TABLE hms2fa.accounts
  DROP CONSTRAINT email_format,
  ADD CONSTRAINT email_format CHECK (hms2fa.is_email_address(email));

-- 0008's, with the staging table's email check on the rule, the domain lowercase.
CREATE OR REPLACE FUNCTION hms2fa_api.open_roster_feed() RETURNS void
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF to_regclass('pg_temp.roster_feed') IS NOT NULL THEN
    RAISE EXCEPTION 'this session already has a table pg_temp.roster_feed'
      USING ERRCODE = 'H2U81', HINT = 'run the import in a new transaction';
  END IF;
  -- The tool checks every row before sending it; these constraints hold the same rules for
  -- a feed loaded with psql, and are checked while COPY streams (the server has time to spare
  -- while the client parses). Duplicate ids are caught by the key.
  CREATE TEMPORARY TABLE roster_feed (
    line         bigint NOT NULL,
    account_id   text PRIMARY KEY
                 CONSTRAINT account_id_normalised
                 CHECK (account_id ~ '^[a-z0-9][a-z0-9._-]*$' AND octet_length(account_id) <= 64),
    display_name text NOT NULL
                 CONSTRAINT display_name_printable
                 CHECK (btrim(display_name) <> '' AND display_name !~ '[\x01-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]'),
    email        text NOT NULL
                 CONSTRAINT email_of_record
                 CHECK (hms2fa.is_email_address(email) AND email !~ '@.*[A-Z]'),
    status       text NOT NULL CONSTRAINT status_known CHECK (status IN ('active', 'disabled')),
    high_risk    boolean NOT NULL
  ) ON COMMIT DROP;
  EXECUTE format('GRANT INSERT ON TABLE pg_temp.roster_feed TO %I', session_user);
END
$$;
