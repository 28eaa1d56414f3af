-- Hardening: a way around the schema's rules, closed.
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

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA hms2fa, hms2fa_api FROM PUBLIC;
