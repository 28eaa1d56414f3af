import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Migration 0015 (sql/0015_hardening.sql): a section of tests for each hole it closes, as the
/// roles involved, with raw SQL where psql is the way in.
@Suite("hardening (0015)")
struct HardeningTests {
  // 1. The sign-in service's column grants ---------------------------------------------------

  @Test("a revoked browser stays revoked, whoever tries; revoking again keeps the first time")
  func revocationKept() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: admin)
    try admin.execute(
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
      VALUES (sha256('laptop'::bytea), 'jd123', 'laptop', now() + interval '10 days')
      """)
    // The desk revokes both.
    let tier2 = try database.connect(as: try database.createLogin(.tier2))
    #expect(
      try tier2.queryFirst("SELECT hms2fa_api.revoke_remembered_browsers('jd123', 'INC1', NULL) AS n")?.decode(
        "n", as: Int.self) == 2)
    let revokedAt = "SELECT string_agg(revoked_at::text, ',' ORDER BY browser) AS r FROM hms2fa.remembered_browsers"
    let before = try admin.queryFirst(Query(verbatim: revokedAt))?.decode("r", as: String.self)

    let signin = try database.connect(as: try database.createLogin(.signin))
    let undo: [Query] = [
      "UPDATE hms2fa.remembered_browsers SET revoked_at = NULL",
      "UPDATE hms2fa.remembered_browsers SET revoked_at = NULL WHERE token_hash = sha256('laptop'::bytea)",
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
      VALUES (sha256('laptop'::bytea), 'jd123', 'laptop', now() + interval '30 days')
      ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL
      """,
    ]
    for statement in undo {
      let error = #expect(throws: PostgresError.self, "\(statement.sql)") { try signin.execute(statement) }
      #expect(error?.sqlState == "H2P03", "\(statement.sql)")
      #expect(error.map { deskError($0).status } == .noPermission)
    }
    // Not the owner either (a superuser reaching it), nor a superuser.
    try admin.execute("SET ROLE hms2fa_owner")
    let owner = #expect(throws: PostgresError.self) {
      try admin.execute("UPDATE hms2fa.remembered_browsers SET revoked_at = NULL")
    }
    #expect(owner?.sqlState == "H2P03")
    try admin.execute("RESET ROLE")
    let superuser = #expect(throws: PostgresError.self) {
      try admin.execute("UPDATE hms2fa.remembered_browsers SET revoked_at = NULL")
    }
    #expect(superuser?.sqlState == "H2P03")

    // Revoking again by hash (the sign-in service's right) works and changes nothing.
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = now() WHERE token_hash = sha256('laptop'::bytea)") == 1)
    #expect(try admin.queryFirst(Query(verbatim: revokedAt))?.decode("r", as: String.self) == before)
    #expect(
      try RememberedBrowsers.list(for: try AccountID(parsing: "jd123"), on: tier2).allSatisfy { $0.state == "revoked" })
  }

  @Test("the sign-in service revokes by hash, now or a few minutes ahead, never further")
  func revocationTime() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    for name in ["a", "b", "c"] {
      try admin.execute(
        """
        INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
        VALUES (sha256(\(name)::bytea), 'jd123', \(name), now() + interval '10 days')
        """)
    }
    let signin = try database.connect(as: try database.createLogin(.signin))
    let future = #expect(throws: PostgresError.self) {
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = now() + interval '1 day' WHERE browser = 'a'")
    }
    #expect(future?.sqlState == "H2D11")
    #expect(future.map { deskError($0).status } == .dataError)
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = now() WHERE token_hash = sha256('a'::bytea)")
        == 1)
    // A sign-in host's clock a little ahead of the database's.
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = clock_timestamp() + interval '2 minutes' WHERE browser = 'b'"
      ) == 1)
    let left = try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.remembered_browsers WHERE revoked_at IS NULL")
    #expect(try left?.decode("n", as: Int.self) == 1)
  }

  @Test("last_used_at only moves forward: the reset's 24-hour rule can't be switched off")
  func lastUseForward() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    let device = try Fixtures.device("jd123", isDefault: true, lastUsedHoursAgo: 2, on: admin)
    let agent = try database.connect(as: try database.createLogin(.tier2))
    let account = try AccountID(parsing: "jd123")
    let ticket = try Ticket(parsing: "INC1")
    func approvalNeeded() throws -> [String] {
      try EnrollmentReset.reset(
        account, ticket: ticket, verifiedVia: .callback, reason: nil, dryRun: true, on: agent
      ).approvalNeeded
    }
    #expect(try approvalNeeded() == ["device_used_in_last_24_hours"])
    let lastUse = "SELECT last_used_at::text AS t FROM hms2fa.devices"
    let before = try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self)

    let signin = try database.connect(as: try database.createLogin(.signin))
    for statement: Query in [
      "UPDATE hms2fa.devices SET last_used_at = now() - interval '3 days' WHERE device_id = \(device)",
      "UPDATE hms2fa.devices SET last_used_at = NULL WHERE device_id = \(device)",
    ] {
      #expect(try signin.execute(statement) == 1)
      #expect(try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self) == before)
    }
    #expect(try approvalNeeded() == ["device_used_in_last_24_hours"])
    // Nor by the owner.
    try admin.execute("SET ROLE hms2fa_owner")
    try admin.execute("UPDATE hms2fa.devices SET last_used_at = '2000-01-01'")
    try admin.execute("RESET ROLE")
    #expect(try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self) == before)

    let future = #expect(throws: PostgresError.self) {
      try signin.execute("UPDATE hms2fa.devices SET last_used_at = now() + interval '2 days'")
    }
    #expect(future?.sqlState == "H2D11")
    #expect(future.map { deskError($0).status } == .dataError)
    // Forward, and a few minutes ahead (the sign-in host's clock), is what the service does.
    #expect(try signin.execute("UPDATE hms2fa.devices SET last_used_at = now()") == 1)
    #expect(try signin.execute("UPDATE hms2fa.devices SET last_used_at = clock_timestamp() + interval '1 minute'") == 1)
    let moved = try admin.queryFirst("SELECT last_used_at > now() AS ahead FROM hms2fa.devices")
    #expect(try moved?.decode("ahead", as: Bool.self) == true)
  }
}
