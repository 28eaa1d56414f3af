import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Finding people as callers name themselves: a surname, a phone number, an email anywhere an
/// account id goes.
@Suite("finding people")
struct FindingCLITests {
  func ids(_ out: Tool.Outcome) throws -> [String] {
    try #require((try jsonObject(out.stdout)["accounts"] as? [[String: Any]])).compactMap {
      $0["account_id"] as? String
    }
  }

  @Test("user find matches a word of the name and a phone number in use, as well as prefixes")
  func find() throws {
    let desk = try CLIDesk()
    let db = try desk.database.connect()
    try Fixtures.account("ab100", name: "Anna van der Berg-Doe", on: db)
    try Fixtures.account("dx200", name: "Doerte Meyer", on: db)
    try Fixtures.device("dx200", phone: "+16175550177", retired: true, on: db)
    for (text, expected) in [
      ("doe", ["ab100", "dx200", "jd123"]), ("Berg", ["ab100"]), ("van", ["ab100"]), ("jane", ["jd123"]),
      ("(617) 555-0100", ["jd123"]), ("+1 617 555 0100", ["jd123"]),
    ] {
      let out = try desk.run(["user", "find", text, "--json"], as: desk.tier1)
      #expect(out.status == 0, "\(text): \(out.stderr)")
      #expect(try ids(out) == expected, "\(text)")
    }
    // A retired device's number finds nobody, and says where to look.
    let retired = try desk.run(["user", "find", "617-555-0177"], as: desk.tier1)
    #expect(retired.status == 67)
    #expect(retired.stderr.contains("no device in use has the number +16175550177; hms2fa-admin phone owner"))
  }

  @Test("user show takes a phone number that names one account; several are listed (65), none is 67")
  func showByPhone() throws {
    let desk = try CLIDesk()
    let shown = try desk.run(["user", "show", "+1 (617) 555-0100", "--json"], as: desk.tier1)
    #expect(shown.status == 0, "\(shown.stderr)")
    #expect(try jsonObject(shown.stdout)["account_id"] as? String == "jd123")
    let db = try desk.database.connect()
    try Fixtures.account("mk456", on: db)
    try Fixtures.device("mk456", phone: "+16175550100", on: db)
    let two = try desk.run(["user", "show", "617 555 0100"], as: desk.tier1)
    #expect(two.status == 65)
    #expect(two.stderr.contains("on devices of 2 accounts: jd123, mk456"), "\(two.stderr)")
    #expect(try desk.run(["user", "show", "617 555 0999"], as: desk.tier1).status == 67)
  }

  @Test("every command that takes an account takes its email of record too, in any case")
  func emails() throws {
    let desk = try CLIDesk()
    let listed = try desk.run(["remembered", "list", "Jane_Doe@HMS.harvard.edu", "--json"], as: desk.tier1)
    #expect(listed.status == 0, "\(listed.stderr)")
    let revoked = try desk.run(
      ["remembered", "revoke", "jane_doe@hms.harvard.edu", "--ticket", "INC1", "--reason", "lost"], as: desk.tier2)
    #expect(revoked.status == 0, "\(revoked.stderr)")
    let event = try desk.database.connect().queryFirst(
      "SELECT account_id FROM hms2fa.audit_events WHERE action = 'remembered.revoked'")
    #expect(try event?.decode("account_id", as: String.self) == "jd123")
    let links = try desk.run(["activation", "list", "jane_doe@hms.harvard.edu"], as: desk.tier1)
    #expect(links.status == 0, "\(links.stderr)")
    let auditor = try desk.database.createLogin(.auditor)
    let log = try desk.run(["audit", "log", "--account", "Jane_Doe@hms.harvard.edu", "--json"], as: auditor)
    #expect(log.status == 0, "\(log.stderr)")
    let logged = try #require(try jsonObject(log.stdout)["events"] as? [[String: Any]])
    #expect(logged.map { $0["account_id"] as? String } == ["jd123"])
    let nobody = try desk.run(["remembered", "list", "nobody@hms.harvard.edu"], as: desk.tier1)
    #expect(nobody.status == 67)
    #expect(nobody.stderr.hasPrefix("hms2fa-admin: no account has the email of record 'nobody@hms.harvard.edu'"))
  }
}
