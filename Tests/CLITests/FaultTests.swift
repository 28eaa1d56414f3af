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
    let environment: [String: String]

    init() throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", on: admin)
      try Fixtures.device("jd123", phone: "+16175550101", isDefault: true, on: admin)
      try Fixtures.device("jd123", phone: "+16175550102", activated: false, on: admin)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: admin)
      agent = try database.createLogin(.tier2)
      let dir = TestCluster.scratch + "/faults-" + UUID().uuidString.prefix(8)
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      environment = [
        "HMS2FA_MAILER": "maildir:\(dir)/Maildir", "HMS2FA_SMS": "spool:\(dir)/sms", "HMS2FA_LOCK_TIMEOUT": "60s",
      ]
    }

    func run(_ arguments: [String], environment extra: [String: String] = [:], limitFileSize: Bool = false) throws
      -> Tool.Outcome
    {
      try Tool.run(
        arguments + ["--database", try database.conninfo(user: agent)],
        environment: environment.merging(extra) { $1 }, limitFileSize: limitFileSize)
    }
  }

  static let changes: [[String]] = [
    ["activation", "send", "jd123", "--ticket", "F1"],
    ["remembered", "revoke", "jd123", "--ticket", "F1"],
    ["phone", "verify", "jd123", "617-555-0199", "--via", "sms", "--ticket", "F1"],
    ["identity", "check", "jd123", "--via", "voice", "--ticket", "F1"],
    ["enrollment", "reset", "jd123", "--ticket", "F1", "--verified-via", "in-person", "--yes"],
  ]

  @Test("a backend terminated during a change: exit 69, one line, nothing changed, a retry works", arguments: changes)
  func terminated(_ command: [String]) throws {
    let desk = try Desk()
    let before = try desk.database.snapshot()
    // Every change takes the account's row lock first: hold it, so the command waits inside its
    // transaction, then terminate its backend.
    let holder = try desk.database.connect()
    try holder.execute("BEGIN")
    try holder.execute("SELECT 1 FROM hms2fa.accounts WHERE account_id = 'jd123' FOR UPDATE")
    let outcome = Locked<Tool.Outcome?>(nil)
    let group = DispatchGroup()
    group.enter()
    let arguments = command + ["--database", try desk.database.conninfo(user: desk.agent)]
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
         WHERE usename = \(desk.agent) AND wait_event_type = 'Lock'
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
    let retry = try desk.run(command)
    #expect(retry.status == 0, "\(retry.stderr)")
  }

  @Test("a statement blocked by another session's lock gives up after lock_timeout: 75, try again")
  func lockTimeout() throws {
    let desk = try Desk()
    let before = try desk.database.snapshot()
    let holder = try desk.database.connect()
    try holder.execute("BEGIN")
    try holder.execute("SELECT 1 FROM hms2fa.accounts WHERE account_id = 'jd123' FOR UPDATE")
    let out = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", "F2"], environment: ["HMS2FA_LOCK_TIMEOUT": "1s"])
    try holder.execute("ROLLBACK")
    #expect(out.status == 75)
    #expect(out.stderr.contains("try again"))
    #expect(try desk.database.snapshot() == before)
    #expect(try desk.run(["remembered", "revoke", "jd123", "--ticket", "F2"]).status == 0)
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

  @Test("a full maildir or SMS spool is a delivery failure: 69, the link revoked, the code cancelled")
  func fullSpool() throws {
    let desk = try Desk()
    let mail = try desk.run(["activation", "send", "jd123", "--ticket", "F3"], limitFileSize: true)
    #expect(mail.status == 69, "\(mail.stderr)")
    #expect(mail.stderr.contains("was revoked"))
    let code = try desk.run(
      ["phone", "verify", "jd123", "617-555-0199", "--via", "sms", "--ticket", "F3"], limitFileSize: true)
    #expect(code.status == 69, "\(code.stderr)")
    #expect(code.stderr.contains("cancelled"))
    let states = try desk.admin.query(
      """
      SELECT 'link ' || coalesce(revoked_reason, 'outstanding') AS s FROM hms2fa.activation_links
      UNION ALL SELECT 'code ' || state FROM hms2fa.phone_verifications ORDER BY 1
      """
    ).map { try $0.decode("s", as: String.self) }
    #expect(states == ["code cancelled", "link delivery failed"])
  }
}

/// A value shared between threads.
final class Locked<Value>: @unchecked Sendable {
  private let lock = NSLock()
  private var stored: Value
  init(_ value: Value) { stored = value }
  var value: Value { lock.withLock { stored } }
  func update(_ change: (inout Value) -> Void) { lock.withLock { change(&stored) } }
}
