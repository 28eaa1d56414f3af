import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Phone ownership and identity checks against a real server, codes delivered to a spool.
@Suite("phone verification")
struct PhoneVerificationTests {
  struct Setup {
    let database: TestDatabase
    let tier1: Connection
    let tier2: Connection
    let delivery: DeliveryProcess
    let ticket: Ticket
    let caller: AccountID
    let number: PhoneNumber
    /// tl321's device on the number (the previous owner), and cd222's other phone.
    let oldDevice: Int64
    let otherPhone: Int64

    init(environment: [String: String] = [:]) throws {
      database = try TestDatabase.create()
      let admin = try database.connect()
      try Fixtures.account("cd222", name: "Chris Dale", on: admin)
      try Fixtures.account("tl321", name: "Tom Lee", email: "tom_lee@hms.harvard.edu", on: admin)
      oldDevice = try Fixtures.device("tl321", phone: "+16175550188", isDefault: true, on: admin)
      try Fixtures.device("tl321", kind: "landline", platform: nil, phone: "+16174322000", on: admin)
      otherPhone = try Fixtures.device("cd222", phone: "+16175550199", isDefault: true, on: admin)
      tier1 = try database.connect(as: try database.createLogin(.tier1))
      tier2 = try database.connect(as: try database.createLogin(.tier2))
      delivery = try DeliveryProcess(database, environment: environment)
      ticket = try Ticket(parsing: "INC7")
      caller = try AccountID(parsing: "cd222")
      number = try PhoneNumber(parsing: "(617) 555-0188", defaultRegion: "US")
    }

    /// Queues a code, then lets the delivery service send it.
    func verify(via channel: PhoneMessage.Channel = .sms, on db: Connection? = nil) throws -> SentCode {
      let sent = try PhoneVerification.verify(caller, phone: number, via: channel, ticket: ticket, on: db ?? tier1)
      try #require(try delivery.runOnce().status == 0)
      return sent
    }

    func confirm(_ code: String, release: Bool = false, on db: Connection? = nil) throws -> PhoneConfirmation {
      try PhoneVerification.confirm(
        caller, purpose: .ownership, phone: number, code: code, ticket: ticket, release: release, on: db ?? tier1)
    }

    /// The messages handed to the gateway, oldest first.
    func messages() throws -> [[String: String]] {
      try delivery.phoneMessages().map { ["to": $0.to, "channel": $0.channel, "body": $0.body] }
    }

    /// The code in the newest message.
    func lastCode() throws -> String {
      try #require(try delivery.lastCode())
    }

    func wrong(_ code: String) -> String {
      String(code.map { $0 == "9" ? "0" : Character(String(($0.wholeNumberValue ?? 0) + 1)) })
    }

    func actions() throws -> [String] {
      try Fixtures.auditActions(on: database.connect())
    }
  }

  @Test("the code arrives in the spool as JSON, and the right code verifies the number")
  func sendAndConfirm() throws {
    let setup = try Setup()
    let sent = try setup.verify()
    #expect(sent.phone == "+16175550188")
    #expect(abs(sent.expiresAt.timeIntervalSinceNow - 600) < 60)
    let messages = try setup.messages()
    #expect(messages.count == 1)
    #expect(messages.first?["to"] == "+16175550188" && messages.first?["channel"] == "sms")
    let code = try setup.lastCode()
    #expect(code.count == 6)
    let stored = try setup.database.connect().query("SELECT v::text AS row FROM hms2fa.phone_verifications v")
      .map { try $0.decode("row", as: String.self) }.joined()
    #expect(!stored.contains(code))

    let result = try setup.confirm(code)
    #expect(result.phone == "+16175550188")
    #expect(result.otherHolders.map(\.accountId) == ["tl321"])
    #expect(result.released.isEmpty)
    // The proof is what phone owner shows.
    let owner = try PhoneVerification.owner(of: setup.number, on: setup.tier1)
    #expect(owner.verifications.map(\.state) == ["verified"])
    #expect(owner.verifications.first?.accountId == "cd222")
    #expect(owner.accounts.map(\.accountId) == ["tl321"], "without --release the old holder keeps the number")
    #expect(try setup.actions() == ["phone.verification_sent", "phone.verified"])
    // Used once: the same code again finds nothing waiting.
    let again = #expect(throws: DeskError.self) { try setup.confirm(code) }
    #expect(again?.status == .dataError)
  }

