import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Records that hold against operators, and a two-person rule without side doors, tried as an
/// attacker with each role would, with raw SQL where the rule lives in the database.
@Suite("records and the two-person rule against insiders")
struct TrustTests {
  /// A database with `events` audit events written by the desk's functions' path.
  private func seeded(_ events: Int) throws -> TestDatabase {
    try Fixtures.auditLog(events: events)
  }

  /// What an operator able to reach the owner role can do: change event `id` and recompute
  /// every hash after it and the head, so that the chain verifies.
  private func rewrite(event id: Int64, on database: TestDatabase) throws {
    try database.connect().runScript(
      """
      SET ROLE hms2fa_owner;
      ALTER TABLE hms2fa.audit_events DISABLE TRIGGER USER;
      UPDATE hms2fa.audit_events SET actor = 'somebody_else' WHERE event_id = \(id);
      DO $$
      DECLARE
        e hms2fa.audit_events;
        v_prev bytea;
      BEGIN
        SELECT prev_hash INTO v_prev FROM hms2fa.audit_events WHERE event_id = \(id);
        FOR e IN SELECT * FROM hms2fa.audit_events WHERE event_id >= \(id) ORDER BY event_id LOOP
          UPDATE hms2fa.audit_events SET prev_hash = v_prev,
                 hash = hms2fa.audit_digest(v_prev, e.event_id, e.at, e.actor, e.action, e.account_id, e.ticket,
                                            e.reason, e.details)
           WHERE event_id = e.event_id
          RETURNING hash INTO v_prev;
        END LOOP;
        UPDATE hms2fa.audit_chain_head SET last_hash = v_prev;
      END
      $$;
      ALTER TABLE hms2fa.audit_events ENABLE TRIGGER USER;
      """)
  }

  @Test("a rewrite of the chain by an owner, which the chain alone can't show, is caught by the anchors")
  func anchorsCatchRewrite() throws {
    let database = try seeded(12)
    let batch = try database.createLogin(.batch)
    let auditor = try database.connect(as: try database.createLogin(.auditor))
    let file = try scratchDirectory("anchors") + "/anchors"
    let first = try AuditLog.anchor(to: file, on: try database.connect(as: batch))
    #expect(first.eventID == 12)
    try database.connect().execute("SELECT hms2fa.audit('test.event', 'jd123', 'T13', NULL, '{}')")
    let second = try AuditLog.anchor(to: file, on: try database.connect(as: batch))
    #expect(second.eventID == 13)
    let anchors = try AuditLog.readAnchors(file)
    #expect(anchors == [first, second])
    #expect(try AuditLog.check(anchors, on: auditor) == nil)

    try rewrite(event: 11, on: database)
    #expect(try AuditLog.verify(on: auditor).ok, "the chain alone can't tell")
    let mismatch = try #require(try AuditLog.check(anchors, on: auditor))
    #expect(mismatch.anchor.eventID == 12)
    #expect(mismatch.hashNow != nil && mismatch.hashNow != first.hash)
    #expect(mismatch.lastHolding == nil)

    // Through the tool: 65, naming the event; the anchor file is only read.
    let before = try Data(contentsOf: URL(fileURLWithPath: file))
    let login = try database.createLogin(.auditor)
    let out = try Tool.run(["audit", "verify", "--anchors", file, "--database", try database.conninfo(user: login)])
    #expect(out.status == 65)
    #expect(out.stderr.contains("audit log rewritten: event 12"), "\(out.stderr)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == before)
  }

