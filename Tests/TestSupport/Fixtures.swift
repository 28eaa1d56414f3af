import Foundation
import Postgres

/// Rows the identity feed and the sign-in service would write, for tests, and what the audit log
/// holds.
public enum Fixtures {
  /// The audit log's actions, oldest first.
  /// A new migrated database whose audit log holds `events` events (`test.event`, tickets T1…).
  public static func auditLog(events: Int) throws -> TestDatabase {
    let database = try TestDatabase.create()
    let db = try database.connect()
    for i in 1...events {
      try db.execute("SELECT hms2fa.audit('test.event', 'jd123', \("T\(i)"), NULL, \("{\"n\": \(i)}")::jsonb)")
    }
    return database
  }

  public static func auditActions(on db: Connection) throws -> [String] {
    try db.query("SELECT action FROM hms2fa.audit_events ORDER BY event_id").map {
      try $0.decode("action", as: String.self)
    }
  }

  /// Waits (up to 10 s) until a session of `login` waits for a lock (or, with `waiting` false,
  /// until none does); false if it never came to that.
  public static func waitForLockWait(of login: String, on admin: Connection, waiting: Bool = true) throws -> Bool {
    for _ in 0..<400 {
      let row = try admin.queryFirst(
        "SELECT count(*) > 0 AS waiting FROM pg_stat_activity WHERE usename = \(login) AND wait_event_type = 'Lock'")
      if try row?.decode("waiting", as: Bool.self) == waiting { return true }
      usleep(25_000)
    }
    return false
  }

  /// Adds an account.
  public static func account(
    _ id: String, name: String = "Test Person", email: String? = nil, status: String = "active",
    highRisk: Bool = false, on db: Connection
  ) throws {
    try db.execute(
      """
      INSERT INTO hms2fa.accounts (account_id, display_name, email, status, high_risk)
      VALUES (\(id), \(name), \(email ?? "\(id)@hms.harvard.edu"), \(status), \(highRisk))
      """)
  }

  /// Adds a device and returns its id.
  @discardableResult
  public static func device(
    _ account: String, kind: String = "mobile", platform: String? = "ios", phone: String? = "+16175550100",
    activated: Bool = true, isDefault: Bool = false, retired: Bool = false, lastUsedHoursAgo: Int? = nil,
    on db: Connection
  ) throws -> Int64 {
    let row = try db.queryFirst(
      """
      INSERT INTO hms2fa.devices (account_id, kind, platform, phone, label, activated_at, is_default,
                                  last_used_at, retired_at, retired_reason)
      VALUES (\(account), \(kind), \(platform), \(phone), 'test device',
              CASE WHEN \(activated) THEN now() - interval '30 days' END, \(isDefault),
              now() - make_interval(hours => \(lastUsedHoursAgo)::int),
              CASE WHEN \(retired) THEN now() - interval '1 day' END,
              CASE WHEN \(retired) THEN 'old phone' END)
      RETURNING device_id
      """)
    return try row?.decode("device_id", as: Int64.self) ?? -1
  }

  /// Adds a remembered browser expiring `expiresInDays` from now (negative: already expired).
  public static func rememberedBrowser(
    _ account: String, expiresInDays: Int, revoked: Bool = false, on db: Connection
  ) throws {
    try db.execute(
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, created_at, expires_at, revoked_at)
      VALUES (sha256(convert_to(gen_random_uuid()::text, 'UTF8')), \(account), 'Firefox',
              now() + make_interval(days => \(expiresInDays)::int - 30),
              now() + make_interval(days => \(expiresInDays)::int),
              CASE WHEN \(revoked) THEN now() END)
      """)
  }
}
