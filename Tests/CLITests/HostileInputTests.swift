import Foundation
import HelpDesk
import Postgres
import PropertyBased
import TestSupport
import Testing

/// What people paste into a terminal, in every argument of every command: exit codes only from
/// the contract, one readable error line, no trap, and nothing changed when refused.
@Suite("hostile input")
struct HostileInputTests {
  /// A command line with its arguments; `slots` are the indices hostile values replace.
  struct Template: Sendable, CustomTestStringConvertible {
    var arguments: [String]
    var slots: [Int]
    var testDescription: String { arguments.prefix(2).joined(separator: " ") }

    /// Marks slots with a leading "@" (the valid default follows it).
    init(_ words: String...) {
      arguments = words.map { $0.hasPrefix("@") ? String($0.dropFirst()) : $0 }
      slots = words.indices.filter { words[$0].hasPrefix("@") }
    }
  }

  static let templates: [Template] = [
    Template("user", "show", "@jd123"),
    Template("user", "find", "@jane", "--limit", "@5"),
    Template("phone", "owner", "@617-555-0101"),
    Template("phone", "verify", "@jd123", "@617-555-0199", "--via", "@sms", "--ticket", "@TK1"),
    Template("phone", "confirm", "@jd123", "@617-555-0199", "@123456", "--ticket", "@TK1"),
    Template("identity", "check", "@jd123", "--via", "@voice", "--ticket", "@TK1", "--device", "@1"),
    Template("identity", "confirm", "@jd123", "@123456", "--ticket", "@TK1"),
    Template(
      "enrollment", "reset", "@jd123", "--ticket", "@TK1", "--verified-via", "@in-person", "--reason", "@lost",
      "--dry-run"),
    Template("enrollment", "approve", "@1", "--ticket", "@TK1"),
    Template("enrollment", "requests"),
    Template("activation", "send", "@jd123", "--ticket", "@TK1", "--valid-for", "@1h", "--device", "@2"),
    Template("activation", "list", "@jd123"),
    Template("activation", "revoke", "@jd123", "--ticket", "@TK1", "--reason", "@oops", "--link", "@1"),
    Template("remembered", "list", "@jd123"),
    Template("remembered", "revoke", "@jd123", "--ticket", "@TK1", "--reason", "@stolen"),
    Template("audit", "log", "--account", "@jd123", "--actor", "@someone", "--since", "@7d", "--limit", "@10"),
    Template(
      "jobs", "expire-remembered", "--batch-size", "@100", "--max-runtime", "@1m", "--max-fraction", "@0.5",
      "--dry-run"),
    Template("accounts", "import", "@ops/seed/feed.csv", "--max-disable-fraction", "@0.05", "--dry-run"),
    Template("staff", "grant", "@nobody_here", "--role", "@tier1", "--ticket", "@TK1"),
    Template("staff", "revoke", "@nobody_here", "--role", "@tier1", "--ticket", "@TK1"),
  ]

  static let corpus: [String] = [
    "", " ", "\t\n", String(repeating: "A", count: 65_536), "a\u{0}b", "\u{1}\u{7}\u{1B}[31mred",
    "\u{202E}321dj", "jd\u{200B}123", "'; DROP TABLE hms2fa.accounts; --", "$(reboot)", "`id`", "%s%n%x%p",
    "../../../etc/passwd", "-x", "--", "--ticket", "99999999999999999999999999", "-1", "-5m", "0", "NaN",
    "１２３４５６", "🙂", "null", "\u{FFFD}\u{FFFD}",
  ]

  /// Exit statuses a person may see (70, a bug, is not among them).
  static let contractStatuses: Set<Int32> = [0, 64, 65, 67, 75, 77, 78]

  /// A person to act on, with a phone, a pending phone and a browser; a tier-2 agent.
  final class Desk: @unchecked Sendable {
    let database: TestDatabase
    let agent: String
    let environment: [String: String]

