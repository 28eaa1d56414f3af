-- Demo data drawn from the HMS help article's cases. Written as the identity feed and the
-- sign-in service would write it (directly into the contract tables).
\set ON_ERROR_STOP on
BEGIN;

INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk, login_action, created_at) VALUES
  -- Step 1: set up 2FA years ago on a phone she no longer has: "Start setup" is hidden.
  ('jd123',  'Jane Doe',        'jane_doe@hms.harvard.edu',        'active',   false, 'push', now() - interval '5 years'),
  -- Step 6: started setup, but the camera never scanned the QR code: a pending mobile.
  ('mk456',  'Maria Kim',       'maria_kim@hms.harvard.edu',       'active',   false, 'ask',  now() - interval '2 years'),
  -- New to HMS, nothing enrolled: "Start setup" is shown.
  ('rp789',  'Raj Patel',       'raj_patel@hms.harvard.edu',       'active',   false, 'ask',  now() - interval '3 days'),
  -- Step 3: +1 617 555 0188 was his until he left; someone new is enrolling it.
  ('tl321',  'Tom Lee',         'tom_lee@hms.harvard.edu',         'active',   false, 'ask',  now() - interval '8 years'),
  ('cd222',  'Chen Du',         'chen_du@hms.harvard.edu',         'active',   false, 'ask',  now() - interval '20 days'),
  -- Still active on +1 617 555 0177, which a caller claims is now theirs.
  ('ef333',  'Eve Fischer',     'eve_fischer@hms.harvard.edu',     'active',   false, 'call', now() - interval '4 years'),
  -- Several devices, a default one, remembered browsers.
  ('sb900',  'Sam Brooks',      'sam_brooks@hms.harvard.edu',      'active',   false, 'push', now() - interval '6 years'),
  -- High-risk: a reset needs a second agent's approval.
  ('dean01', 'Dean of Medicine','dean_office@hms.harvard.edu',     'active',   true,  'push', now() - interval '10 years'),
  -- Left HMS.
  ('xo404',  'Xavier Ortiz',    'xavier_ortiz@hms.harvard.edu',    'disabled', false, 'ask',  now() - interval '9 years');

INSERT INTO hms2fa.devices (account_id, kind, platform, phone, label, activated_at, is_default, created_at, last_used_at, retired_at, retired_reason) VALUES
  ('jd123',  'mobile',   'ios',     '+16175550101', 'iPhone 8',        now() - interval '4 years', true,  now() - interval '4 years', now() - interval '14 months', NULL, NULL),
  ('mk456',  'mobile',   'android', '+16175550142', 'Pixel 7',         NULL,                        false, now() - interval '2 days',  NULL,                         NULL, NULL),
  ('tl321',  'mobile',   'android', '+16175550188', 'Galaxy S9',       now() - interval '6 years', true,  now() - interval '6 years', now() - interval '2 years',   now() - interval '2 years', 'left HMS'),
  ('ef333',  'mobile',   'other',   '+16175550177', 'flip phone (SMS)', now() - interval '3 years', true,  now() - interval '3 years', now() - interval '9 months',  NULL, NULL),
  ('sb900',  'mobile',   'ios',     '+16175550199', 'iPhone 15',       now() - interval '1 year',  true,  now() - interval '1 year',  now() - interval '2 hours',   NULL, NULL),
  ('sb900',  'landline', NULL,      '+16174322000', 'office desk phone', NULL,                      false, now() - interval '5 years', now() - interval '1 year',    NULL, NULL),
  ('sb900',  'security_key', NULL,  NULL,           'YubiKey 5C',      NULL,                        false, now() - interval '2 years', now() - interval '30 days',   NULL, NULL),
  ('sb900',  'tablet',   NULL,      NULL,           'iPad (old)',      now() - interval '5 years', false, now() - interval '5 years', now() - interval '3 years',   now() - interval '3 years', 'replaced'),
  ('dean01', 'mobile',   'ios',     '+16175550111', 'iPhone 14',       now() - interval '2 years', true,  now() - interval '2 years', now() - interval '1 day',     NULL, NULL),
  ('xo404',  'mobile',   'ios',     '+16175550404', 'iPhone X',        now() - interval '6 years', true,  now() - interval '6 years', now() - interval '3 years',   NULL, NULL);

-- Step 8: remembered browsers, some long expired and waiting for the nightly purge.
INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, created_at, expires_at, revoked_at)
SELECT sha256(convert_to('demo-' || a || '-' || n, 'UTF8')), a, b,
       now() - make_interval(days => d), now() - make_interval(days => d) + interval '30 days', NULL
  FROM (VALUES
    ('sb900', 1, 'Firefox on the lab PC', 3),
    ('sb900', 2, 'Safari on MacBook', 12),
    ('sb900', 3, 'Chrome at home', 45),
    ('jd123', 1, 'Edge on the clinic kiosk', 400),
    ('dean01', 1, 'Safari on iPad', 5)) AS v(a, n, b, d);

INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, created_at, expires_at)
SELECT sha256(convert_to('bulk-' || g, 'UTF8')), (ARRAY['ef333','tl321','cd222','xo404'])[1 + g % 4],
       'browser ' || g, now() - make_interval(days => 31 + g % 300), now() - make_interval(days => 1 + g % 300)
  FROM generate_series(1, 500) AS g;

COMMIT;
