import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Activation links against a real server: sent through a maildir, redeemed as the sign-in
/// service would, with raw SQL as `hms2fa_signin`.
@Suite("activation links")
struct ActivationTests {
  /// A person with a phone waiting for activation, a tier1 login, and the delivery service.
  struct Setup {
    let database: TestDatabase
    let deviceID: Int64
    let agent: Connection
    let signin: Connection
    let delivery: DeliveryProcess
    let ticket: Ticket
    let account: AccountID

    init(environment: [String: String] = [:]) throws {
      ticket = try Ticket(parsing: "INC0012345")
      account = try AccountID(parsing: "jd123")
      database = try TestDatabase.create()
      let admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", on: admin)
      try Fixtures.device("jd123", kind: "landline", platform: nil, on: admin)
      deviceID = try Fixtures.device("jd123", activated: false, on: admin)
      agent = try database.connect(as: try database.createLogin(.tier1))
      signin = try database.connect(as: try database.createLogin(.signin))
      delivery = try DeliveryProcess(database, environment: environment)
    }

    /// Queues a link, then lets the delivery service send it.
    func send(validFor: DeskDuration = ActivationLinks.defaultValidity) throws -> SentActivationLink {
      let link = try ActivationLinks.send(to: account, validFor: validFor, ticket: ticket, on: agent)
      try #require(try delivery.runOnce().status == 0)
      return link
    }

    /// The messages delivered so far, oldest first.
    func messages() throws -> [String] {
      try delivery.mails()
    }

    /// The token in a message's link.
    func token(in message: String) throws -> String {
      try #require(DeliveryProcess.token(in: message))
    }

    func redeem(_ token: String, on connection: Connection? = nil) throws -> Int64? {
      try (connection ?? signin).queryFirst("SELECT hms2fa_api.redeem_activation_link(\(token)) AS device")?
        .decode("device", as: Int64?.self)
    }

    func state(of link: Int64) throws -> String? {
      try database.connect().queryFirst(
        """
        SELECT CASE WHEN used_at IS NOT NULL THEN 'used' WHEN revoked_at IS NOT NULL THEN 'revoked: ' || revoked_reason
                    ELSE 'outstanding' END AS state
          FROM hms2fa.activation_links WHERE link_id = \(link)
        """)?.decode("state", as: String.self)
    }

    func actions() throws -> [String] {
      try Fixtures.auditActions(on: database.connect())
    }
  }

  @Test("the email goes to the email of record, and its link activates the phone exactly once")
  func sendAndRedeem() throws {
    let setup = try Setup()
    let link = try setup.send()
    #expect(link.deviceID == setup.deviceID)
    #expect(link.sentTo == "jane_doe@hms.harvard.edu")
    #expect(abs(link.expiresAt.timeIntervalSinceNow - 86_400) < 120)
    let messages = try setup.messages()
    try #require(messages.count == 1)
    #expect(messages[0].contains("\r\nTo: \"Jane Doe\" <jane_doe@hms.harvard.edu>\r\n"))
    #expect(messages[0].contains("\r\nFrom: \"HMS IT Service Desk\" <itservicedesk@hms.harvard.edu>\r\n"))
    let token = try setup.token(in: messages[0])
    #expect(token.count == 43)

    #expect(try setup.redeem(token) == setup.deviceID)
    let activated = try setup.database.connect().queryFirst(
      "SELECT activated_at IS NOT NULL AS done FROM hms2fa.devices WHERE device_id = \(setup.deviceID)")
    #expect(try activated?.decode("done", as: Bool.self) == true)
    #expect(try setup.redeem(token) == nil, "a used link must not work twice")
    #expect(try setup.actions() == ["activation.sent", "activation.redeemed"])
    #expect(try setup.state(of: link.linkID) == "used")
    // The person's phone is now active: no pending device left to send a link for.
    let again = #expect(throws: DeskError.self) { try setup.send() }
    #expect(again?.status == .dataError)
  }

