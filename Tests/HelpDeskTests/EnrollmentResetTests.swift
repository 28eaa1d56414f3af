import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Enrollment reset against a real server.
@Suite("enrollment reset")
struct EnrollmentResetTests {
  /// jd123 with an old phone (default), a landline, a retired tablet, an outstanding link, two
  /// remembered browsers (one expired) and a waiting code; two tier-2 logins and a tier-1 one.
  struct Setup {
    let database: TestDatabase
    let admin: Connection
    let agent: Connection
    let otherAgent: Connection
    let tier1: Connection
    let account: AccountID
    let ticket: Ticket

    init(highRisk: Bool = false, lastUsedHoursAgo: Int = 24 * 400) throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", highRisk: highRisk, on: admin)
      try admin.execute("UPDATE hms2fa.accounts SET login_action = 'push'")
      try Fixtures.device(
        "jd123", phone: "+16175550101", isDefault: true, lastUsedHoursAgo: lastUsedHoursAgo, on: admin)
      try Fixtures.device("jd123", kind: "landline", platform: nil, phone: "+16174322000", on: admin)
      try Fixtures.device("jd123", kind: "tablet", platform: nil, phone: nil, retired: true, on: admin)
      let pending = try Fixtures.device("jd123", phone: "+16175550102", activated: false, on: admin)
      try admin.execute(
        """
        INSERT INTO hms2fa.activation_links (token_hash, account_id, device_id, ticket, expires_at)
        VALUES (sha256('x'::bytea), 'jd123', \(pending), 'T0', now() + interval '1 day')
        """)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: admin)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: -3, on: admin)
      try admin.execute(
        """
        INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, channel, code_hash, salt, ticket, expires_at)
        VALUES ('ownership', 'jd123', '+16175550109', 'sms', sha256('c'::bytea), substr(sha256(random()::text::bytea), 1, 16), 'T0',
                now() + interval '10 minutes')
        """)
      agent = try database.connect(as: try database.createLogin(.tier2))
      otherAgent = try database.connect(as: try database.createLogin(.tier2))
      tier1 = try database.connect(as: try database.createLogin(.tier1))
      account = try AccountID(parsing: "jd123")
      ticket = try Ticket(parsing: "INC0012345")
    }

    func reset(
      _ via: IdentityVerification = .inPerson, reason: String? = "old phone lost", dryRun: Bool = false,
      expectedPlan: String? = nil, on db: Connection? = nil
    ) throws -> ResetOutcome {
      try EnrollmentReset.reset(
        account, ticket: ticket, verifiedVia: via, reason: reason, dryRun: dryRun, expectedPlan: expectedPlan,
        on: db ?? agent)
    }

    /// Every row of every table, to compare before and after (the shared snapshot).
    func snapshot() throws -> String {
      try database.snapshot()
    }

    func actions() throws -> [String] {
      try Fixtures.auditActions(on: admin)
    }
  }

  @Test("one transaction: devices retired, link, browser and code revoked, defaults back, one event")
  func reset() throws {
    let setup = try Setup()
    let outcome = try setup.reset()
    #expect(outcome.status == .reset)
    #expect(outcome.devicesRetired == 3)
    #expect(outcome.linksRevoked == 1)
    #expect(outcome.browsersRevoked == 1)
    #expect(outcome.codesCancelled == 1)
    #expect(outcome.enrollment == .notEnrolled)
    #expect(outcome.startSetupVisible == true)

    let row = try #require(
      try setup.admin.queryFirst(
        """
        SELECT (SELECT count(*) FROM hms2fa.devices WHERE retired_at IS NULL)::int AS in_use,
               (SELECT count(*) FROM hms2fa.devices WHERE retired_reason = 'reset')::int AS reset,
               (SELECT count(*) FROM hms2fa.devices WHERE is_default)::int AS defaults,
               (SELECT login_action FROM hms2fa.accounts) AS login_action,
               (SELECT count(*) FROM hms2fa.phone_verifications WHERE state = 'pending')::int AS codes
        """))
    #expect(try row.decode("in_use", as: Int.self) == 0)
    #expect(try row.decode("reset", as: Int.self) == 3)
    #expect(try row.decode("defaults", as: Int.self) == 0)
    #expect(try row.decode("login_action", as: String.self) == "ask")
    #expect(try row.decode("codes", as: Int.self) == 0)

    let event = try #require(
      try setup.admin.queryFirst(
        "SELECT action, actor, reason, details::text AS details FROM hms2fa.audit_events"))
    #expect(try setup.actions() == ["enrollment.reset"])
    #expect(try event.decode("reason", as: String.self) == "old phone lost")
    let details = try #require(
      try JSONSerialization.jsonObject(with: Data(try event.decode("details", as: String.self).utf8))
        as? [String: Any])
    #expect(details["devices_retired"] as? Int == 3)
    #expect(details["browsers_revoked"] as? Int == 1)
    #expect(details["verified_via"] as? String == "in-person")

    let card = try Lookup.card(for: try AccountKey(parsing: "jd123"), on: setup.tier1)
    #expect(card.account.enrollment == .notEnrolled)
    #expect(card.account.startSetupVisible == true)
  }

  @Test("nothing to reset: status says so, nothing written")
  func nothingToReset() throws {
    let setup = try Setup()
    _ = try setup.reset()
    let before = try setup.snapshot()
    let again = try setup.reset()
    #expect(again.status == .nothingToReset)
    #expect(try setup.snapshot() == before)
  }

  @Test("a dry run shows the plan and changes nothing; a disabled account is 65; tier1 is 77")
  func dryRunAndRefusals() throws {
    let setup = try Setup()
    let before = try setup.snapshot()
    let plan = try setup.reset(dryRun: true)
    #expect(plan.status == .dryRun)
    #expect(plan.devices.count == 3)
    #expect(plan.links == 1 && plan.browsers == 1 && plan.codes == 1)
    #expect(try setup.snapshot() == before)

    let tier1 = #expect(throws: DeskError.self) { try setup.reset(on: setup.tier1) }
    #expect(tier1?.status == .noPermission)
    #expect(tier1?.message.contains("hms2fa_tier2") == true)
    try setup.admin.execute("UPDATE hms2fa.accounts SET status = 'disabled'")
    let disabled = #expect(throws: DeskError.self) { try setup.reset() }
    #expect(disabled?.status == .dataError)
    #expect(try setup.actions().isEmpty)
  }

  @Test("the plan confirmed is the plan carried out: a device enrolled, or an email changed, in between is 75")
  func planChangedSinceShown() throws {
    let setup = try Setup()
    let plan = try setup.reset(dryRun: true)
    let fingerprint = try #require(plan.planFingerprint)
    #expect(fingerprint.count == 64)

    // Someone enrols a phone while the agent reads the plan: the reset refuses, changes nothing.
    try Fixtures.device("jd123", phone: "+16175550177", on: setup.admin)
    let before = try setup.snapshot()
    let changed = #expect(throws: DeskError.self) { try setup.reset(expectedPlan: fingerprint) }
    #expect(changed?.status == .tryLater)
    #expect(changed?.message.contains("changed since its plan was shown") == true)
    #expect(changed?.message.contains("run the command again") == true)
    #expect(try setup.snapshot() == before)

    // The same through raw SQL, as the tier-2 login.
    let raw = #expect(throws: PostgresError.self) {
      try setup.agent.execute(
        "SELECT hms2fa_api.reset_enrollment('jd123', 'INC1', 'in-person', NULL, false, \(fingerprint))")
    }
    #expect(raw?.sqlState == "H2R11")

    // A new plan; the email of record changes before the confirmation: refused again.
    let second = try #require(try setup.reset(dryRun: true).planFingerprint)
    #expect(second != fingerprint)
    try setup.admin.execute("UPDATE hms2fa.accounts SET email = 'someone_else@example.com'")
    #expect(throws: DeskError.self) { try setup.reset(expectedPlan: second) }

    // What a reset revokes whatever its number, and a device's last use, don't change the plan.
    let third = try #require(try setup.reset(dryRun: true).planFingerprint)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 20, on: setup.admin)
    try setup.admin.execute("UPDATE hms2fa.devices SET last_used_at = now()")
    let outcome = try setup.reset(expectedPlan: third)
    #expect(outcome.status == .reset)
    #expect(outcome.devicesRetired == 4)
    #expect(outcome.browsersRevoked == 2)
  }

  @Test("code-on-file needs an unused identity proof of the last 15 minutes, checked by the database")
  func codeOnFile() throws {
    let setup = try Setup()
    let missing = #expect(throws: DeskError.self) { try setup.reset(.codeOnFile) }
    #expect(missing?.status == .dataError)
    #expect(missing?.message.contains("identity check") == true)
    let insertProof: (String) throws -> Void = { age in
      try setup.admin.execute(
        Query(
          verbatim: """
            INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, device_id, channel, code_hash, salt,
                                                    ticket, created_at, expires_at, state, ended_at)
            SELECT 'identity', 'jd123', phone, device_id, 'sms', sha256('p'::bytea), substr(sha256(random()::text::bytea), 1, 16), 'T0',
                   now() - interval '\(age)', now() - interval '\(age)' + interval '10 minutes', 'verified',
                   now() - interval '\(age)'
              FROM hms2fa.devices WHERE is_default
            """))
    }
    try insertProof("20 minutes")
    let stale = #expect(throws: DeskError.self) { try setup.reset(.codeOnFile) }
    #expect(stale?.status == .dataError)
    try insertProof("2 minutes")
    let outcome = try setup.reset(.codeOnFile)
    #expect(outcome.status == .reset)
    #expect(outcome.verifiedVia == "code-on-file")
    // The proof is used up: a new phone set up since doesn't make it good for a second reset.
    try Fixtures.device("jd123", isDefault: true, on: setup.admin)
    let reused = #expect(throws: DeskError.self) { try setup.reset(.codeOnFile) }
    #expect(reused?.status == .dataError)
    #expect(reused?.message.contains("identity check") == true)
  }

  @Test("a high-risk account needs a different tier-2 agent's approval")
  func highRisk() throws {
    let setup = try Setup(highRisk: true)
    let request = try setup.reset()
    #expect(request.status == .pendingApproval)
    #expect(request.approvalNeeded == ["high_risk"])
    let id = try #require(request.requestID)
    #expect(
      try setup.admin.queryFirst("SELECT count(*)::int AS n FROM hms2fa.devices WHERE retired_at IS NULL")?
        .decode("n", as: Int.self) == 3)
    let listed = try EnrollmentReset.requests(all: false, on: setup.tier1)
    #expect(listed.map(\.requestID) == [id])

    let own = #expect(throws: DeskError.self) { try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.agent) }
    #expect(own?.status == .noPermission)
    let tier1 = #expect(throws: DeskError.self) {
      try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.tier1)
    }
    #expect(tier1?.status == .noPermission)

    let done = try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.otherAgent)
    #expect(done.status == .reset)
    #expect(done.devicesRetired == 3)
    #expect(try setup.actions() == ["enrollment.reset_requested", "enrollment.reset_approved", "enrollment.reset"])
    let twice = #expect(throws: DeskError.self) {
      try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.otherAgent)
    }
    #expect(twice?.status == .dataError)
    #expect(try EnrollmentReset.requests(all: false, on: setup.tier1).isEmpty)
  }

  @Test("a request is approved as it was made: a device enrolled since makes approval 75, nothing changed")
  func requestPlanChanged() throws {
    let setup = try Setup(highRisk: true)
    let id = try #require(try setup.reset().requestID)
    try Fixtures.device("jd123", phone: "+16175550177", on: setup.admin)
    let before = try setup.snapshot()
    let changed = #expect(throws: DeskError.self) {
      try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.otherAgent)
    }
    #expect(changed?.status == .tryLater)
    #expect(changed?.message.contains("changed since reset request \(id) was made") == true)
    #expect(try setup.snapshot() == before)

    // The stale request is withdrawn (while it is pending, the account has no other way in), and
    // a new one, made on the new plan, is approved.
    try EnrollmentReset.withdraw(id, ticket: setup.ticket, reason: "plan changed", on: setup.agent)
    let again = try #require(try setup.reset().requestID)
    let done = try EnrollmentReset.approve(again, ticket: setup.ticket, on: setup.otherAgent)
    #expect(done.status == .reset)
    #expect(done.devicesRetired == 4)
  }

  @Test("a second reset within 30 days, or an attested reset of a phone used today, needs approval")
  func twoPersonRule() throws {
    let setup = try Setup()
    _ = try setup.reset()
    try Fixtures.device("jd123", phone: "+16175550111", on: setup.admin)
    let second = try setup.reset()
    #expect(second.status == .pendingApproval)
    #expect(second.approvalNeeded == ["reset_within_30_days"])

    let recent = try Setup(lastUsedHoursAgo: 2)
    for via in [IdentityVerification.callback, .video, .manager] {
      let plan = try recent.reset(via, dryRun: true)
      #expect(plan.approvalNeeded == ["device_used_in_last_24_hours"], "\(via)")
    }
    #expect(try recent.reset(.inPerson).status == .reset)
  }

  @Test("an expired request can't be approved")
  func expiredRequest() throws {
    let setup = try Setup(highRisk: true)
    let id = try #require(try setup.reset().requestID)
    try setup.admin.execute("UPDATE hms2fa.reset_requests SET expires_at = now() - interval '1 minute'")
    let error = #expect(throws: DeskError.self) {
      try EnrollmentReset.approve(id, ticket: setup.ticket, on: setup.otherAgent)
    }
    #expect(error?.status == .dataError)
    #expect(error?.message.contains("expired") == true)
  }

  @Test("two agents resetting one account at the same moment: exactly one reset")
  func concurrentResets() throws {
    let setup = try Setup()
    let database = setup.database
    let logins = try (0..<2).map { _ in try database.createLogin(.tier2) }
    let statuses = Locked<[String]>([])
    let group = DispatchGroup()
    for login in logins {
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        do {
          let outcome = try EnrollmentReset.reset(
            try AccountID(parsing: "jd123"), ticket: try Ticket(parsing: "T9"), verifiedVia: .inPerson, reason: nil,
            dryRun: false, on: try database.connect(as: login))
          statuses.update { $0.append(outcome.status.rawValue) }
        } catch {
          statuses.update { $0.append("error: \(error)") }
        }
      }
    }
    group.wait()
    #expect(statuses.value.sorted() == ["nothing_to_reset", "reset"])
    #expect(try setup.actions() == ["enrollment.reset"])
  }

  @Test("a backend killed in the middle of a reset leaves nothing changed, and a retry works")
  func killedMidReset() throws {
    let setup = try Setup()
    let before = try setup.snapshot()
    // Hold the browsers the reset revokes after retiring the devices, so it waits half-done.
    let blocker = try setup.database.connect()
    try blocker.execute("BEGIN")
    try blocker.execute("SELECT 1 FROM hms2fa.remembered_browsers FOR UPDATE")
    let login = try setup.database.createLogin(.tier2)
    let database = setup.database
    let result = Locked<DeskError?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      do {
        _ = try EnrollmentReset.reset(
          try AccountID(parsing: "jd123"), ticket: try Ticket(parsing: "T9"), verifiedVia: .inPerson, reason: nil,
          dryRun: false, on: try database.connect(as: login))
      } catch {
        result.update { $0 = deskError(error) }
      }
    }
    var terminated = false
    for _ in 0..<200 where !terminated {
      let row = try setup.admin.queryFirst(
        """
        SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity
         WHERE usename = \(login) AND wait_event_type = 'Lock'
        """)
      terminated = try row?.decode("done", as: Bool.self) ?? false
      if !terminated { usleep(50_000) }
    }
    group.wait()
    try blocker.execute("ROLLBACK")
    #expect(terminated)
    #expect(result.value?.status == .unavailable)
    #expect(try setup.snapshot() == before)
    #expect(try setup.reset().status == .reset)
  }

  @Test("the notice is queued in the reset's own transaction: a reset made with psql notifies too")
  func notice() throws {
    let setup = try Setup()
    // Raw SQL, as a tier-2 agent in psql would: no tool, no mailer of the agent's.
    let raw = try setup.agent.queryFirst(
      "SELECT (hms2fa_api.reset_enrollment('jd123', 'INC0012345', 'in-person', 'old phone lost', false, NULL)->>'message_id')::bigint AS id"
    )
    let messageID = try #require(try raw?.decode("id", as: Int64?.self))
    let delivery = try DeliveryProcess(setup.database)
    #expect(try delivery.runOnce().status == 0)
    let mails = try delivery.mails()
    try #require(mails.count == 1)
    #expect(mails[0].contains("\r\nTo: \"Jane Doe\" <jane_doe@hms.harvard.edu>\r\n"))
    #expect(mails[0].contains("INC0012345") && mails[0].contains("617-432-2000"))
    #expect(mails[0].contains("+16175550101"), "the notice names the devices removed")
    #expect(try Outbox.follow(messageID, wait: 0, on: setup.agent) == .sent)

    // A reset rolled back takes its notice with it: nothing is sent for a change that didn't happen.
    let other = try TestDatabase.create()
    let admin = try other.connect()
    try Fixtures.account("kx1", on: admin)
    try Fixtures.device("kx1", on: admin)
    let agent = try other.connect(as: try other.createLogin(.tier2))
    try agent.execute("BEGIN")
    try agent.execute("SELECT hms2fa_api.reset_enrollment('kx1', 'INC1', 'in-person', NULL, false, NULL)")
    try agent.execute("ROLLBACK")
    let otherDelivery = try DeliveryProcess(other)
    #expect(try otherDelivery.runOnce().status == 0)
    #expect(try otherDelivery.mails().isEmpty)
  }

  @Test("a notice that can't be delivered fails for good after its attempts; the reset stands, recorded")
  func noticeFailure() throws {
    let setup = try Setup()
    let outcome = try setup.reset()
    let dir = try scratchDirectory("reset-fail")
    let broken = try script("cat >/dev/null; echo 'no route' >&2; exit 1", in: dir)
    let delivery = try DeliveryProcess(setup.database, environment: ["HMS2FA_MAILER": "sendmail:\(broken)"])
    #expect(try delivery.runOnce().status == 0)
    let id = try #require(outcome.messageID)
    #expect(
      try Outbox.follow(id, wait: 0, on: setup.agent) == .failed(reason: "\(broken) exited with status 1: no route"))
    #expect(try setup.actions() == ["enrollment.reset", "delivery.failed"])
    #expect(
      try setup.admin.queryFirst("SELECT count(*)::int AS n FROM hms2fa.devices WHERE retired_at IS NULL")?
        .decode("n", as: Int.self) == 0)
  }
}