  @Test("a wrong code says how many tries are left; the fifth ends the code, even for the right one")
  func wrongAndLocked() throws {
    let setup = try Setup()
    _ = try setup.verify()
    let code = try setup.lastCode()
    for left in [4, 3, 2, 1] {
      let error = #expect(throws: DeskError.self) { try setup.confirm(setup.wrong(code)) }
      #expect(error?.status == .dataError)
      #expect(error?.message.contains("\(left) tr") == true, "\(error?.message ?? "")")
    }
    let fifth = #expect(throws: DeskError.self) { try setup.confirm(setup.wrong(code)) }
    #expect(fifth?.message.contains("no longer works") == true)
    let right = #expect(throws: DeskError.self) { try setup.confirm(code) }
    #expect(right?.status == .dataError)
    #expect(try setup.actions().filter { $0 == "phone.verification_failed" }.count == 5)
    let malformed = #expect(throws: DeskError.self) { try setup.confirm("12a456") }
    #expect(malformed?.status == .usage)
  }

  @Test("after five wrong tries with the hourly limit reached, the message says when the next code can go")
  func lockedWithLimitReached() throws {
    let setup = try Setup()
    // Two earlier codes to the number this hour, then the one the caller gets wrong: three.
    let admin = try setup.database.connect()
    try admin.execute(
      """
      INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, channel, ticket, created_at, expires_at,
                                              state, ended_at)
      SELECT 'ownership', 'cd222', '+16175550188', 'sms', 'INC1', now() - g * interval '10 minutes',
             now() - g * interval '10 minutes' + interval '10 minutes', 'replaced', now() - interval '1 minute'
        FROM generate_series(2, 3) g
      """)
    _ = try setup.verify()
    let code = try setup.lastCode()
    for _ in 0..<4 { _ = try? setup.confirm(setup.wrong(code)) }
    let fifth = #expect(throws: DeskError.self) { try setup.confirm(setup.wrong(code)) }
    let message = fifth?.message ?? ""
    #expect(message.contains("no longer works"), "\(message)")
    // The oldest of the three went 30 minutes ago: the next may go in about 30 minutes.
    #expect(message.contains("once the hourly limit of +16175550188 lets it, at "), "\(message)")
    #expect(message.contains("(in 29 minutes)") || message.contains("(in 30 minutes)"), "\(message)")
    // Under the limit, nothing to wait for.
    try admin.execute("DELETE FROM hms2fa.code_tries")
    try admin.execute("DELETE FROM hms2fa.outbox WHERE verification_id IS NOT NULL")
    try admin.execute("DELETE FROM hms2fa.phone_verifications")
    _ = try setup.verify()
    let fresh = try setup.lastCode()
    for _ in 0..<4 { _ = try? setup.confirm(setup.wrong(fresh)) }
    let again = #expect(throws: DeskError.self) { try setup.confirm(setup.wrong(fresh)) }
    #expect(again?.message.contains("hourly limit") == false, "\(again?.message ?? "")")
  }

  @Test("an expired code and a replaced code are refused")
  func expiredAndReplaced() throws {
    let setup = try Setup()
    _ = try setup.verify()
    let first = try setup.lastCode()
    let second = try setup.verify(via: .voice)
    #expect(second.replaced == 1)
    #expect(try setup.messages().last?["channel"] == "voice")
    let newest = try setup.lastCode()
    if first != newest {
      let replaced = #expect(throws: DeskError.self) { try setup.confirm(first) }
      #expect(replaced?.status == .dataError)
    }
    try setup.database.exec(
      "UPDATE hms2fa.phone_verifications SET expires_at = now() - interval '1 second' WHERE state = 'pending'")
    let expired = #expect(throws: DeskError.self) { try setup.confirm(newest) }
    #expect(expired?.message.contains("expired") == true)
  }

