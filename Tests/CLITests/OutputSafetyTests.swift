import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// What reaches the agent's terminal, the scripts reading --json, and the programs the tool
/// starts: readable text, one document, no secrets, no credentials.
@Suite("output safety")
struct OutputSafetyTests {
  /// The end-to-end suite's desk: jd123 with a device and a browser, a tier1 and a tier2 login.
  typealias Desk = CLIDesk

  /// A scratch folder for programs and what they record.
  private func scratch(_ name: String) throws -> String {
    let dir = TestCluster.scratch + "/\(name)-" + UUID().uuidString.prefix(8)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
  }

  private func program(_ path: String, _ script: String) throws {
    try script.write(toFile: path, atomically: true, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
  }

  @Test("names keep their letters whatever client encoding the environment asks for")
  func clientEncoding() throws {
    let desk = try Desk()
    try desk.database.connect().execute(
      "UPDATE hms2fa.accounts SET display_name = 'José Müller' WHERE account_id = 'jd123'")
    let shown = try desk.run(
      ["user", "show", "jd123", "--json"], as: desk.tier1, environment: ["PGCLIENTENCODING": "LATIN1"])
    #expect(shown.status == 0)
    let card = try #require(try JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any])
    #expect(card["display_name"] as? String == "José Müller")

    let dir = try scratch("encoding")
    let feed = dir + "/feed.csv"
    try "account_id,display_name,email,status,high_risk\nwx1,王小明 Zoë,wx1@hms.harvard.edu,active,false\n".write(
      toFile: feed, atomically: true, encoding: .utf8)
    let batch = try desk.database.createLogin(.batch)
    let imported = try desk.run(["accounts", "import", feed], as: batch, environment: ["PGCLIENTENCODING": "LATIN1"])
    #expect(imported.status == 0, "\(imported.stderr)")
    let stored = try desk.database.connect().queryFirst(
      "SELECT display_name FROM hms2fa.accounts WHERE account_id = 'wx1'")
    #expect(try stored?.decode("display_name", as: String.self) == "王小明 Zoë")
  }

  @Test("audit verify --json finding tampering prints one document (ok false) and exits 65")
  func auditVerifyOneDocument() throws {
    let desk = try Desk()
    let revoked = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC7"], as: desk.tier2)
    #expect(revoked.status == 0)
    try desk.database.connect().runScript(
      "SET session_replication_role = replica; UPDATE hms2fa.audit_events SET actor = 'someone' WHERE event_id = 1")
    let auditor = try desk.database.createLogin(.auditor)
    let out = try desk.run(["audit", "verify", "--json"], as: auditor)
    #expect(out.status == 65)
    let document = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
    #expect(document["ok"] as? Bool == false)
    #expect(out.stderr.split(separator: "\n").count == 1)
  }

  @Test(
    "bidirectional and zero-width characters are escaped in --json too; a long cell is cut in text, never in --json")
  func invisibleAndLong() throws {
    let desk = try Desk()
    let label = "phone \u{202E}enohp " + String(repeating: "x", count: 100) + "\u{200B}end"
    try desk.database.connect().execute("UPDATE hms2fa.devices SET label = \(label) WHERE account_id = 'jd123'")
    let json = try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1)
    #expect(json.status == 0)
    #expect(!json.stdout.contains("\u{202E}") && !json.stdout.contains("\u{200B}"))
    #expect(json.stdout.contains("\\u202e") && json.stdout.contains("\\u200b"))
    let card = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
    let devices = try #require(card["devices"] as? [[String: Any]])
    #expect(devices.contains { $0["label"] as? String == label }, "--json keeps the whole label")
    let text = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(text.status == 0)
    #expect(!text.stdout.contains(String(repeating: "x", count: 100)))
    #expect(text.stdout.contains("x…"))
  }

  @Test("a connection string that doesn't parse: the error never shows its password")
  func conninfoPassword() throws {
    for conninfo in ["postgresql://bob:s3%zzcret@localhost/db", "host=localhost password=hunter2%zz' dbname"] {
      let out = try Tool.run(["user", "show", "jd123"], environment: ["HMS2FA_DATABASE_URL": conninfo])
      #expect(out.status == 78, "\(out.stderr)")
      #expect(out.stderr.contains("invalid connection string"), "\(out.stderr)")
      for secret in ["s3%zzcret", "zzcret", "hunter2"] {
        #expect(!out.stderr.contains(secret), "\(out.stderr)")
      }
    }
  }

