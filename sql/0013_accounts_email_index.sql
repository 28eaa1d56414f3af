-- One index on the email of record, not two. accounts_email_idx (lower(email)) answered
-- look-ups by email; accounts_email_prefix_idx (lower(email) text_pattern_ops, for `user find`)
-- answers them as well, since its operator class has equality too (byte-wise, which is what
-- lower(email) = lower(key) means). Every insert and every change of an email paid for both:
-- at a million accounts, the first roster import spent 1.3 s of its 12.5 s on the one dropped
-- here. The look-ups' plans before and after are in the README (Benchmarks, plans).

SET LOCAL ROLE hms2fa_owner;

DROP INDEX hms2fa.accounts_email_idx;