  @Test("at most three codes per number per hour, whoever asks; then 75 saying when")
  func rateLimit() throws {
    let setup = try Setup()
    for _ in 0..<3 { _ = try setup.verify() }
    let error = #expect(throws: DeskError.self) {
      try PhoneVerification.verify(
        try AccountID(parsing: "tl321"), phone: setup.number, via: .sms, ticket: setup.ticket, on: setup.tier1)
    }
    #expect(error?.status == .tryLater)
    #expect(error?.message.contains("try again after") == true)
    #expect(try setup.messages().count == 3)
  }

  /// Confirms `code` for cd222 on a connection of its own (for another thread) as `login`:
  /// "verified", or the status of the `DeskError` it ended in.
  static func confirmElsewhere(
    _ code: String, number: PhoneNumber, release: Bool = false, as login: String, in database: TestDatabase
  ) -> String {
    do {
      let db = try database.connect(as: login)
      _ = try PhoneVerification.confirm(
        try AccountID(parsing: "cd222"), purpose: .ownership, phone: number, code: code,
        ticket: try Ticket(parsing: "INC7"), release: release, on: db)
      return "verified"
    } catch let error as DeskError {
      return "\(error.status)"
    } catch {
      return "\(error)"
    }
  }

  @Test("eight confirms of one code at the same moment: exactly one succeeds")
  func concurrentConfirm() throws {
    let setup = try Setup()
    _ = try setup.verify()
    let code = try setup.lastCode()
    let login = try setup.database.createLogin(.tier1)
    let database = setup.database
    let number = setup.number
    let successes = Locked(0)
    let failures = Locked<[String]>([])
    let group = DispatchGroup()
    for _ in 0..<8 {
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        let outcome = Self.confirmElsewhere(code, number: number, as: login, in: database)
        if outcome == "verified" {
          successes.update { $0 += 1 }
        } else {
          failures.update { $0.append(outcome) }
        }
      }
    }
    group.wait()
    #expect(successes.value == 1)
    #expect(failures.value.count == 7 && failures.value.allSatisfy { $0 == "dataError" }, "\(failures.value)")
    #expect(try setup.actions().filter { $0 == "phone.verified" }.count == 1)
  }

  @Test("--release retires only the other accounts' devices on the number, and mails each of them")
  func release() throws {
    let setup = try Setup()
    _ = try setup.verify()
    let code = try setup.lastCode()
    let refused = #expect(throws: DeskError.self) { try setup.confirm(code, release: true, on: setup.tier1) }
    #expect(refused?.status == .noPermission)
    #expect(try setup.actions() == ["phone.verification_sent"], "a refused release changes nothing")

    let result = try setup.confirm(code, release: true, on: setup.tier2)
    #expect(result.released.map(\.accountId) == ["tl321"])
    #expect(result.released.first?.deviceIds == [setup.oldDevice])
    let rows = try setup.database.connect().query(
      "SELECT device_id, retired_reason FROM hms2fa.devices WHERE retired_at IS NOT NULL ORDER BY device_id")
    #expect(try rows.map { try $0.decode("device_id", as: Int64.self) } == [setup.oldDevice])
    #expect(try rows.first?.decode("retired_reason", as: String.self) == "number reassigned")
    #expect(try setup.actions() == ["phone.verification_sent", "phone.verified", "phone.released"])

    // The notice was queued in the release's own transaction; the service sends it.
    try #require(try setup.delivery.runOnce().status == 0)
    let mails = try setup.delivery.mails()
    #expect(mails.count == 1)
    let mail = try #require(mails.first)
    #expect(mail.contains("\r\nTo: \"Tom Lee\" <tom_lee@hms.harvard.edu>\r\n"))
    #expect(mail.contains("+16175550188"))
    let notice = try #require(result.released.first?.messageID)
    #expect(try Outbox.follow(notice, wait: 0, on: setup.tier2) == .sent)
    let owner = try PhoneVerification.owner(of: setup.number, on: setup.tier1)
    #expect(owner.accounts.isEmpty)
    #expect(owner.history.map(\.accountId) == ["tl321"])
  }

  @Test("--release is refused, changing nothing, when the number is on a high-risk account")
  func releaseFromHighRisk() throws {
    let setup = try Setup()
    try setup.database.connect().execute("UPDATE hms2fa.accounts SET high_risk = true WHERE account_id = 'tl321'")
    _ = try setup.verify()
    let code = try setup.lastCode()
    let refused = #expect(throws: DeskError.self) { try setup.confirm(code, release: true, on: setup.tier2) }
    #expect(refused?.status == .noPermission)
    #expect(refused?.message.contains("high-risk account tl321") == true, "\(refused?.message ?? "")")
    let retired = try setup.database.connect().queryFirst(
      "SELECT count(*) AS n FROM hms2fa.devices WHERE retired_at IS NOT NULL")
    #expect(try retired?.decode("n", as: Int64.self) == 0)
    #expect(try setup.actions() == ["phone.verification_sent"])
    // The code itself still holds: confirmed without --release, the number is proven.
    let result = try setup.confirm(code, release: false, on: setup.tier2)
    #expect(result.released.isEmpty)
    #expect(try setup.actions() == ["phone.verification_sent", "phone.verified"])
  }

  @Test("a holder made high risk between the early check and the retire is not released")
  func releaseRace() throws {
    let setup = try Setup()
    _ = try setup.verify()
    let code = try setup.lastCode()
    let login = try setup.database.createLogin(.tier2)
    let database = setup.database
    let number = setup.number
    // The old holder turns high risk in a transaction still open: the release's early check
    // reads the committed row (not high risk), then waits for the row's lock before retiring.
    let admin = try setup.database.connect()
    try admin.execute("BEGIN")
    try admin.execute("UPDATE hms2fa.accounts SET high_risk = true WHERE account_id = 'tl321'")
    let outcome = Locked<String?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      let result = Self.confirmElsewhere(code, number: number, release: true, as: login, in: database)
      outcome.update { $0 = result }
    }
    let watcher = try setup.database.connect()
    #expect(try Fixtures.waitForLockWait(of: login, on: watcher))
    try admin.execute("COMMIT")
    group.wait()
    #expect(outcome.value == "noPermission")
    let retired = try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.devices WHERE retired_at IS NOT NULL")
    #expect(try retired?.decode("n", as: Int64.self) == 0)
  }

  @Test("a gateway that fails cancels the code, and the desk sees it failed")
  func deliveryFailure() throws {
    let dir = try scratchDirectory("gateway")
    let program = try script("cat >/dev/null; echo 'gateway: 503' >&2; exit 1", in: dir)
    let setup = try Setup(environment: ["HMS2FA_SMS": "command:\(program)"])
    let sent = try PhoneVerification.verify(
      setup.caller, phone: setup.number, via: .sms, ticket: setup.ticket, on: setup.tier1)
    #expect(try setup.delivery.runOnce().status == 0)
    #expect(
      try Outbox.follow(sent.messageID, wait: 0, on: setup.tier1)
        == .failed(reason: "\(program) exited with status 1: gateway: 503"))
    let state = try setup.database.connect().queryFirst("SELECT state FROM hms2fa.phone_verifications")
    #expect(try state?.decode("state", as: String.self) == "cancelled")
    #expect(try setup.actions() == ["phone.verification_sent", "delivery.failed"])
  }

  @Test("identity check: the code goes only to a phone on file, and a right one is a proof")
  func identity() throws {
    let setup = try Setup()
    let sent = try PhoneVerification.identityCheck(
      setup.caller, device: nil, via: .sms, ticket: setup.ticket, on: setup.tier1)
    try #require(try setup.delivery.runOnce().status == 0)
    #expect(sent.phone == "+16175550199")
    #expect(sent.deviceID == setup.otherPhone)
    let notTheirs = #expect(throws: DeskError.self) {
      try PhoneVerification.identityCheck(
        setup.caller, device: setup.oldDevice, via: .sms, ticket: setup.ticket, on: setup.tier1)
    }
    #expect(notTheirs?.status == .dataError)
    let confirmed = try PhoneVerification.confirm(
      setup.caller, purpose: .identity, phone: nil, code: try setup.lastCode(), ticket: setup.ticket, on: setup.tier1)
    let proof = try setup.database.connect().queryFirst(
      "SELECT (hms2fa.identity_proof('cd222', interval '15 minutes')).verification_id AS id")
    #expect(try proof?.decode("id", as: Int64?.self) == sent.verificationID)
    // The proof's end as the agent is told it: by the database's clock, never after the moment
    // the reset stops accepting it, and early by no more than a moment.
    let ends = try setup.database.connect().queryFirst(
      "SELECT ended_at + interval '15 minutes' AS ends FROM hms2fa.phone_verifications WHERE verification_id = \(sent.verificationID)"
    )
    let end = try #require(try ends?.decode("ends", as: Date.self))
    #expect(confirmed.proofValidUntil <= end)
    #expect(confirmed.proofValidUntil > end.addingTimeInterval(-3))
    // An ownership code is no identity proof, and an identity code can't confirm ownership.
    let wrongPurpose = #expect(throws: DeskError.self) { try setup.confirm(try setup.lastCode()) }
    #expect(wrongPurpose?.status == .dataError)
  }

  @Test("roles: no tier, no codes; signin and batch can't call the desk's functions")
  func roles() throws {
    let setup = try Setup()
    for tier in [nil, Tier.signin, .batch, .auditor] {
      let db = try setup.database.connect(as: try setup.database.createLogin(tier))
      for statement: Query in [
        "SELECT * FROM hms2fa.phone_verifications",
        "SELECT * FROM hms2fa_api.phone_owner('+16175550188')",
        "SELECT hms2fa_api.try_code('cd222', 'ownership', '+16175550188', '123456', 'T1')",
        "SELECT * FROM hms2fa_api.confirm_verification(1, 'T1')",
      ] {
        let error = #expect(throws: PostgresError.self) { try db.execute(statement) }
        #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(tier?.rawValue ?? "none"): \(statement.sql)")
      }
    }
  }
}
