-- A disabled account shows no "Start setup": nobody can sign in with it. The card says so itself
-- (start_setup_visible), rather than each client correcting it. Serves hms2fa_tier1.

SET LOCAL ROLE hms2fa_owner;

-- user show: the card, with outstanding links (never a token or its hash); "Start setup" only
-- for an active account with nothing enrolled.
CREATE OR REPLACE FUNCTION hms2fa_api.account_card(p_key text) RETURNS jsonb
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  v_card jsonb;
BEGIN
  v_card := hms2fa.account_card_base(p_key);
  IF v_card IS NULL THEN
    RETURN NULL;
  END IF;
  RETURN v_card || jsonb_build_object(
    'start_setup_visible', v_card->>'enrollment' = 'not_enrolled' AND v_card->>'status' = 'active',
    'activation_links', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'link_id', l.link_id, 'device_id', l.device_id, 'sent_at', hms2fa.iso(l.created_at),
               'sent_by', l.created_by, 'expires_at', hms2fa.iso(l.expires_at)) ORDER BY l.link_id)
        FROM hms2fa.outstanding_links(v_card->>'account_id') l), '[]'));
END
$$;