  @Test("the token is nowhere in the database: not in any table, not in the audit log")
  func tokenNotStored() throws {
    let setup = try Setup()
    let link = try setup.send()
    let token = try setup.token(in: try setup.messages()[0])
    _ = try ActivationLinks.revoke(for: setup.account, ticket: setup.ticket, on: setup.agent)
    let admin = try setup.database.connect()
    let tables = try admin.query(
      "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables WHERE schemaname LIKE 'hms2fa%'"
    ).map { try $0.decode("name", as: String.self) }
    #expect(tables.contains("hms2fa.activation_links"))
    for table in tables {
      let dump = try admin.query(Query(verbatim: "SELECT t::text AS row FROM \(table) t")).map {
        try $0.decode("row", as: String.self)
      }.joined(separator: "\n")
      #expect(!dump.contains(token), "\(table) holds the token")
    }
    let stored = try admin.queryFirst("SELECT token_hash FROM hms2fa.activation_links WHERE link_id = \(link.linkID)")
    #expect(try stored?.decode("token_hash", as: [UInt8].self) == Secrets.sha256(token.utf8))
  }

  @Test("a second send revokes the first link; only the newest works")
  func secondSendSupersedes() throws {
    let setup = try Setup()
    let first = try setup.send()
    let second = try setup.send()
    #expect(second.superseded == 1)
    let messages = try setup.messages()
    try #require(messages.count == 2)
    let tokens = try messages.map { try setup.token(in: $0) }
    #expect(try setup.state(of: first.linkID) == "revoked: superseded")
    let working = try Set(tokens.map { try setup.redeem($0) })
    #expect(working == [nil, setup.deviceID])
  }

  @Test("expired, revoked and used links all refuse, without saying why")
  func refusals() throws {
    let setup = try Setup()
    _ = try setup.send()
    let expiredToken = try setup.token(in: try setup.messages()[0])
    try setup.database.exec(
      """
      UPDATE hms2fa.activation_links
         SET created_at = now() - interval '2 days', expires_at = now() - interval '1 second'
      """)
    #expect(try setup.redeem(expiredToken) == nil)

    let revoked = try setup.send()
    let revokedToken = try setup.token(in: try setup.messages().last!)
    #expect(try ActivationLinks.revoke(for: setup.account, ticket: setup.ticket, on: setup.agent) == 1)
    #expect(try setup.redeem(revokedToken) == nil)
    #expect(try setup.state(of: revoked.linkID) == "revoked: revoked by the service desk")

    for junk in ["", "x", String(repeating: "A", count: 43), String(repeating: "é", count: 5_000), "' OR 1=1 --"] {
      #expect(try setup.redeem(junk) == nil)
    }
    #expect(try setup.actions().filter { $0 == "activation.redeemed" }.isEmpty)
  }

  @Test("eight redemptions of one token at the same moment: exactly one succeeds")
  func concurrentRedemption() throws {
    let setup = try Setup()
    _ = try setup.send()
    let token = try setup.token(in: try setup.messages()[0])
    let login = try setup.database.createLogin(.signin)
    // Hold the link's row so that all eight are waiting on it when it is let go.
    let holder = try setup.database.connect()
    try holder.execute("BEGIN")
    try holder.execute("SELECT 1 FROM hms2fa.activation_links FOR UPDATE")
    let results = Locked<[Int64?]>([])
    let group = DispatchGroup()
    let database = setup.database
    for _ in 0..<8 {
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        do {
          let outcome = try database.connect(as: login).queryFirst(
            "SELECT hms2fa_api.redeem_activation_link(\(token)) AS device")?.decode("device", as: Int64?.self)
          results.update { $0.append(outcome) }
        } catch {
          results.update { $0.append(-1) }  // an error is neither success nor a quiet refusal
        }
      }
    }
    let waiting = try setup.database.connect()
    for _ in 0..<200 {
      let row = try waiting.queryFirst(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = \(login) AND wait_event_type = 'Lock'")
      if try row?.decode("n", as: Int.self) == 8 { break }
      usleep(50_000)
    }
    try holder.execute("COMMIT")
    group.wait()
    #expect(results.value.count == 8)
    #expect(results.value.compactMap { $0 } == [setup.deviceID])
    #expect(try setup.actions().filter { $0 == "activation.redeemed" }.count == 1)
  }

