-- The account id's format, the same rule checked more cheaply. 0001 wrote it as a bounded
-- repetition ('^[a-z0-9][a-z0-9._-]{0,63}$'), which PostgreSQL's regular expression engine
-- expands into one state per repetition: about 2.3 s of CPU per million inserts, the largest
-- single cost of a first roster import. An unbounded class and a length test accept exactly
-- the same ids (one to 64 characters, the first a lower-case letter or digit) at about a
-- fifth of the cost. The table is checked again once, under this migration's lock.

SET LOCAL ROLE hms2fa_owner;

ALTER TABLE hms2fa.accounts
  DROP CONSTRAINT account_id_format,
  ADD CONSTRAINT account_id_format
    CHECK (account_id ~ '^[a-z0-9][a-z0-9._-]*$' AND char_length(account_id) <= 64);