  @Test("a backup restored with pg_dump and pg_restore keeps the chain and its anchors, and its migrations")
  func backupAndRestore() throws {
    let bin = try #require(TestCluster.serverBinaries, "HMS2FA_TEST_PGBIN names the server's binaries")
    let database = try seeded(5)
    let file = try scratchDirectory("backup")
    let anchors = file + "/anchors"
    _ = try AuditLog.anchor(to: anchors, on: try database.connect(as: try database.createLogin(.batch)))
    let copy = try TestDatabase.create(migrated: false)
    for step in [
      [bin + "/pg_dump", "-Fc", "-f", file + "/dump", try database.conninfo()],
      [bin + "/pg_restore", "--exit-on-error", "-d", try copy.conninfo(), file + "/dump"],
    ] {
      let process = Process()
      process.executableURL = URL(fileURLWithPath: step[0])
      process.arguments = Array(step.dropFirst())
      try process.run()
      process.waitUntilExit()
      #expect(process.terminationStatus == 0, "\(step[0])")
    }
    let verified = try Tool.run(["audit", "verify", "--anchors", anchors, "--json", "--database", try copy.conninfo()])
    #expect(verified.status == 0, "\(verified.stderr)")
    #expect(verified.stdout.contains("\"events\":5"))
    let status = try Tool.run(["db", "status", "--database", try copy.conninfo()])
    #expect(status.status == 0)
    #expect(!status.stdout.contains("pending") && !status.stdout.contains("changed"), "\(status.stdout)")
  }

