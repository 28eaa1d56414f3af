import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// What an agent at a terminal sees: tables that fit, states in colour, long output paged; and
/// none of it when the output is piped.
@Suite("on a terminal")
struct TerminalCLITests {
  static let escape = "\u{1B}["

  /// A person with long device labels, and a tier-1 login.
  func desk() throws -> CLIDesk {
    let desk = try CLIDesk()
    let db = try desk.database.connect()
    try db.execute(
      """
      UPDATE hms2fa.devices SET label = 'Jane''s old iPhone 8 from the 2019 fleet refresh, engraved'
       WHERE account_id = 'jd123'
      """)
    try Fixtures.device("jd123", kind: "landline", platform: nil, phone: "+16174322000", retired: true, on: db)
    return desk
  }

  func lines(_ text: String) -> [String] {
    text.split(separator: "\n").map { line in
      // Without colour, as the eye counts it.
      line.replacingOccurrences(of: "\u{1B}\\[[0-9;]*m", with: "", options: .regularExpression)
    }
  }

  @Test("tables fit the terminal's width (long text cut, ids, phones, states and times whole); --wide shows all")
  func width() throws {
    let desk = try desk()
    let conninfo = try desk.database.conninfo(user: desk.tier1)
    let narrow = try Tool.runInTerminal(["user", "show", "jd123", "--database", conninfo], columns: 80, rows: 100)
    #expect(narrow.status == 0, "\(narrow.stdout)")
    let table = lines(narrow.stdout).filter { $0.hasPrefix("  ") }
    #expect(!table.isEmpty)
    #expect(table.allSatisfy { $0.count <= 80 }, "\(table.filter { $0.count > 80 })")
    #expect(narrow.stdout.contains("+16174322000") && narrow.stdout.contains("…"))
    let wide = try Tool.runInTerminal(
      ["user", "show", "jd123", "--wide", "--database", conninfo], columns: 80, rows: 100)
    #expect(wide.stdout.contains("from the 2019 fleet refresh, engraved"), "\(wide.stdout)")
    let piped = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(piped.stdout.contains("from the 2019 fleet refresh, engraved"))
  }

  @Test("states in colour on a terminal; never with NO_COLOR or when piped")
  func colour() throws {
    let desk = try desk()
    let conninfo = try desk.database.conninfo(user: desk.tier1)
    let coloured = try Tool.runInTerminal(["user", "show", "jd123", "--database", conninfo], rows: 100)
    #expect(coloured.stdout.contains(Self.escape + "32mactive" + Self.escape + "0m"), "\(coloured.stdout)")
    #expect(coloured.stdout.contains(Self.escape + "31mretired"))
    let plain = try Tool.runInTerminal(
      ["user", "show", "jd123", "--database", conninfo], rows: 100, environment: ["NO_COLOR": "1"])
    #expect(plain.status == 0 && !plain.stdout.contains(Self.escape), "\(plain.stdout)")
    let piped = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(!piped.stdout.contains(Self.escape) && !piped.stdout.contains("\u{E001}"))
  }

  @Test("output longer than the terminal goes through $PAGER; short or piped output doesn't")
  func pager() throws {
    let desk = try desk()
    let conninfo = try desk.database.conninfo(user: desk.tier1)
    let pager = ["PAGER": "sed 's/^/PAGED /'"]
    let long = try Tool.runInTerminal(["user", "show", "jd123", "--database", conninfo], rows: 10, environment: pager)
    #expect(long.status == 0)
    #expect(long.stdout.split(separator: "\n").allSatisfy { $0.hasPrefix("PAGED ") }, "\(long.stdout)")
    let short = try Tool.runInTerminal(
      ["user", "find", "jd123", "--database", conninfo], rows: 40, environment: pager)
    #expect(!short.stdout.contains("PAGED"), "\(short.stdout)")
    let piped = try desk.run(["user", "show", "jd123"], as: desk.tier1, environment: pager)
    #expect(!piped.stdout.contains("PAGED"))
  }

  @Test("audit log shows details as short key=value text; --json keeps the object")
  func auditDetails() throws {
    let desk = try desk()
    _ = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", "INC7", "--reason", "laptop stolen"], as: desk.tier2)
    let text = try desk.run(["audit", "log", "--account", "jd123"], as: desk.tier1)
    #expect(text.stdout.contains("revoked=1"), "\(text.stdout)")
    #expect(!text.stdout.contains("{\""))
    let json = try desk.run(["audit", "log", "--account", "jd123", "--json"], as: desk.tier1)
    let events = try #require(try jsonObject(json.stdout)["events"] as? [[String: Any]])
    #expect((events.first?["details"] as? [String: Any])?["revoked"] as? Int == 1)
  }
}
