-- The auditor reads the record of a person named by their email of record too (audit log
-- --account), as every desk command takes one. Serves hms2fa_auditor.

SET LOCAL ROLE hms2fa_owner;

GRANT EXECUTE ON FUNCTION hms2fa_api.account_id_of(text) TO hms2fa_auditor;
