-- Staff tiers: granted and revoked only through hms2fa_api.change_staff, every change
-- recorded; memberships nobody recorded are reported. Serves hms2fa_operator (change_staff),
-- and hms2fa_auditor, hms2fa_batch and hms2fa_operator (unrecorded_memberships).

SET LOCAL ROLE hms2fa_owner;

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
GRANT EXECUTE ON FUNCTION hms2fa.record_staff_change(text,text,boolean,text) TO hms2fa_staff_admin;

-- change_staff is made by hms2fa_staff_admin itself, which may create in hms2fa_api only for
-- the moment it takes.
RESET ROLE;
GRANT CREATE ON SCHEMA hms2fa_api TO hms2fa_staff_admin;
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
REVOKE ALL ON FUNCTION hms2fa_api.change_staff(text,text,boolean,text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hms2fa_api.change_staff(text,text,boolean,text) TO hms2fa_operator;

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
GRANT EXECUTE ON FUNCTION hms2fa_api.unrecorded_memberships() TO hms2fa_auditor, hms2fa_batch, hms2fa_operator;
