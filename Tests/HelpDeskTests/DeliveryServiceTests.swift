import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The delivery service as a separate process under its own login, and the database rules that
/// keep secrets and messages out of staff hands, tried with raw SQL as each role.
@Suite("delivery service")
struct DeliveryServiceTests {
  /// jd123 with a phone waiting for activation, a tier-1 agent and the service's login.
  struct Setup {
    let database: TestDatabase
    let admin: Connection
    let agent: Connection
    let account: AccountID
    let ticket: Ticket

    init() throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", on: admin)
      try Fixtures.device("jd123", activated: false, on: admin)
      agent = try database.connect(as: try database.createLogin(.tier1))
      account = try AccountID(parsing: "jd123")
      ticket = try Ticket(parsing: "INC0012345")
    }

    func sendLink() throws -> SentActivationLink {
      try ActivationLinks.send(to: account, ticket: ticket, on: agent)
    }

    func message(_ id: Int64) throws -> (state: String, attempts: Int, dueIn: Double) {
      let row = try #require(
        try admin.queryFirst(
          """
          SELECT state, attempts, extract(epoch FROM next_attempt_at - now())::float8 AS due
            FROM hms2fa.outbox WHERE message_id = \(id)
          """))
      return (try row.decode("state"), try row.decode("attempts"), try row.decode("due"))
    }

    /// The sign-in service's redemption of `token`: the device activated, or nil.
    func redeem(_ token: String) throws -> Int64? {
      let signin = try database.connect(as: try database.createLogin(.signin))
      return try signin.queryFirst("SELECT hms2fa_api.redeem_activation_link(\(token)) AS d")?.decode("d")
    }
  }

  static let staff: [Tier?] = [nil, .tier1, .tier2, .batch, .auditor, .signin]

  /// The desk's roles and the operator's; the batch tier runs jobs, not desk calls.
  @Test("no function a staff role may call takes a secret, a hash of one or a salt")
  func noSecretParameters() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    let offending = try admin.query(
      """
      SELECT p.oid::regprocedure::text AS f, r.rolname AS role
        FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        CROSS JOIN pg_roles r
       WHERE n.nspname LIKE 'hms2fa%'
         AND r.rolname IN ('hms2fa_tier1', 'hms2fa_tier2', 'hms2fa_auditor', 'hms2fa_operator')
         AND has_function_privilege(r.oid, p.oid, 'EXECUTE')
         AND (EXISTS (SELECT 1 FROM unnest(p.proargtypes::oid[]) t WHERE t = 'bytea'::regtype)
              OR EXISTS (SELECT 1 FROM unnest((coalesce(p.proargnames, '{}'))[1:p.pronargs]) a
                          WHERE a ~ '(hash|salt|token|secret|candidate)'))
      """
    ).map { "\(try $0.decode("role", as: String.self)): \(try $0.decode("f", as: String.self))" }
    #expect(offending.isEmpty, "\(offending)")
    // The catalogue check reads what it should: the service's own function does take a hash.
    let service = try admin.queryFirst(
      """
      SELECT has_function_privilege('hms2fa_delivery', 'hms2fa_api.store_message_secret(bigint, bytea, bytea)',
                                    'EXECUTE') AS may
      """)
    #expect(try service?.decode("may", as: Bool.self) == true)
  }

  @Test("no staff role reads the outbox or calls the service's functions", arguments: staff)
  func outboxIsOff(_ tier: Tier?) throws {
    let setup = try Setup()
    _ = try setup.sendLink()
    let db = try setup.database.connect(as: try setup.database.createLogin(tier))
    for statement: Query in [
      "SELECT * FROM hms2fa.outbox",
      "SELECT * FROM hms2fa.code_tries",
      "SELECT * FROM hms2fa_api.claim_message(interval '1 minute')",
      "SELECT hms2fa_api.store_message_secret(1, sha256('known'::bytea), NULL::bytea)",
      "SELECT hms2fa_api.record_delivery(1, 1, 'sent')",
      "SELECT hms2fa.queue_message('reset_notice', 'email', 'jd123', 'x@hms.harvard.edu', 'T1', '{}')",
    ] {
      let error = #expect(throws: PostgresError.self) { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(tier?.rawValue ?? "none"): \(statement.sql)")
    }
    // SET ROLE to the service's role is refused to a login that isn't a member.
    let setRole = #expect(throws: PostgresError.self) { try db.execute("SET ROLE hms2fa_delivery") }
    #expect(setRole?.sqlState == SQLState.insufficientPrivilege)
  }

  @Test("in psql, a tier-2 login can't choose a link's token, read the queue or become the service")
  func psqlAttacks() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let login = try setup.database.createLogin(.tier2)
    let psql =
      (TestCluster.serverBinaries.map { $0 + "/psql" }).flatMap {
        FileManager.default.isExecutableFile(atPath: $0) ? $0 : nil
      } ?? "/usr/bin/psql"
    let process = Process()
    process.executableURL = URL(fileURLWithPath: psql)
    process.arguments = ["-X", "-v", "ON_ERROR_STOP=0", try setup.database.conninfo(user: login)]
    process.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"]
    let input = Pipe()
    let output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    process.standardError = output
    try process.run()
    input.fileHandleForWriting.write(
      Data(
        """
        SELECT hms2fa_api.create_activation_link('jd123', NULL, sha256('known-token'), '7 days', 'INC-1');
        SELECT * FROM hms2fa_api.start_phone_verification('jd123', '+16175550100', 'sms', sha256('123456'), '\\x00', 'INC-1');
        SELECT * FROM hms2fa.outbox;
        SELECT hms2fa_api.store_message_secret(\(link.messageID), sha256('known-token'), NULL);
        SET ROLE hms2fa_delivery;
        SET ROLE hms2fa_owner;
        SELECT count(*) AS claimed FROM hms2fa_api.claim_message('1 minute');

        """.utf8))
    try input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let errors = text.split(whereSeparator: \.isNewline).filter { $0.hasPrefix("ERROR:") }
    #expect(errors.count == 7, "\(text)")
    #expect(errors.filter { $0.contains("does not exist") }.count == 2, "the old signatures are gone: \(text)")
    #expect(errors.filter { $0.contains("permission denied") }.count == 5, "\(text)")
    #expect(try setup.redeem("known-token") == nil)
    #expect(try setup.message(link.messageID).state == "queued")
  }

  @Test("the service's login can't act for the desk, nor read the registry's tables")
  func serviceIsNoAgent() throws {
    let setup = try Setup()
    let service = try setup.database.connect(as: try setup.database.createLogin(.delivery))
    for statement: Query in [
      "SELECT * FROM hms2fa.accounts",
      "SELECT * FROM hms2fa.outbox",
      "SELECT * FROM hms2fa_api.create_activation_link('jd123', NULL, interval '1 day', 'T1')",
      "SELECT * FROM hms2fa_api.account_card('jd123')",
      "SELECT hms2fa_api.reset_enrollment('jd123', 'T1', 'in-person', NULL, false, NULL)",
    ] {
      let error = #expect(throws: PostgresError.self) { try service.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
    }
  }

  @Test("the service stores a secret's hash once per attempt, only for a message it claimed")
  func secretOncePerAttempt() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let service = try setup.database.connect(as: try setup.database.createLogin(.delivery))
    // Not claimed yet: nothing to store.
    let early = #expect(throws: PostgresError.self) {
      try service.execute("SELECT hms2fa_api.store_message_secret(\(link.messageID), sha256('a'::bytea), NULL::bytea)")
    }
    #expect(early?.sqlState == "H2D08")
    try service.execute("SELECT * FROM hms2fa_api.claim_message(interval '1 minute')")
    try service.execute("SELECT hms2fa_api.store_message_secret(\(link.messageID), sha256('a'::bytea), NULL::bytea)")
    let again = #expect(throws: PostgresError.self) {
      try service.execute("SELECT hms2fa_api.store_message_secret(\(link.messageID), sha256('b'::bytea), NULL::bytea)")
    }
    #expect(again?.sqlState == "H2D08")
    // The hash stored is the live one: the link works before the person can have received it.
    #expect(try setup.redeem("a") != nil)
  }

  @Test("nothing is stored in plaintext: after sending, no table holds the token or the code")
  func nothingInPlaintext() throws {
    let setup = try Setup()
    _ = try setup.sendLink()
    try Fixtures.device(
      "jd123", kind: "landline", platform: nil, phone: "+16174322000", isDefault: true, on: setup.admin)
    _ = try PhoneVerification.identityCheck(
      setup.account, device: nil, via: .voice, ticket: setup.ticket, on: setup.agent)
    let delivery = try DeliveryProcess(setup.database)
    let run = try delivery.runOnce()
    #expect(run.status == 0)
    let mail = try #require(try delivery.mails().first)
    let token = try #require(DeliveryProcess.token(in: mail))
    let code = try #require(try delivery.lastCode())
    let tables = try setup.admin.query(
      "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables WHERE schemaname LIKE 'hms2fa%'"
    ).map { try $0.decode("name", as: String.self) }
    #expect(tables.contains("hms2fa.outbox"))
    for table in tables {
      let dump = try setup.admin.query(Query(verbatim: "SELECT t::text AS row FROM \(table) t")).map {
        try $0.decode("row", as: String.self)
      }.joined(separator: "\n")
      #expect(!dump.contains(token), "\(table) holds the token")
      #expect(!dump.contains(code) && !dump.contains(code.map(String.init).joined(separator: ", ")), "\(table)")
    }
    for output in [run.stdout, run.stderr] {
      #expect(!output.contains(token) && !output.contains(code), "the service's log shows a secret")
    }
  }

  @Test("a temporary failure is tried again after the wait, with the same Message-ID; then it is sent once")
  func retryWithBackoff() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let dir = try scratchDirectory("flaky")
    // Fails with EX_TEMPFAIL the first time, then delivers; logs every Message-ID it was given.
    let program = try script(
      """
      message=$(cat)
      printf '%s\\n' "$message" | grep '^Message-ID:' >> \(dir)/ids
      if [ ! -e \(dir)/failed-once ]; then touch \(dir)/failed-once; echo 'try later' >&2; exit 75; fi
      printf '%s\\n' "$message" > \(dir)/delivered
      """, in: dir)
    let delivery = try DeliveryProcess(setup.database, environment: ["HMS2FA_MAILER": "sendmail:\(program)"])
    let first = try delivery.runOnce(["--retry-after", "2m"])
    #expect(first.status == 0)
    #expect(first.stderr.contains("retry"))
    let waiting = try setup.message(link.messageID)
    #expect(waiting.state == "queued" && waiting.attempts == 1)
    #expect(waiting.dueIn > 100 && waiting.dueIn <= 120, "the wait asked for: \(waiting.dueIn) s")
    #expect(
      try Outbox.follow(link.messageID, wait: 0, on: setup.agent)
        == .queued(lastError: "\(program) exited with status 75: try later"))
    // Not due yet: another run sends nothing.
    #expect(try delivery.runOnce().status == 0)
    #expect(try setup.message(link.messageID).attempts == 1)
    try setup.admin.execute("UPDATE hms2fa.outbox SET next_attempt_at = now() WHERE message_id = \(link.messageID)")
    #expect(try delivery.runOnce().status == 0)
    #expect(try Outbox.follow(link.messageID, wait: 0, on: setup.agent) == .sent)
    let ids = try String(contentsOfFile: dir + "/ids", encoding: .utf8).split(whereSeparator: \.isNewline)
    #expect(ids.count == 2 && Set(ids).count == 1, "\(ids)")
    // The second attempt's link is the one that works.
    let token = try #require(DeliveryProcess.token(in: try String(contentsOfFile: dir + "/delivered", encoding: .utf8)))
    #expect(try setup.redeem(token) != nil)
    // Sent is final: made due again by hand, it is not sent twice.
    try setup.admin.execute("UPDATE hms2fa.outbox SET next_attempt_at = now() - interval '1 hour'")
    #expect(try delivery.runOnce().status == 0)
    #expect(try String(contentsOfFile: dir + "/ids", encoding: .utf8).split(whereSeparator: \.isNewline).count == 2)
  }

  @Test("attempts are bounded: the last temporary failure fails the message for good and revokes the link")
  func attemptsBounded() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let dir = try scratchDirectory("tempfail")
    let program = try script("cat > /dev/null; echo 'queue full' >&2; exit 75", in: dir)
    let delivery = try DeliveryProcess(setup.database, environment: ["HMS2FA_MAILER": "sendmail:\(program)"])
    for _ in 0..<2 {
      #expect(try delivery.runOnce(["--max-attempts", "2"]).status == 0)
      try setup.admin.execute("UPDATE hms2fa.outbox SET next_attempt_at = now()")
    }
    #expect(try setup.message(link.messageID).state == "failed")
    let outcome = try Outbox.follow(link.messageID, wait: 0, on: setup.agent)
    #expect(outcome == .failed(reason: "\(program) exited with status 75: queue full (attempt 2, giving up)"))
    let links = try ActivationLinks.list(for: setup.account, on: setup.agent)
    #expect(links.first?.revokedReason == "delivery failed")
  }

  @Test("a service killed while sending leaves the message claimed; after the claim lapses it is sent, never lost")
  func killedService() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let dir = try scratchDirectory("killed")
    let hang = try script("cat > \(dir)/first; echo $$ > \(dir)/pid; touch \(dir)/started; sleep 60", in: dir)
    let stuck = try DeliveryProcess(setup.database, environment: ["HMS2FA_MAILER": "sendmail:\(hang)"])
    let process = try stuck.start()
    var started = false
    for _ in 0..<400 where !started {
      started = FileManager.default.fileExists(atPath: dir + "/started")
      if !started { usleep(25_000) }
    }
    #expect(started)
    // The host goes down: the service and the transport it started die together.
    kill(process.processIdentifier, SIGKILL)
    let transport = try String(contentsOfFile: dir + "/pid", encoding: .utf8).trimmingCharacters(
      in: .whitespacesAndNewlines)
    kill(-(pid_t(transport) ?? 0), SIGKILL)
    process.waitUntilExit()
    let claimed = try setup.message(link.messageID)
    #expect(claimed.state == "sending" && claimed.attempts == 1)
    // Until the claim lapses, no other run takes it.
    let healthy = try DeliveryProcess(setup.database)
    #expect(try healthy.runOnce().status == 0)
    #expect(try healthy.mails().isEmpty)
    try setup.admin.execute("UPDATE hms2fa.outbox SET next_attempt_at = now() WHERE message_id = \(link.messageID)")
    #expect(try healthy.runOnce().status == 0)
    let mails = try healthy.mails()
    try #require(mails.count == 1)
    #expect(try Outbox.follow(link.messageID, wait: 0, on: setup.agent) == .sent)
    // The new attempt's secret replaced the first one's: only the link sent last works.
    let firstToken = try #require(
      DeliveryProcess.token(in: try String(contentsOfFile: dir + "/first", encoding: .utf8)))
    let token = try #require(DeliveryProcess.token(in: mails[0]))
    #expect(firstToken != token)
    #expect(try setup.redeem(firstToken) == nil)
    #expect(try setup.redeem(token) != nil)
  }

  @Test("the service's backend killed while it sends: exit 69, and the next run sends the message")
  func killedBackend() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    let dir = try scratchDirectory("backend")
    // The transport waits until the test has killed the service's backend, then delivers.
    let program = try script(
      """
      cat > \(dir)/message
      touch \(dir)/started
      while [ ! -e \(dir)/go ]; do sleep 0.05; done
      """, in: dir)
    let delivery = try DeliveryProcess(setup.database, environment: ["HMS2FA_MAILER": "sendmail:\(program)"])
    let outcome = Locked<Tool.Outcome?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      outcome.update { $0 = try? delivery.runOnce() }
    }
    for _ in 0..<400 where !FileManager.default.fileExists(atPath: dir + "/started") { usleep(25_000) }
    let killed = try setup.admin.queryFirst(
      "SELECT bool_or(pg_terminate_backend(pid)) AS done FROM pg_stat_activity WHERE usename = \(delivery.login)")
    #expect(try killed?.decode("done", as: Bool?.self) == true)
    _ = FileManager.default.createFile(atPath: dir + "/go", contents: nil)
    group.wait()
    let result = try #require(outcome.value)
    #expect(result.status == 69, "\(result.stderr)")
    #expect(result.stderr.split(separator: "\n").filter { $0.hasPrefix("hms2fa-admin:") }.count == 1)
    // The outcome was never recorded: the message waits for its claim to lapse, then goes again.
    #expect(try setup.message(link.messageID).state == "sending")
    try setup.admin.execute("UPDATE hms2fa.outbox SET next_attempt_at = now()")
    let again = try DeliveryProcess(setup.database)
    #expect(try again.runOnce().status == 0)
    #expect(try again.mails().count == 1)
    #expect(try Outbox.follow(link.messageID, wait: 0, on: setup.agent) == .sent)
  }

  @Test("a link revoked before the service gets to it is never sent")
  func revokedBeforeSending() throws {
    let setup = try Setup()
    let link = try setup.sendLink()
    #expect(try ActivationLinks.revoke(for: setup.account, ticket: setup.ticket, on: setup.agent) == 1)
    let delivery = try DeliveryProcess(setup.database)
    #expect(try delivery.runOnce().status == 0)
    #expect(try delivery.mails().isEmpty)
    guard case .failed = try Outbox.follow(link.messageID, wait: 0, on: setup.agent) else {
      Issue.record("a cancelled message is not reported as failed")
      return
    }
  }

  @Test("a running service wakes on NOTIFY: the desk sees the message sent long before the service's idle poll")
  func wakesOnNotify() throws {
    let setup = try Setup()
    let delivery = try DeliveryProcess(setup.database)
    let service = try delivery.start(["--idle", "10m"])
    defer { service.stop() }
    // The service is listening once it has drained the (empty) outbox; give it its first look.
    usleep(500_000)
    let link = try setup.sendLink()
    #expect(try Outbox.follow(link.messageID, wait: 30, on: setup.agent) == .sent)
    #expect(try delivery.mails().count == 1)
  }

  @Test("the nightly purge clears spent hashes and old texts, in batches; the rows stay as history")
  func purge() throws {
    let setup = try Setup()
    let delivery = try DeliveryProcess(setup.database)
    _ = try setup.sendLink()
    #expect(try delivery.runOnce().status == 0)
    let second = try setup.sendLink()  // supersedes the first, sent and now revoked
    #expect(try delivery.runOnce().status == 0)
    try setup.admin.execute("UPDATE hms2fa.outbox SET ended_at = now() - interval '2 days'")
    let batch = try setup.database.createLogin(.batch)
    let out = try Tool.run(
      ["jobs", "purge-secrets", "--batch-size", "1", "--json", "--database", try setup.database.conninfo(user: batch)])
    #expect(out.status == 0, "\(out.stderr)")
    let result = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
    #expect(result["links"] as? Int == 1, "only the superseded link's hash goes")
    #expect(result["bodies"] as? Int == 2)
    #expect(result["complete"] as? Bool == true)
    #expect((result["batches"] as? Int ?? 0) >= 2)
    let rows = try setup.admin.query(
      "SELECT link_id, token_hash IS NULL AS cleared FROM hms2fa.activation_links ORDER BY link_id")
    #expect(try rows.map { try $0.decode("cleared", as: Bool.self) } == [true, false])
    #expect(try rows.last?.decode("link_id", as: Int64.self) == second.linkID)
    let bodies = try setup.admin.queryFirst(
      "SELECT count(*) FILTER (WHERE body IS NULL)::int AS cleared, count(*)::int AS rows FROM hms2fa.outbox")
    #expect(try bodies?.decode("cleared", as: Int.self) == 2 && bodies?.decode("rows", as: Int.self) == 2)
    let tier1 = try Tool.run(
      [
        "jobs", "purge-secrets", "--database",
        try setup.database.conninfo(user: try setup.database.createLogin(.tier1)),
      ])
    #expect(tier1.status == 77)
  }

  @Test("delivery status: tier1 and operators list the queue without secrets; other roles are refused")
  func statusRoles() throws {
    let setup = try Setup()
    _ = try setup.sendLink()
    for (tier, allowed) in [(Tier.tier1, true), (.batch, false), (.auditor, false), (.signin, false)] {
      let login = try setup.database.createLogin(tier)
      let out = try Tool.run(["delivery", "status", "--database", try setup.database.conninfo(user: login)])
      #expect(out.status == (allowed ? 0 : 77), "\(tier): \(out.stderr)")
    }
    let operatorLogin = try setup.database.createLogin(nil)
    try setup.admin.execute(Query(verbatim: "GRANT hms2fa_operator TO \(operatorLogin)"))
    let out = try Tool.run(["delivery", "status", "--database", try setup.database.conninfo(user: operatorLogin)])
    #expect(out.status == 0)
    #expect(out.stdout.contains("activation_link") && out.stdout.contains("queued"))
  }
}
