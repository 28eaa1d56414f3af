import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

@Suite("user show and user find")
struct LookupTests {
  @Test("enrollment is derived from the devices in use, and Start setup shows only with none")
  func enrollmentStates() throws {
    let database = try TestDatabase.create()
    let db = try database.connect()
    for id in ["none1", "pend1", "enr1", "land1", "key1", "ret1"] { try Fixtures.account(id, on: db) }
    try Fixtures.device("pend1", activated: false, on: db)
    try Fixtures.device("enr1", activated: true, on: db)
    try Fixtures.device("enr1", phone: "+16175550111", activated: false, on: db)
    try Fixtures.device("land1", kind: "landline", platform: nil, activated: false, on: db)
    try Fixtures.device("key1", kind: "security_key", platform: nil, phone: nil, activated: false, on: db)
    try Fixtures.device("ret1", activated: true, retired: true, on: db)
    let expected = [
      "none1": "not_enrolled", "pend1": "pending", "enr1": "enrolled", "land1": "enrolled",
      "key1": "enrolled", "ret1": "not_enrolled",
    ]
    let agent = try database.connect(as: try database.createLogin(.tier1))
    for (id, state) in expected {
      let card = try Lookup.card(for: try AccountKey(parsing: id), on: agent)
      #expect(card.account.enrollment.rawValue == state, "\(id)")
      #expect(card.account.startSetupVisible == (state == "not_enrolled"), "\(id)")
    }
    let retired = try Lookup.card(for: try AccountKey(parsing: "ret1"), on: agent)
    #expect(retired.account.devices.map(\.state) == ["retired"])
    #expect(retired.account.devices.first?.retiredReason == "old phone")
  }

  @Test("a person is found by email of record whatever its case, and the card has the contract's fields")
  func byEmail() throws {
    let database = try TestDatabase.create()
    let db = try database.connect()
    try Fixtures.account("jd123", name: "Jane Doe", email: "Jane_Doe@hms.harvard.edu", on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 3, on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: -2, on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, revoked: true, on: db)
    let card = try Lookup.card(for: try AccountKey(parsing: " JANE_DOE@HMS.HARVARD.EDU "), on: db)
    #expect(card.account.accountId == "jd123")
    #expect(card.account.rememberedBrowsers.active == 2)
    #expect(card.account.rememberedBrowsers.expired == 1)
    #expect(card.account.rememberedBrowsers.revoked == 1)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(card.json.utf8)) as? [String: Any])
    for field in [
      "account_id", "display_name", "email", "status", "high_risk", "login_action", "created_at",
      "enrollment", "start_setup_visible", "devices", "remembered_browsers", "recent_audit",
    ] {
      #expect(object[field] != nil, "missing \(field)")
    }
  }

  @Test("an email of record shared by two accounts asks for the account id")
  func ambiguousEmail() throws {
    let db = try TestDatabase.create().connect()
    try Fixtures.account("aa1", email: "shared@hms.harvard.edu", on: db)
    try Fixtures.account("aa2", email: "shared@hms.harvard.edu", on: db)
    let error = #expect(throws: DeskError.self) {
      try Lookup.card(for: try AccountKey(parsing: "shared@hms.harvard.edu"), on: db)
    }
    #expect(error?.status == .dataError)
    #expect(error?.message.contains("aa1, aa2") == true)
  }

  @Test("nobody with that id or email is exit 67")
  func unknown() throws {
    let db = try TestDatabase.create().connect()
    for key in ["zz999", "nobody@hms.harvard.edu"] {
      let error = #expect(throws: DeskError.self) { try Lookup.card(for: try AccountKey(parsing: key), on: db) }
      #expect(error?.status == .noSuchAccount)
    }
  }

  @Test("find matches the start of id, email or name, and treats % and _ literally")
  func find() throws {
    let db = try TestDatabase.create().connect()
    try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", on: db)
    try Fixtures.account("jd124", name: "John Dunn", email: "jdunn@hms.harvard.edu", on: db)
    try Fixtures.account("mk456", name: "Maria Kim", email: "mkim@hms.harvard.edu", on: db)
    #expect(try Lookup.find("jd", on: db).map(\.accountId) == ["jd123", "jd124"])
    #expect(try Lookup.find("JANE", on: db).map(\.accountId) == ["jd123"])
    #expect(try Lookup.find("maria k", on: db).map(\.accountId) == ["mk456"])
    #expect(try Lookup.find("jane_", on: db).map(\.accountId) == ["jd123"])
    #expect(try Lookup.find("jd", limit: 1, on: db).count == 1)
    for literal in ["%", "_", "j%", "\\"] {
      let error = #expect(throws: DeskError.self) { try Lookup.find(literal, on: db) }
      #expect(error?.status == .noSuchAccount, "\(literal)")
    }
    #expect(throws: DeskError.self) { try Lookup.find("   ", on: db) }
  }

  @Test("account ids with quotes, semicolons, unicode, nothing or 4 KB are refused before any query")
  func hostileIDs() throws {
    let hostile = [
      "jd'123", "jd123; DROP TABLE hms2fa.accounts", "jé123", "", "  ", String(repeating: "a", count: 4096), "jd\u{0}1",
      "-rf", "../etc",
    ]
    for text in hostile {
      let error = #expect(throws: DeskError.self) { try AccountKey(parsing: text) }
      #expect(error?.status == .usage, "\(text.prefix(20))")
      #expect(error?.message.contains("\n") == false)
      #expect((error?.message.count ?? 0) < 200)
    }
    #expect(try AccountKey(parsing: " JD123 ").text == "jd123")
  }
}
