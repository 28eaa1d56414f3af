import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Faults with a real server: a backend killed mid-command, a lock held elsewhere, a server that
/// never answers, a full spool.
@Suite("faults")
struct FaultTests {
  /// jd123 with a pending phone, a phone on file, a remembered browser; a tier-2 login; a
  /// maildir and an SMS spool.
  struct Desk {
    let database: TestDatabase
    let admin: Connection
    let agent: String
    let batch: String
    let feed: String
    let environment: [String: String]

    init() throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", on: admin)
      try Fixtures.device("jd123", phone: "+16175550101", isDefault: true, on: admin)
      try Fixtures.device("jd123", phone: "+16175550102", activated: false, on: admin)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: admin)
      agent = try database.createLogin(.tier2)
      batch = try database.createLogin(.batch)
      // Something for every change to act on: a link, a code of each kind (salt 00…0f: the
      // codes are 123456 and 654321), a high-risk request made by someone else.
      try admin.runScript(
        """
        INSERT INTO hms2fa.activation_links (token_hash, account_id, device_id, ticket, expires_at)
        SELECT sha256('t'::bytea), 'jd123', device_id, 'T0', now() + interval '1 day'
          FROM hms2fa.devices WHERE activated_at IS NULL;
        INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, device_id, channel, code_hash, salt,
                                                ticket, expires_at)
        VALUES ('ownership', 'jd123', '+16175550199', NULL, 'sms',
                sha256('\\x000102030405060708090a0b0c0d0e0f'::bytea || '123456'::bytea),
                '\\x000102030405060708090a0b0c0d0e0f'::bytea, 'T0', now() + interval '10 minutes');
        INSERT INTO hms2fa.phone_verifications (purpose, account_id, phone, device_id, channel, code_hash, salt,
                                                ticket, expires_at)
        SELECT 'identity', 'jd123', phone, device_id, 'voice',
               sha256('\\x000102030405060708090a0b0c0d0e0f'::bytea || '654321'::bytea),
               '\\x000102030405060708090a0b0c0d0e0f'::bytea, 'T0', now() + interval '10 minutes'
          FROM hms2fa.devices WHERE is_default;
        INSERT INTO hms2fa.accounts (account_id, display_name, email, high_risk)
        VALUES ('dean01', 'Dean', 'dean@hms.harvard.edu', true);
        INSERT INTO hms2fa.devices (account_id, kind, platform, phone, activated_at, is_default)
        VALUES ('dean01', 'mobile', 'ios', '+16175550111', now(), true);
        INSERT INTO hms2fa.reset_requests (account_id, requested_by, ticket, verified_via, approval_needed)
        VALUES ('dean01', 'another_agent', 'T0', 'callback', '{high_risk}');
        """)
      let dir = TestCluster.scratch + "/faults-" + UUID().uuidString.prefix(8)
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      feed = dir + "/feed.csv"
      try "account_id,display_name,email,status,high_risk\njd123,Jane Q. Doe,jd123@hms.harvard.edu,active,false\n"
        .write(toFile: feed, atomically: true, encoding: .utf8)
      environment = [
        "HMS2FA_LOCK_TIMEOUT": "60s", "HMS2FA_DELIVERY_WAIT": "0",
      ]
    }

    /// Another session, in a transaction that holds jd123's account row: what a change waits for.
    func holdingAccount() throws -> Connection {
      let holder = try database.connect()
      try holder.execute("BEGIN")
      try holder.execute("SELECT 1 FROM hms2fa.accounts WHERE account_id = 'jd123' FOR UPDATE")
      return holder
    }

    func run(_ arguments: [String], environment extra: [String: String] = [:], limitFileSize: Bool = false) throws
      -> Tool.Outcome
    {
      try Tool.run(
        arguments + ["--database", try database.conninfo(user: agent)],
        environment: environment.merging(extra) { $1 }, limitFileSize: limitFileSize)
    }
  }

  /// A change-making command, and the rows to hold so that it waits inside its transaction.
  struct Change: Sendable, CustomTestStringConvertible {
    var arguments: [String]
    var hold = "SELECT 1 FROM hms2fa.accounts WHERE account_id = 'jd123' FOR UPDATE"
    var batch = false
    var testDescription: String { arguments.prefix(2).joined(separator: " ") }
  }

  static let changes: [Change] = [
    Change(arguments: ["activation", "send", "jd123", "--ticket", "FL1"]),
    Change(arguments: ["activation", "revoke", "jd123", "--ticket", "FL1"]),
    Change(arguments: ["remembered", "revoke", "jd123", "--ticket", "FL1"]),
    Change(arguments: ["phone", "verify", "jd123", "617-555-0199", "--via", "sms", "--ticket", "FL1"]),
    Change(
      arguments: ["phone", "confirm", "jd123", "617-555-0199", "123456", "--ticket", "FL1"],
      hold: "SELECT 1 FROM hms2fa.phone_verifications FOR UPDATE"),
    Change(arguments: ["identity", "check", "jd123", "--via", "voice", "--ticket", "FL1"]),
    Change(
      arguments: ["identity", "confirm", "jd123", "654321", "--ticket", "FL1"],
      hold: "SELECT 1 FROM hms2fa.phone_verifications FOR UPDATE"),
    Change(arguments: ["enrollment", "reset", "jd123", "--ticket", "FL1", "--verified-via", "in-person", "--yes"]),
    Change(
      arguments: ["enrollment", "approve", "1", "--ticket", "FL1", "--yes"],
      hold: "SELECT 1 FROM hms2fa.accounts WHERE account_id = 'dean01' FOR UPDATE"),
    Change(arguments: ["accounts", "import", "FEED"], batch: true),
  ]

  @Test("a backend terminated during a change: exit 69, one line, nothing changed, a retry works", arguments: changes)
  func terminated(_ change: Change) throws {
    let desk = try Desk()
    let command = change.arguments.map { $0 == "FEED" ? desk.feed : $0 }
    let login = change.batch ? desk.batch : desk.agent
    let before = try desk.database.snapshot()
    // Hold the rows the change locks, so it waits inside its transaction; then terminate its
    // backend.
    let holder = try desk.database.connect()
    try holder.execute("BEGIN")
    try holder.execute(Query(verbatim: change.hold))
    let outcome = Locked<Tool.Outcome?>(nil)
    let group = DispatchGroup()
    group.enter()
    let arguments = command + ["--database", try desk.database.conninfo(user: login)]
    let environment = desk.environment
    Thread.detachNewThread {
      defer { group.leave() }
      let result = try? Tool.run(arguments, environment: environment)
      outcome.update { $0 = result }
    }
    var terminated = false
    for _ in 0..<400 where !terminated {
      let row = try desk.admin.queryFirst(
        """
        SELECT bool_or(pg_terminate_backend(pid)) AS done FROM pg_stat_activity
         WHERE usename = \(login) AND wait_event_type = 'Lock'
        """)
      terminated = try row?.decode("done", as: Bool?.self) ?? false
      if !terminated { usleep(25_000) }
    }
    group.wait()
    try holder.execute("ROLLBACK")
    #expect(terminated)
    let result = try #require(outcome.value)
    #expect(result.status == 69, "\(result.stderr)")
    // One error line (a reset prints its plan before it, as information).
    #expect(
      result.stderr.split(separator: "\n").filter { $0.hasPrefix("hms2fa-admin:") }.count == 1, "\(result.stderr)")
    #expect(result.stderr.contains("run the command again"))
    #expect(try desk.database.snapshot() == before, "a killed command left something behind")
    let retry = try Tool.run(arguments, environment: environment)
    #expect(retry.status == 0, "\(retry.stderr)")
  }

  @Test("a statement blocked by another session's lock gives up after lock_timeout: 75, try again")
  func lockTimeout() throws {
    let desk = try Desk()
    let before = try desk.database.snapshot()
    let holder = try desk.holdingAccount()
    let out = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", "FL2"], environment: ["HMS2FA_LOCK_TIMEOUT": "1s"])
    try holder.execute("ROLLBACK")
    #expect(out.status == 75)
    #expect(out.stderr.contains("try again"))
    #expect(try desk.database.snapshot() == before)
    #expect(try desk.run(["remembered", "revoke", "jd123", "--ticket", "FL2"]).status == 0)
  }

  @Test("a command killed while it waits for a lock: its backend ends within seconds, its change never made")
  func killedWhileWaiting() throws {
    let desk = try Desk()
    let before = try desk.database.snapshot()
    let holder = try desk.holdingAccount()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Tool.binary)
    process.arguments = [
      "remembered", "revoke", "jd123", "--ticket", "FL4", "--database", try desk.database.conninfo(user: desk.agent),
    ]
    process.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HMS2FA_LOCK_TIMEOUT": "60s"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    // Watched from another session: one inside a transaction sees pg_stat_activity as it was at
    // the transaction's first look.
    func backends(waiting: Bool) throws -> Int {
      try desk.admin.queryFirst(
        """
        SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE application_name = 'hms2fa-admin' AND datname = current_database()
           AND (\(waiting) IS FALSE OR wait_event_type = 'Lock')
        """)?.decode("n", as: Int.self) ?? -1
    }
    var waited = 0
    while try backends(waiting: true) == 0, waited < 100 {
      usleep(100_000)
      waited += 1
    }
    #expect(try backends(waiting: true) == 1, "the command never waited for the lock")
    kill(process.processIdentifier, SIGKILL)
    process.waitUntilExit()
    // The holder keeps its lock: only noticing the closed connection ends the waiting backend.
    var gone = false
    for _ in 0..<50 where !gone {
      usleep(100_000)
      gone = try backends(waiting: false) == 0
    }
    #expect(gone, "the killed command's backend still waits for the lock")
    // Had it still been waiting, it would now take the lock and commit a revocation that nobody
    // is there to see.
    try holder.execute("ROLLBACK")
    usleep(300_000)
    #expect(try desk.database.snapshot() == before)
  }

  @Test("a server that accepts TCP but never answers: the connect timeout is honoured, exit 69")
  func blackHole() throws {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #expect(listener >= 0)
    defer { close(listener) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    }
    #expect(bound == 0)
    #expect(listen(listener, 16) == 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) }
    }
    let port = Int(UInt16(bigEndian: address.sin_port))
    let started = Date()
    let out = try Tool.run(["user", "show", "jd123", "--database", "host=127.0.0.1 port=\(port) connect_timeout=2"])
    let elapsed = Date().timeIntervalSince(started)
    #expect(out.status == 69)
    #expect(out.stderr.contains("127.0.0.1") && out.stderr.contains(String(port)))
    #expect(out.stderr.split(separator: "\n").count == 1)
    #expect(elapsed < 15, "connect_timeout=2 took \(elapsed) s")
  }

  @Test("a full maildir or SMS spool fails the delivery for good after its attempts: link revoked, code cancelled")
  func fullSpool() throws {
    let desk = try Desk()
    #expect(try desk.run(["activation", "send", "jd123", "--ticket", "FL3"]).status == 0)
    #expect(try desk.run(["phone", "verify", "jd123", "617-555-0199", "--via", "sms", "--ticket", "FL3"]).status == 0)
    let delivery = try DeliveryProcess(desk.database)
    // A full disk is a temporary failure; with one attempt allowed, the first is the last.
    let run = try Tool.run(
      [
        "delivery", "run", "--once", "--max-attempts", "1", "--database",
        try desk.database.conninfo(user: delivery.login),
      ],
      environment: delivery.environment, limitFileSize: true)
    #expect(run.status == 0, "\(run.stderr)")
    #expect(run.stderr.contains("failed"))
    #expect(try delivery.mails().isEmpty && delivery.phoneMessages().isEmpty)
    let states = try desk.admin.query(
      """
      SELECT 'link ' || coalesce(revoked_reason, 'outstanding') AS s FROM hms2fa.activation_links WHERE ticket = 'FL3'
      UNION ALL SELECT 'code ' || state FROM hms2fa.phone_verifications WHERE ticket = 'FL3' ORDER BY 1
      """
    ).map { try $0.decode("s", as: String.self) }
    #expect(states == ["code cancelled", "link delivery failed"])
    let status = try desk.run(["delivery", "status"])
    #expect(status.stdout.contains("failed") && status.stdout.contains("cannot"), "\(status.stdout)")
  }
}