  @Test("audit anchor refuses a broken chain, and needs the batch tier")
  func anchorRefusals() throws {
    let database = try seeded(3)
    let file = try scratchDirectory("anchors") + "/anchors"
    try database.connect().runScript(
      "SET session_replication_role = replica; UPDATE hms2fa.audit_events SET ticket = 'X' WHERE event_id = 2")
    let broken = #expect(throws: DeskError.self) {
      try AuditLog.anchor(to: file, on: try database.connect(as: try database.createLogin(.batch)))
    }
    #expect(broken?.status == .dataError)
    #expect(!FileManager.default.fileExists(atPath: file))
    let tier2 = #expect(throws: DeskError.self) {
      try AuditLog.anchor(to: file, on: try database.connect(as: try database.createLogin(.tier2)))
    }
    #expect(tier2?.status == .noPermission)
    let edited = try scratchDirectory("anchors") + "/edited"
    try "2026-12-07T00:00:00Z event=2 hash=nothex\n".write(toFile: edited, atomically: true, encoding: .utf8)
    let malformed = #expect(throws: DeskError.self) { try AuditLog.readAnchors(edited) }
    #expect(malformed?.status == .dataError)
  }

  @Test("a tier granted outside staff grant is reported, and so is a recorded grant taken away by hand")
  func unrecordedMemberships() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    let auditor = try database.connect(as: try database.createLogin(.auditor))
    // createLogin grants with a plain GRANT, as an operator with CREATEROLE might.
    let sneaky = try database.createLogin(.tier2)
    var found = try AuditLog.unrecordedMemberships(on: auditor)
    #expect(found.contains { $0.login == sneaky && $0.role == "hms2fa_tier2" })
    // An operator reviews it and records it: no longer reported.
    let operatorLogin = try database.createLogin(nil)
    try admin.execute(Query(verbatim: "GRANT hms2fa_operator TO \(operatorLogin)"))
    let operatorDB = try database.connect(as: operatorLogin)
    try Staff.grant(.tier2, to: sneaky, ticket: try Ticket(parsing: "OPS-2"), on: operatorDB)
    found = try AuditLog.unrecordedMemberships(on: auditor)
    #expect(!found.contains { $0.login == sneaky })
    // Taken away by hand, the recorded grant no longer holds.
    try admin.execute(Query(verbatim: "REVOKE hms2fa_tier2 FROM \(sneaky)"))
    found = try AuditLog.unrecordedMemberships(on: auditor)
    #expect(found.contains { $0.login == sneaky && $0.problem.hasPrefix("recorded as granted") })
    // A login named like the schema's group roles, or a group role holding a tier, is no exception.
    let lookalike = "hms2fa_\(database.name)_x"
    try admin.execute(Query(verbatim: "CREATE ROLE \(lookalike) LOGIN IN ROLE hms2fa_tier2"))
    try admin.execute(Query(verbatim: "GRANT CONNECT ON DATABASE \(database.name) TO \(lookalike)"))
    let group = "\(database.name)_group"
    try admin.execute(Query(verbatim: "CREATE ROLE \(group) NOLOGIN IN ROLE hms2fa_tier1"))
    try admin.execute(Query(verbatim: "GRANT CONNECT ON DATABASE \(database.name) TO \(group)"))
    found = try AuditLog.unrecordedMemberships(on: auditor)
    #expect(found.contains { $0.login == lookalike } && found.contains { $0.login == group })
    // The tool's verify exits 65 on it.
    let out = try Tool.run(
      ["audit", "verify", "--json", "--database", try database.conninfo(user: try database.createLogin(.auditor))])
    #expect(out.status == 65)
    #expect(out.stdout.contains(sneaky))
  }

  @Test("an operator without CREATEROLE grants and revokes tiers, recorded; nothing else, and no side way")
  func operatorWithoutCreateRole() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    let operatorLogin = try database.createLogin(nil)
    try admin.execute(Query(verbatim: "GRANT hms2fa_operator TO \(operatorLogin)"))
    let db = try database.connect(as: operatorLogin)
    let agent = try database.createLogin(nil)
    let ticket = try Ticket(parsing: "OPS-1")
    try Staff.grant(.tier1, to: agent, ticket: ticket, on: db)
    try Staff.grant(.delivery, to: try database.createLogin(nil), ticket: ticket, on: db)
    try Staff.revoke(.tier1, from: agent, ticket: ticket, on: db)
    let events = try AuditLog.events(AuditFilter(), on: admin)
    #expect(events.map(\.action) == ["staff.granted", "staff.granted", "staff.revoked"])
    #expect(events.allSatisfy { $0.actor == operatorLogin && $0.ticket == "OPS-1" })
    for statement: Query in [
      Query(verbatim: "GRANT hms2fa_tier2 TO \(agent)"),
      "SET ROLE hms2fa_staff_admin",
      "SELECT hms2fa.record_staff_change('x', 'hms2fa_tier2', true, 'T1')",
      "SELECT hms2fa_api.account_card('jd123')",
    ] {
      let error = #expect(throws: PostgresError.self) { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
    // Only the tiers: not the owner, not the operator role, not a group role.
    for (login, tier) in [(agent, "owner"), (agent, "operator"), ("hms2fa_tier1", "tier2")] {
      let error = #expect(throws: PostgresError.self) {
        try db.execute("SELECT hms2fa_api.change_staff(\(login), \(tier), true, 'T1')")
      }
      #expect(error?.sqlState?.hasPrefix("H2") == true, "\(login) \(tier)")
    }
    // A login outside hms2fa_operator, even with CREATEROLE, can't use the function.
    let outsider = try database.createLogin(nil)
    try admin.execute(Query(verbatim: "ALTER ROLE \(outsider) CREATEROLE"))
    let refused = #expect(throws: DeskError.self) {
      try Staff.grant(.tier1, to: agent, ticket: ticket, on: try database.connect(as: outsider))
    }
    #expect(refused?.status == .noPermission)
  }

  /// jd123 (active phone, default) and a pending phone; a tier-1 and two tier-2 logins.
  struct Desk {
    let database: TestDatabase
    let admin: Connection
    let tier1: Connection
    let tier2: Connection
    let otherTier2: Connection
    let account: AccountID
    let ticket: Ticket
    let pendingPhone: Int64

    init() throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("vic01", name: "Vic Tim", on: admin)
      try Fixtures.device("vic01", phone: "+16175550150", isDefault: true, lastUsedHoursAgo: 1, on: admin)
      pendingPhone = try Fixtures.device("vic01", phone: "+16175550666", activated: false, on: admin)
      tier1 = try database.connect(as: try database.createLogin(.tier1))
      tier2 = try database.connect(as: try database.createLogin(.tier2))
      otherTier2 = try database.connect(as: try database.createLogin(.tier2))
      account = try AccountID(parsing: "vic01")
      ticket = try Ticket(parsing: "INC9")
    }

    func reset(_ via: IdentityVerification, on db: Connection? = nil) throws -> ResetOutcome {
      try EnrollmentReset.reset(account, ticket: ticket, verifiedVia: via, reason: nil, dryRun: false, on: db ?? tier2)
    }
  }

  @Test("while a request is pending, no direct reset, whatever verified the caller; withdrawn, one may")
  func noSideDoor() throws {
    let desk = try Desk()
    // A callback while the phone was used an hour ago: a request for a second agent.
    let request = try desk.reset(.callback)
    #expect(request.status == .pendingApproval)
    let id = try #require(request.requestID)
    for via in [IdentityVerification.inPerson, .video, .callback] {
      let direct = #expect(throws: DeskError.self) { try desk.reset(via) }
      #expect(direct?.status == .tryLater)
      #expect(direct?.message.contains("reset request \(id)") == true, "\(direct?.message ?? "")")
    }
    // Raw SQL too.
    let raw = #expect(throws: PostgresError.self) {
      try desk.tier2.execute("SELECT hms2fa_api.reset_enrollment('vic01', 'T1', 'in-person', NULL, false, NULL)")
    }
    #expect(raw?.sqlState == "H2R13")
    // A tier-1 agent who didn't make it can't withdraw it; another tier-2 agent can.
    let tier1 = #expect(throws: DeskError.self) {
      try EnrollmentReset.withdraw(id, ticket: desk.ticket, reason: nil, on: desk.tier1)
    }
    #expect(tier1?.status == .noPermission)
    try EnrollmentReset.withdraw(id, ticket: desk.ticket, reason: "caller hung up", on: desk.otherTier2)
    #expect(try EnrollmentReset.request(id, on: desk.tier1).state == .withdrawn)
    let approve = #expect(throws: DeskError.self) {
      try EnrollmentReset.approve(id, ticket: desk.ticket, on: desk.otherTier2)
    }
    #expect(approve?.status == .dataError)
    // Withdrawn, the account can be reset (or requested) again.
    #expect(try desk.reset(.video).status == .pendingApproval)
    #expect(
      try Fixtures.auditActions(on: desk.admin) == [
        "enrollment.reset_requested", "enrollment.reset_withdrawn", "enrollment.reset_requested",
      ])
  }

  @Test("a request uses up the identity proof it relied on")
  func requestSpendsProof() throws {
    let desk = try Desk()
    try desk.admin.execute("UPDATE hms2fa.accounts SET high_risk = true")
    // A confirmed identity code on file, made as the delivery service and the agent would.
    try desk.admin.execute(
      """
      INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, device_id, channel, code_hash, salt, ticket,
                                              expires_at, state, ended_at, verified_by)
      SELECT 'identity', 'vic01', phone, device_id, 'sms', sha256('c'::bytea), substr(sha256('s'::bytea), 1, 16), 'T0',
             now() + interval '10 minutes', 'verified', clock_timestamp(), 'someone'
        FROM hms2fa.devices WHERE is_default
      """)
    // A high-risk account: even with a code on file, this is a request.
    let request = try desk.reset(.codeOnFile)
    #expect(request.status == .pendingApproval)
    try EnrollmentReset.withdraw(try #require(request.requestID), ticket: desk.ticket, reason: nil, on: desk.tier2)
    let again = #expect(throws: DeskError.self) { try desk.reset(.codeOnFile) }
    #expect(again?.status == .dataError, "the proof opened one request and no other")
  }

  @Test("an identity code goes only to a phone in use: never to one typed in during an unfinished setup")
  func identityOnlyToCountingDevice() throws {
    let desk = try Desk()
    let pending = #expect(throws: DeskError.self) {
      try PhoneVerification.identityCheck(
        desk.account, device: desk.pendingPhone, via: .sms, ticket: desk.ticket, on: desk.tier1)
    }
    #expect(pending?.status == .dataError)
    // Made the default, it is still refused.
    try desk.admin.execute("UPDATE hms2fa.devices SET is_default = (device_id = \(desk.pendingPhone))")
    let asDefault = #expect(throws: DeskError.self) {
      try PhoneVerification.identityCheck(desk.account, device: nil, via: .sms, ticket: desk.ticket, on: desk.tier1)
    }
    #expect(asDefault?.status == .dataError)
    // The database itself refuses such a code, whoever inserts it.
    let direct = #expect(throws: PostgresError.self) {
      try desk.admin.execute(
        """
        INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, device_id, channel, ticket, expires_at)
        VALUES ('identity', 'vic01', '+16175550666', \(desk.pendingPhone), 'sms', 'T0', now() + interval '10 minutes')
        """)
    }
    #expect(direct?.sqlState == "H2D07")
  }

  @Test("text in the record is bounded and clean: the database refuses it, whoever writes")
  func cleanText() throws {
    let desk = try Desk()
    try Fixtures.rememberedBrowser("vic01", expiresInDays: 5, on: desk.admin)
    for reason in [String(repeating: "x", count: 501), "laptop \u{202E}nelots", "a\u{200B}b", "line\nbreak"] {
      let error = #expect(throws: PostgresError.self) {
        try desk.tier2.execute("SELECT hms2fa_api.revoke_remembered_browsers('vic01', 'INC1', \(reason))")
      }
      #expect(error?.sqlState == "H2U10", "\(reason.prefix(20))")
    }
    let owner = #expect(throws: PostgresError.self) {
      try desk.admin.execute(
        "SELECT hms2fa.audit('test.event', NULL, 'T1', NULL, \("{\"note\": \"\u{202E}x\"}")::jsonb)")
    }
    #expect(owner?.sqlState == "H2U10", "a string in the details too")
    #expect(try Fixtures.auditActions(on: desk.admin).isEmpty)
    #expect(
      try desk.tier2.queryFirst(
        "SELECT hms2fa_api.revoke_remembered_browsers('vic01', 'INC1', \(String(repeating: "y", count: 500))) AS n")?
        .decode("n", as: Int.self) == 1)
  }

  @Test("a tier-1 agent cancels only the codes they started; a tier-2 agent any")
  func cancelOwnCodes() throws {
    let desk = try Desk()
    let starter = try desk.database.createLogin(.tier1)
    let sent = try PhoneVerification.verify(
      desk.account, phone: try PhoneNumber(parsing: "+16175550777", defaultRegion: "US"), via: .sms,
      ticket: desk.ticket, on: try desk.database.connect(as: starter))
    let other = #expect(throws: PostgresError.self) {
      try desk.tier1.execute("SELECT hms2fa_api.cancel_verification(\(sent.verificationID), 'INC9', NULL)")
    }
    #expect(other?.sqlState == "H2P06")
    let byStarter = try desk.database.connect(as: starter).queryFirst(
      "SELECT hms2fa_api.cancel_verification(\(sent.verificationID), 'INC9', NULL) AS done")
    #expect(try byStarter?.decode("done", as: Bool.self) == true)
    let second = try PhoneVerification.verify(
      desk.account, phone: try PhoneNumber(parsing: "+16175550778", defaultRegion: "US"), via: .sms,
      ticket: desk.ticket, on: try desk.database.connect(as: starter))
    let byTier2 = try desk.tier2.queryFirst(
      "SELECT hms2fa_api.cancel_verification(\(second.verificationID), 'INC9', NULL) AS done")
    #expect(try byTier2?.decode("done", as: Bool.self) == true)
  }
}