  @Test("escape sequences from the database reach the terminal as visible text")
  func escapesShown() throws {
    let desk = try Desk()
    let db = try desk.database.connect()
    try db.execute(
      """
      UPDATE hms2fa.devices SET label = \("phone\u{1B}]0;PWNED\u{7}\u{1B}[2J\u{9B}31m\u{2028}x")
       WHERE account_id = 'jd123'
      """)
    let out = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(out.status == 0)
    for hidden: Unicode.Scalar in ["\u{1B}", "\u{7}", "\u{9B}", "\u{2028}"] {
      #expect(!out.stdout.unicodeScalars.contains(hidden), "U+\(String(hidden.value, radix: 16)) printed raw")
    }
    #expect(out.stdout.contains("phone\\u{1b}]0;PWNED\\u{7}"))
    let json = try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1)
    for hidden: Unicode.Scalar in ["\u{1B}", "\u{7}", "\u{9B}", "\u{2028}"] {
      #expect(!json.stdout.unicodeScalars.contains(hidden), "U+\(String(hidden.value, radix: 16)) in --json raw")
    }
  }

  @Test(
    "a gateway that echoes its input: the code, as digits or spoken, never reaches the agent, nor does the database's password",
    arguments: ["sms", "voice"])
  func gatewayEcho(_ channel: String) throws {
    let desk = try Desk()
    let dir = try scratch("echo")
    try program(
      dir + "/gateway",
      "#!/bin/sh\nenv > \(dir)/environment\ntee \(dir)/input >&2\nexit 1\n")
    // The delivery service runs the gateway, with what its own environment holds.
    let service = try DeliveryProcess(
      desk.database,
      environment: [
        "HMS2FA_SMS": "command:\(dir)/gateway", "PGPASSWORD": "db-secret-1", "PGSERVICEFILE": "/nonexistent",
        "HMS2FA_DATABASE_URL": "dbname=elsewhere", "PGPPATH": "/home/x/.pgp",
      ]
    ).start()
    defer { service.stop() }
    let out = try desk.run(
      ["phone", "verify", "jd123", "617-555-0101", "--via", channel, "--ticket", "INC1"], as: desk.tier1)
    #expect(out.status == 69)
    let input = try Data(contentsOf: URL(fileURLWithPath: dir + "/input"))
    let message = try #require(try JSONSerialization.jsonObject(with: input) as? [String: Any])
    let body = try #require(message["body"] as? String)
    let code = String(body.filter(\.isNumber).prefix(6))
    let spoken = code.map(String.init).joined(separator: ", ")
    #expect(code.count == 6)
    for form in [code, spoken] {
      #expect(!out.stderr.contains(form) && !out.stdout.contains(form), "\(out.stderr)")
    }
    #expect(out.stderr.contains("[redacted]"))
    let environment = try String(contentsOfFile: dir + "/environment", encoding: .utf8)
    #expect(!environment.contains("db-secret-1") && !environment.contains("HMS2FA_DATABASE_URL"))
    #expect(!environment.contains("PGSERVICEFILE"))
    #expect(environment.contains("PATH=") && environment.contains("PGPPATH=/home/x/.pgp"))
  }

  @Test("a result that can't be written is exit 74 with one line, not a silent success")
  func unwritableOutput() throws {
    let desk = try Desk()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Tool.binary)
    process.arguments = ["user", "show", "jd123", "--database", try desk.database.conninfo(user: desk.tier1)]
    process.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"]
    process.standardOutput = FileHandle(forWritingAtPath: "/dev/full")
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationStatus == 74)
    #expect(stderr.contains("could not be written") && stderr.split(separator: "\n").count == 1)
  }

  @Test("--database: a bare database name works; a client key's passphrase is refused like a password")
  func databaseArgument() throws {
    let desk = try Desk()
    let conninfo = try desk.database.conninfo(user: desk.tier1)
    let host = try #require(conninfo.firstMatch(of: /host='([^']*)'/)).output.1
    let port = try #require(conninfo.firstMatch(of: /port=(\d+)/)).output.1
    let name = try #require(conninfo.firstMatch(of: /dbname='([^']*)'/)).output.1
    let bare = try Tool.run(
      ["user", "show", "jd123", "--database", String(name)],
      environment: ["PGHOST": String(host), "PGPORT": String(port), "PGUSER": desk.tier1])
    #expect(bare.status == 0, "\(bare.stderr)")
    let viaEnvironment = try Tool.run(
      ["user", "show", "jd123"],
      environment: [
        "HMS2FA_DATABASE_URL": String(name), "PGHOST": String(host), "PGPORT": String(port), "PGUSER": desk.tier1,
      ])
    #expect(viaEnvironment.status == 0, "\(viaEnvironment.stderr)")
    let passphrase = try Tool.run(["user", "show", "jd123", "--database", conninfo + " sslpassword=hunter2"])
    #expect(passphrase.status == 64)
    #expect(!passphrase.stderr.contains("hunter2"))
  }

  @Test("dates outside years 1–9999 and a diff limit past 32 bits are usage errors, not internal ones")
  func outOfRange() throws {
    let desk = try Desk()
    let since = try desk.run(["audit", "log", "--since", "0000-01-01"], as: desk.tier1)
    #expect(since.status == 64)
    let feed = try scratch("limit") + "/feed.csv"
    try "account_id,display_name,email,status,high_risk\n".write(toFile: feed, atomically: true, encoding: .utf8)
    let limit = try desk.run(
      ["accounts", "import", feed, "--dry-run", "--diff-limit", "3000000000"], as: try desk.database.createLogin(.batch)
    )
    #expect(limit.status == 64)
  }
}