  @Test(
    "a failing or hanging sendmail leaves the link revoked, and the desk sees it failed", arguments: ["fail", "hang"])
  func deliveryFailure(_ mode: String) throws {
    let dir = try scratchDirectory("sendmail")
    let program = try script(mode == "fail" ? "cat >/dev/null; echo 'relay refused' >&2; exit 1" : "sleep 30", in: dir)
    let setup = try Setup(environment: ["HMS2FA_MAILER": "sendmail:\(program)", "HMS2FA_DELIVERY_TIMEOUT": "1s"])
    let link = try ActivationLinks.send(to: setup.account, ticket: setup.ticket, on: setup.agent)
    // A hang is a temporary failure: with one attempt allowed, it is the last.
    let run = try setup.delivery.runOnce(["--max-attempts", "1"])
    #expect(run.status == 0)
    let outcome = try Outbox.follow(link.messageID, wait: 0, on: setup.agent)
    guard case .failed(let reason) = outcome else {
      Issue.record("the desk sees \(outcome)")
      return
    }
    #expect(reason.contains(mode == "fail" ? "relay refused" : "did not finish"))
    let links = try ActivationLinks.list(for: setup.account, on: setup.agent)
    #expect(links.map(\.state) == ["revoked"])
    #expect(links.first?.revokedReason == "delivery failed")
    #expect(try setup.actions() == ["activation.sent", "delivery.failed"])
  }

  @Test("at most five links per person per 24 hours; then 75 saying when")
  func rateLimit() throws {
    let setup = try Setup()
    for _ in 0..<5 { _ = try setup.send() }
    let error = #expect(throws: DeskError.self) { try setup.send() }
    #expect(error?.status == .tryLater)
    #expect(error?.message.contains("may be sent after") == true)
    #expect(try setup.messages().count == 5)
  }

  @Test("a disabled account, or no phone waiting, is 65; an unknown person is 67")
  func refusedSends() throws {
    let setup = try Setup()
    let admin = try setup.database.connect()
    try Fixtures.account("nd1", on: admin)
    try Fixtures.device("nd1", activated: true, on: admin)
    let none = #expect(throws: DeskError.self) {
      try ActivationLinks.send(to: try AccountID(parsing: "nd1"), ticket: setup.ticket, on: setup.agent)
    }
    #expect(none?.status == .dataError)
    let wrongDevice = #expect(throws: DeskError.self) {
      try ActivationLinks.send(to: setup.account, device: setup.deviceID - 1, ticket: setup.ticket, on: setup.agent)
    }
    #expect(wrongDevice?.status == .dataError)
    let unknown = #expect(throws: DeskError.self) {
      try ActivationLinks.send(to: try AccountID(parsing: "zz999"), ticket: setup.ticket, on: setup.agent)
    }
    #expect(unknown?.status == .noSuchAccount)
    try admin.execute("UPDATE hms2fa.accounts SET status = 'disabled' WHERE account_id = 'jd123'")
    let disabled = #expect(throws: DeskError.self) { try setup.send() }
    #expect(disabled?.status == .dataError)
    #expect(try setup.messages().isEmpty)
    #expect(try setup.actions().isEmpty)
  }

  @Test("a link for a device retired after sending no longer works")
  func retiredDevice() throws {
    let setup = try Setup()
    _ = try setup.send()
    let token = try setup.token(in: try setup.messages()[0])
    try setup.database.exec(
      "UPDATE hms2fa.devices SET retired_at = now(), retired_reason = 'reset' WHERE device_id = \(setup.deviceID)")
    #expect(try setup.redeem(token) == nil)
  }

  @Test("roles: signin can only redeem; tier1 can't redeem or read the links table")
  func roles() throws {
    let setup = try Setup()
    for statement: Query in [
      "SELECT * FROM hms2fa.activation_links",
      "SELECT hms2fa_api.redeem_activation_link('x')",
    ] {
      let error = #expect(throws: PostgresError.self) { try setup.agent.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
    for statement: Query in [
      "SELECT * FROM hms2fa.activation_links",
      "SELECT * FROM hms2fa_api.activation_links('jd123')",
      "SELECT hms2fa_api.revoke_activation_links('jd123', 'T1')",
    ] {
      let error = #expect(throws: PostgresError.self) { try setup.signin.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
  }

  @Test("user show lists outstanding links: id, device, sent, expiry; never a token or hash")
  func cardShowsLinks() throws {
    let setup = try Setup()
    let link = try setup.send()
    let card = try Lookup.card(for: try AccountKey(parsing: "jd123"), on: setup.agent)
    let links = try #require(card.account.activationLinks)
    #expect(links.map(\.linkId) == [link.linkID])
    #expect(links.first?.deviceId == setup.deviceID)
    let raw = try setup.agent.queryFirst("SELECT hms2fa_api.account_card('jd123')::text AS card")
    let text = try #require(try raw?.decode("card", as: String.self))
    #expect(text.contains("\"activation_links\""))
    #expect(!text.contains("token"))
  }
}
