-- Finding people the way callers name themselves: by surname (any word of the name), by a phone
-- number in use on one of their devices, and by email wherever an account id is taken. Serves
-- hms2fa_tier1 (and tier2, its member).

SET LOCAL ROLE hms2fa_owner;

-- The words of a name, lowercased: "Jane van der Berg-Smith" → {jane, van, der, berg, smith}.
CREATE FUNCTION hms2fa.name_words(p_name text) RETURNS text[]
  LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  RETURN array_remove(regexp_split_to_array(lower(p_name), '[^[:alnum:]]+'), '');

-- A word of a name, found through the index, whatever its place in the name.
CREATE INDEX accounts_name_words_idx ON hms2fa.accounts USING gin (hms2fa.name_words(display_name));

-- user find: accounts whose id, email or name starts with the text (case-insensitive), whose
-- name has the text as a word (a surname), or, for an E.164 number (the tool normalises what is
-- typed), that have a device in use on that number; by account id, at most p_limit.
CREATE OR REPLACE FUNCTION hms2fa_api.find_accounts(p_text text, p_limit integer DEFAULT 50)
RETURNS TABLE (account_id text, display_name text, email text, status text, enrollment text)
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_text text := lower(btrim(p_text));
  v_pattern text := replace(replace(replace(lower(btrim(p_text)), '\', '\\'), '%', '\%'), '_', '\_') || '%';
BEGIN
  IF btrim(coalesce(p_text, '')) = '' THEN
    RAISE EXCEPTION 'search text is empty' USING ERRCODE = 'H2U03';
  END IF;
  RETURN QUERY
    SELECT a.account_id, a.display_name, a.email, a.status, hms2fa.enrollment_of(a.account_id)
      FROM hms2fa.accounts a
     WHERE a.account_id IN (
             SELECT x.account_id FROM hms2fa.accounts x WHERE x.account_id LIKE v_pattern
             UNION SELECT x.account_id FROM hms2fa.accounts x WHERE lower(x.email) LIKE v_pattern
             UNION SELECT x.account_id FROM hms2fa.accounts x WHERE lower(x.display_name) LIKE v_pattern
             UNION SELECT x.account_id FROM hms2fa.accounts x
                    WHERE hms2fa.name_words(x.display_name) @> ARRAY[v_text]
             UNION SELECT d.account_id FROM hms2fa.devices d
                    WHERE v_text ~ '^\+[1-9][0-9]{6,14}$' AND d.phone = v_text AND d.retired_at IS NULL)
     ORDER BY a.account_id
     LIMIT greatest(1, least(coalesce(p_limit, 50), 1000));
END
$$;

-- The account id of an account id or an email of record (any case): H2N01 when there is none,
-- H2D02 when the email is on several accounts. What every command that takes an account
-- resolves an email with.
CREATE FUNCTION hms2fa_api.account_id_of(p_key text) RETURNS text
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_ids text[];
BEGIN
  IF position('@' IN coalesce(p_key, '')) = 0 THEN
    SELECT array_agg(a.account_id) INTO v_ids FROM hms2fa.accounts a WHERE a.account_id = lower(p_key);
  ELSE
    SELECT array_agg(a.account_id ORDER BY a.account_id) INTO v_ids
      FROM hms2fa.accounts a WHERE lower(a.email) = lower(p_key);
  END IF;
  IF v_ids IS NULL THEN
    RAISE EXCEPTION 'no account has the id %', p_key USING ERRCODE = 'H2N01';
  ELSIF cardinality(v_ids) > 1 THEN
    RAISE EXCEPTION 'that email of record belongs to % accounts: %', cardinality(v_ids), array_to_string(v_ids, ', ')
      USING ERRCODE = 'H2D02', HINT = 'name one of them by its account id';
  END IF;
  RETURN v_ids[1];
END
$$;
GRANT EXECUTE ON FUNCTION hms2fa_api.account_id_of(text) TO hms2fa_tier1;
