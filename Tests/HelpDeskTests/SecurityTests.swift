import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Privilege is the database's: each role is tried with raw SQL, as psql would.
@Suite("roles and grants, with raw SQL")
struct SecurityTests {
  static let staffTiers: [Tier] = [.tier1, .tier2, .batch, .auditor]

  @Test("no staff login reads or writes the tables directly", arguments: staffTiers)
  func noTableAccess(_ tier: Tier) throws {
    let database = try TestDatabase.create()
    try Fixtures.account("jd123", on: try database.connect())
    let db = try database.connect(as: try database.createLogin(tier))
    let statements: [Query] = [
      "SELECT * FROM hms2fa.accounts",
      "INSERT INTO hms2fa.accounts (account_id, display_name, email) VALUES ('x1', 'X', 'x@y.z')",
      "UPDATE hms2fa.accounts SET high_risk = false",
      "DELETE FROM hms2fa.devices",
      "UPDATE hms2fa.remembered_browsers SET revoked_at = now()",
      "TRUNCATE hms2fa.remembered_browsers",
    ]
    for statement in statements {
      let error = #expect(throws: PostgresError.self, "\(statement.sql)") { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
  }

  @Test(
    "nobody but the owner touches the audit table; even the owner can't rewrite it",
    arguments: [Tier.tier1, .tier2, .batch, .auditor, .signin])
  func auditTableIsOff(_ tier: Tier) throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try admin.execute("SELECT hms2fa.audit('test.event', NULL, 'T1', NULL, '{}')")
    let db = try database.connect(as: try database.createLogin(tier))
    let statements: [Query] = [
      "UPDATE hms2fa.audit_events SET ticket = 'X'",
      "DELETE FROM hms2fa.audit_events",
      "TRUNCATE hms2fa.audit_events",
      "INSERT INTO hms2fa.audit_events (action) VALUES ('fake.event')",
      "UPDATE hms2fa.audit_chain_head SET last_event_id = 0",
      "SELECT hms2fa.audit('fake.event', NULL, 'T1', NULL, '{}')",
    ]
    for statement in statements {
      let error = #expect(throws: PostgresError.self, "\(statement.sql)") { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
    // The owner role itself (reached by a superuser) is stopped by the append-only triggers.
    try admin.execute("SET ROLE hms2fa_owner")
    for statement: Query in [
      "UPDATE hms2fa.audit_events SET ticket = 'X'", "DELETE FROM hms2fa.audit_events", "TRUNCATE hms2fa.audit_events",
    ] {
      let error = #expect(throws: PostgresError.self) { try admin.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege)
    }
  }

  @Test("tier1 cannot call tier2 functions; tier2 can; a login without a tier can call nothing")
  func tierBoundary() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: admin)
    let tier1 = try database.connect(as: try database.createLogin(.tier1))
    let nobody = try database.connect(as: try database.createLogin(nil))
    let revoke: Query = "SELECT hms2fa_api.revoke_remembered_browsers('jd123', 'INC1', NULL)"
    #expect(
      (#expect(throws: PostgresError.self) { try tier1.execute(revoke) })?.sqlState == SQLState.insufficientPrivilege)
    #expect(
      (#expect(throws: PostgresError.self) { try nobody.execute("SELECT hms2fa_api.account_card('jd123')") })?.sqlState
        == SQLState.insufficientPrivilege)
    #expect(
      (#expect(throws: PostgresError.self) { try nobody.execute("SELECT * FROM hms2fa_api.audit_events") })?.sqlState
        == SQLState.insufficientPrivilege)
    // tier1 looks up; tier2 inherits that and may also revoke.
    #expect(
      try tier1.queryFirst("SELECT hms2fa_api.account_card('jd123') IS NOT NULL AS ok")?.decode("ok", as: Bool.self)
        == true)
    let tier2 = try database.connect(as: try database.createLogin(.tier2))
    #expect(
      try tier2.queryFirst("SELECT hms2fa_api.account_card('jd123') IS NOT NULL AS ok")?.decode("ok", as: Bool.self)
        == true)
    #expect(try tier2.queryFirst(revoke)?.decode(at: 0, as: Int.self) == 1)
  }

  @Test("through the library, a refusal names the tier the action needs")
  func refusalNamesTier() throws {
    let database = try TestDatabase.create()
    try Fixtures.account("jd123", on: try database.connect())
    let login = try database.createLogin(.tier1)
    let error = #expect(throws: DeskError.self) {
      try RememberedBrowsers.revokeAll(
        for: try AccountID(parsing: "jd123"), ticket: try Ticket(parsing: "INC1"), on: try database.connect(as: login))
    }
    #expect(error?.status == .noPermission)
    #expect(error?.message.contains("hms2fa_tier2") == true)
    #expect(error?.message.contains(login) == true)
  }

  @Test("the actor recorded is the login, even after SET ROLE")
  func actorIsLogin() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: admin)
    let login = try database.createLogin(.tier2)
    let db = try database.connect(as: login)
    try db.execute("SET ROLE hms2fa_tier2")
    try db.execute("SET application_name = 'someone_else'")
    try db.execute("SELECT hms2fa_api.revoke_remembered_browsers('jd123', 'INC1', 'pretending')")
    let event = try #require(try AuditLog.events(AuditFilter(account: try AccountID(parsing: "jd123")), on: admin).last)
    #expect(event.actor == login)
    #expect(event.action == "remembered.revoked")
    #expect(event.ticket == "INC1")
  }

  @Test("the database rejects a malformed ticket even from raw SQL")
  func ticketChecked() throws {
    let database = try TestDatabase.create()
    try Fixtures.account("jd123", on: try database.connect())
    let db = try database.connect(as: try database.createLogin(.tier2))
    for ticket in ["", " INC", String(repeating: "x", count: 65), "INC\n1"] {
      let error = #expect(throws: PostgresError.self) {
        try db.execute("SELECT hms2fa_api.revoke_remembered_browsers('jd123', \(ticket), NULL)")
      }
      #expect(error?.sqlState == "H2U01")
    }
    let nullTicket = #expect(throws: PostgresError.self) {
      try db.execute("SELECT hms2fa_api.revoke_remembered_browsers('jd123', NULL, NULL)")
    }
    #expect(nullTicket?.sqlState == "H2U01")
  }

  @Test("SECURITY DEFINER functions pin their search_path")
  func pinnedSearchPath() throws {
    let db = try TestDatabase.create().connect()
    let unpinned = try db.query(
      """
      SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE n.nspname IN ('hms2fa', 'hms2fa_api') AND p.prosecdef
         AND NOT coalesce(p.proconfig::text[] @> ARRAY['search_path=pg_catalog, pg_temp'], false)
      """)
    let unpinnedNames = try unpinned.map { try $0.decode("proname", as: String.self) }
    #expect(unpinnedNames.isEmpty, "\(unpinnedNames)")
    let publicExecutable = try db.query(
      """
      SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE n.nspname IN ('hms2fa', 'hms2fa_api') AND has_function_privilege('public', p.oid, 'EXECUTE')
      """)
    let publicNames = try publicExecutable.map { try $0.decode("proname", as: String.self) }
    #expect(publicNames.isEmpty, "\(publicNames)")
  }
}