    init() throws {
      database = try TestDatabase.create()
      let admin = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", on: admin)
      try Fixtures.device("jd123", phone: "+16175550101", isDefault: true, on: admin)
      try Fixtures.device("jd123", phone: "+16175550102", activated: false, on: admin)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: admin)
      agent = try database.createLogin(.tier2)
      let dir = TestCluster.scratch + "/hostile-" + UUID().uuidString.prefix(8)
      try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
      environment = ["HMS2FA_MAILER": "maildir:\(dir)/Maildir", "HMS2FA_SMS": "spool:\(dir)/sms"]
    }

    /// Runs one command line and records every way it could misbehave.
    func check(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
      let label = arguments.map { String($0.unicodeScalars.prefix(20)) }.joined(separator: " ")
      let before = try database.snapshot()
      let out = try Tool.run(arguments + ["--database", try database.conninfo(user: agent)], environment: environment)
      #expect(!out.crashed, "trap: \(label)", sourceLocation: sourceLocation)
      #expect(
        HostileInputTests.contractStatuses.contains(out.status), "exit \(out.status): \(label)",
        sourceLocation: sourceLocation)
      #expect(
        !out.stderr.contains("Fatal error") && !out.stderr.contains("Stack dump"), "\(label)",
        sourceLocation: sourceLocation)
      guard out.status != 0 else { return }
      let lines = out.stderr.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
      #expect(lines.count == 1, "\(label): \(out.stderr.prefix(300))", sourceLocation: sourceLocation)
      #expect(out.stderr.hasPrefix("hms2fa-admin: "), "\(label)", sourceLocation: sourceLocation)
      #expect(
        out.stderr.count < 600, "\(label): a \(out.stderr.count)-character message", sourceLocation: sourceLocation)
      #expect(out.stdout.isEmpty, "\(label)", sourceLocation: sourceLocation)
      #expect(try database.snapshot() == before, "refused, yet changed: \(label)", sourceLocation: sourceLocation)
    }
  }

  @Test("the corpus in every argument", arguments: templates)
  func corpus(_ template: Template) throws {
    let desk = try Desk()
    for slot in template.slots {
      for value in Self.corpus {
        var arguments = template.arguments
        arguments[slot] = value
        try desk.check(arguments)
      }
    }
  }

  @Test("invalid UTF-8 in an argument is refused in one line")
  func invalidUTF8() throws {
    let desk = try Desk()
    let conninfo = try desk.database.conninfo(user: desk.agent)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    // printf makes the bytes; Foundation would otherwise only pass valid UTF-8.
    process.arguments = [
      "-c", "exec \"$0\" user show \"$(printf 'jd\\377\\376')\" --database \"$1\"", Tool.binary, conninfo,
    ]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationReason == .exit)
    #expect(process.terminationStatus == 64, "\(message)")
    #expect(message.split(separator: "\n").count == 1)
  }

  /// Text of every kind: ASCII, controls, separators, combining marks, RTL, emoji.
  static let anyText = Gen.oneOf(
    Gen.character(in: " "..."~"), Gen.character(in: "\u{0}"..."\u{1F}"), Gen.character(in: "\u{80}"..."\u{2FF}"),
    Gen.character(in: "\u{200B}"..."\u{202E}"), Gen.character(in: "\u{0590}"..."\u{06FF}"),
    Gen.character(in: "\u{1F600}"..."\u{1F64F}")
  ).string(of: 0...40)

  @Test("generated text in random arguments")
  func generated() async throws {
    let desk = try Desk()
    let templates = Self.templates
    await propertyCheck(count: 120, input: Gen.int(in: 0...(templates.count - 1)), Gen.int(in: 0...9), Self.anyText) {
      which, slotChoice, text in
      let template = templates[which]
      guard !template.slots.isEmpty else { return }
      var arguments = template.arguments
      arguments[template.slots[slotChoice % template.slots.count]] = text
      do {
        try desk.check(arguments)
      } catch {
        Issue.record("could not run the tool: \(error)")
      }
    }
  }
}
