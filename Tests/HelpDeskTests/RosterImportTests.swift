import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The identity feed's import, as the batch login runs it, against a real server.
@Suite("roster import")
struct RosterImportTests {
  static let header = "account_id,display_name,email,status,high_risk"

  /// A migrated database with a batch login, and a few accounts already registered.
  struct Registry {
    let database: TestDatabase
    let admin: Connection
    let batch: String

    init(accounts: [(String, String)] = [("jd123", "active"), ("mk456", "active"), ("xo404", "disabled")]) throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      for (id, status) in accounts {
        try Fixtures.account(id, name: "Person \(id)", status: status, on: admin)
      }
      batch = try database.createLogin(.batch)
    }

    /// Writes `text` to a file of its own and returns the path.
    func file(_ text: String) throws -> String {
      try file(Data(text.utf8))
    }

    func file(_ bytes: Data) throws -> String {
      let path = TestCluster.scratch + "/feed-" + UUID().uuidString.prefix(8) + ".csv"
      try bytes.write(to: URL(fileURLWithPath: path))
      return path
    }

    /// Imports `csv` (lines joined with LF, a header first) as the batch login.
    @discardableResult
    func importing(
      _ rows: [String], as login: String? = nil, _ configure: (inout RosterImportOptions) -> Void = { _ in }
    ) throws -> RosterImportResult {
      try importingFile(
        try file(([RosterImportTests.header] + rows).joined(separator: "\n") + "\n"), as: login, configure)
    }

    @discardableResult
    func importingFile(
      _ path: String, as login: String? = nil, _ configure: (inout RosterImportOptions) -> Void = { _ in }
    ) throws -> RosterImportResult {
      var options = RosterImportOptions()
      configure(&options)
      let db = try database.connect(as: login ?? batch)
      return try RosterImport.run(try RosterFile(path: path), options: options, on: db)
    }

    /// Starts importing `rows` as the batch login on a thread of its own; `group` is left when it
    /// is done, with its outcome.
    func importingInBackground(
      _ rows: [String]
    ) throws -> (group: DispatchGroup, outcome: Locked<Result<RosterImportResult, DeskError>?>) {
      let path = try file(([RosterImportTests.header] + rows).joined(separator: "\n") + "\n")
      let (database, login) = (database, batch)
      let outcome = Locked<Result<RosterImportResult, DeskError>?>(nil)
      let group = DispatchGroup()
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        let result = Result { () throws(DeskError) -> RosterImportResult in
          let db: Connection
          do {
            db = try database.connect(as: login)
          } catch {
            throw DeskError(.software, "\(error)")
          }
          return try RosterImport.run(try RosterFile(path: path), options: RosterImportOptions(), on: db)
        }
        outcome.update { $0 = result }
      }
      return (group, outcome)
    }

    /// Every column of every account, and the number of audit events: what a refused feed must
    /// leave exactly as it was.
    func snapshot() throws -> String {
      let accounts = try admin.queryFirst(
        """
        SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s|%s|%s', account_id, display_name, email, status,
                                          high_risk, login_action, created_at), E'\\n' ORDER BY account_id), '') AS s
          FROM hms2fa.accounts
        """)?.decode("s", as: String.self)
      let events = try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.audit_events")?.decode("n", as: Int.self)
      return "\(accounts ?? "?")\nevents: \(events ?? -1)"
    }

    func account(_ id: String) throws -> Row? {
      try admin.queryFirst("SELECT * FROM hms2fa.accounts WHERE account_id = \(id)")
    }

    /// The details of the last `accounts.imported` event.
    func lastImportDetails() throws -> [String: Any] {
      let event = try #require(try importEvents().last)
      let text = try event.decode("details", as: String.self)
      return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    func importEvents() throws -> [Row] {
      try admin.query(
        "SELECT actor, ticket, details::text AS details FROM hms2fa.audit_events WHERE action = 'accounts.imported' ORDER BY event_id"
      )
    }
  }

  /// Added, changed, disabled, unchanged.
  func counts(_ result: RosterImportResult) -> [Int] {
    [result.added, result.changed, result.disabled, result.unchanged]
  }

  @Test("adds, changes, disables and leaves alone, with the right counts and one audit event per run")
  func counts() throws {
    let registry = try Registry(accounts: [
      ("jd123", "active"), ("mk456", "active"), ("xo404", "disabled"), ("gone1", "active"), ("gone2", "disabled"),
    ])
    try registry.admin.execute("UPDATE hms2fa.accounts SET login_action = 'push' WHERE account_id = 'mk456'")
    let feed = [
      "jd123,Person jd123,jd123@hms.harvard.edu,active,false",  // unchanged
      "mk456,Maria K,mk456@HMS.Harvard.EDU,active,true",  // name and flag change; the domain is lowercased
      "xo404,Person xo404,xo404@hms.harvard.edu,active,false",  // the feed says active: enabled again
      "new1,New Person,New.Person@hms.harvard.edu,active,no",  // added; the local part keeps its case
    ]
    let result = try registry.importing(feed) {
      $0.disableMissing = true
      $0.maxDisableFraction = 0.5
    }
    #expect(result.rows == 4)
    #expect(counts(result) == [1, 2, 1, 1])
    #expect(result.eventID != nil)
    let maria = try #require(try registry.account("mk456"))
    #expect(try maria.decode("display_name", as: String.self) == "Maria K")
    #expect(try maria.decode("email", as: String.self) == "mk456@hms.harvard.edu")
    #expect(try maria.decode("high_risk", as: Bool.self))
    #expect(try maria.decode("login_action", as: String.self) == "push")
    #expect(try registry.account("xo404")?.decode("status", as: String.self) == "active")
    #expect(try registry.account("new1")?.decode("email", as: String.self) == "New.Person@hms.harvard.edu")
    #expect(try registry.account("gone1")?.decode("status", as: String.self) == "disabled")
    #expect(try registry.account("gone2")?.decode("status", as: String.self) == "disabled")

    let again = try registry.importing(feed) { $0.disableMissing = true }
    #expect(counts(again) == [0, 0, 0, 4])
    let events = try registry.importEvents()
    #expect(events.count == 2)
    #expect(try events.allSatisfy { try $0.decode("actor", as: String.self) == registry.batch })
    let details = try events[0].decode("details", as: String.self)
    for field in [#""added": 1"#, #""changed": 2"#, #""disabled": 1"#, #""unchanged": 1"#, #""rows": 4"#] {
      #expect(details.contains(field), "\(details)")
    }
  }

  @Test(
    "the import's event names the accounts whose email of record changed, whose high-risk flag went, and who were enabled again"
  )
  func securityRelevantChanges() throws {
    let registry = try Registry(accounts: [
      ("jd123", "active"), ("hr1", "active"), ("dz1", "disabled"), ("nm1", "active"),
    ])
    try registry.admin.execute("UPDATE hms2fa.accounts SET high_risk = true WHERE account_id = 'hr1'")
    let feed = [
      "jd123,Person jd123,someone.else@example.org,active,false",  // email of record moved
      "hr1,Person hr1,hr1@hms.harvard.edu,active,false",  // high risk taken away
      "dz1,Person dz1,dz1@hms.harvard.edu,active,false",  // enabled again
      "nm1,New Name,nm1@hms.harvard.edu,active,false",  // only the name: not listed
    ]
    let result = try registry.importing(feed)
    #expect(counts(result) == [0, 4, 0, 0])
    let details = try registry.lastImportDetails()
    #expect(details["emails_changed"] as? Int == 1)
    let moved = try #require((details["email_changes"] as? [[String: Any]])?.first)
    #expect(moved["account_id"] as? String == "jd123")
    #expect(moved["from"] as? String == "jd123@hms.harvard.edu")
    #expect(moved["to"] as? String == "someone.else@example.org")
    #expect(details["high_risk_lowered"] as? Int == 1)
    #expect(details["high_risk_lowered_accounts"] as? [String] == ["hr1"])
    #expect(details["enabled_again"] as? Int == 1)
    #expect(details["enabled_again_accounts"] as? [String] == ["dz1"])
  }

  @Test("at most 1 000 accounts of each kind are listed in the event, all of them counted")
  func securityRelevantChangesBounded() throws {
    let ids = (1...1_005).map { "p\($0)" }
    let registry = try Registry(accounts: ids.map { ($0, "active") })
    let feed = ids.map { "\($0),Person \($0),\($0)@new.example.org,active,false" }
    let result = try registry.importing(feed)
    #expect(counts(result) == [0, 1_005, 0, 0])
    let details = try registry.lastImportDetails()
    #expect(details["emails_changed"] as? Int == 1_005)
    #expect((details["email_changes"] as? [Any])?.count == 1_000)
  }

  @Test(
    "CRLF and LF line ends, a byte order mark, no final line end; a blank line is named", arguments: ["\n", "\r\n"])
  func lineEnds(_ end: String) throws {
    let registry = try Registry()
    let text =
      "\u{FEFF}" + RosterImportTests.header + end + "a1,Ann One,a1@hms.harvard.edu,active,true" + end
      + "b2,Bob Two,b2@hms.harvard.edu,disabled,f"
    let result = try registry.importingFile(try registry.file(text))
    #expect(result.added == 2)
    #expect(try registry.account("a1")?.decode("display_name", as: String.self) == "Ann One")
    #expect(try registry.account("a1")?.decode("high_risk", as: Bool.self) == true)
    #expect(try registry.account("b2")?.decode("status", as: String.self) == "disabled")
    let bad = text + end + "c3,Cy,not-an-email,active,true" + end
    let error = #expect(throws: DeskError.self) { try registry.importingFile(try registry.file(bad)) }
    #expect(error?.message.hasPrefix("line 4, column 3 (email):") == true, "\(error?.message ?? "")")
    // PostgreSQL's CSV parser takes a blank line for a record of one empty field.
    let blank = #expect(throws: DeskError.self) { try registry.importingFile(try registry.file(text + end + end)) }
    #expect(blank?.status == .dataError)
    #expect(blank?.message.hasPrefix("line 4, column 2: missing") == true, "\(blank?.message ?? "")")
    #expect(blank?.message.contains("a blank line") == true)
  }

  @Test("quoted fields keep commas, quotes and line breaks; UTF-8 names; columns in any order")
  func quoting() throws {
    let registry = try Registry()
    let text = """
      email,high_risk,account_id,status,display_name
      z1@hms.harvard.edu,yes,z1,active,"Zoë ""Zed"" Ångström, MD"
      r2@hms.harvard.edu,0,r2,active,"Two
      Lines"
      s3@hms.harvard.edu,N,  S3  ,ACTIVE,王小明 (עברית) 🙂

      """
    try registry.importingFile(try registry.file(text))
    #expect(try registry.account("z1")?.decode("display_name", as: String.self) == "Zoë \"Zed\" Ångström, MD")
    #expect(try registry.account("z1")?.decode("high_risk", as: Bool.self) == true)
    #expect(try registry.account("r2")?.decode("display_name", as: String.self) == "Two\nLines")
    #expect(try registry.account("s3")?.decode("display_name", as: String.self) == "王小明 (עברית) 🙂")
    #expect(try registry.account("s3")?.decode("status", as: String.self) == "active")
    // The quoted line break moves every later line number by one.
    let bad = text + "t4@hms.harvard.edu,maybe,t4,active,Tee\n"
    let error = #expect(throws: DeskError.self) { try registry.importingFile(try registry.file(bad)) }
    #expect(error?.message.hasPrefix("line 6, column 2 (high_risk):") == true, "\(error?.message ?? "")")
  }

  static let badFeeds: [(rows: [String], message: String)] = [
    (["a1,Ann,a1@hms.harvard.edu,active"], "line 2, column 5: missing"),
    (["a1,Ann,a1@hms.harvard.edu,active,true,extra"], "line 2, column 6: one field too many"),
    (
      ["a1,Ann,a1@hms.harvard.edu,active,true", "j d,Jay,jd@hms.harvard.edu,active,true"],
      "line 3, column 1 (account_id)"
    ),
    (["-x,Ex,x@hms.harvard.edu,active,true"], "line 2, column 1 (account_id)"),
    (["a1,,a1@hms.harvard.edu,active,true"], "line 2, column 2 (display_name): the name is empty"),
    (["a1,Ann\u{7},a1@hms.harvard.edu,active,true"], "line 2, column 2 (display_name)"),
    (["a1,Ann,a1.hms.harvard.edu,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,a1@localhost,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,a1@@hms.harvard.edu,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,a 1@hms.harvard.edu,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,@hms.harvard.edu,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,a1@hms..edu,active,true"], "line 2, column 3 (email)"),
    (["a1,Ann,a1@hms.harvard.edu,retired,true"], "line 2, column 4 (status): 'retired' is not a status"),
    (["a1,Ann,a1@hms.harvard.edu,active,maybe"], "line 2, column 5 (high_risk)"),
    (["a1,Ann,a1@hms.harvard.edu,active,"], "line 2, column 5 (high_risk): empty"),
    (
      ["a1,\"Ann, unterminated,a1@hms.harvard.edu,active,true", "b2,Bob,b2@hms.harvard.edu,active,true"],
      "a quoted field is not closed before the end of the file"
    ),
    // PostgreSQL's CSV parser opens a quoted section at any quote, so a stray one runs on to the
    // end of the file.
    (
      ["b2,Bob,b2@hms.harvard.edu,active,true", "a1,Pat O\"Brien,a1@hms.harvard.edu,active,true"],
      "a quoted field is not closed before the end of the file"
    ),
    // A carriage return alone, in a file whose lines end in LF.
    (
      ["a1,Ann,a1@hms.harvard.edu,active,true\rb2,Bob,b2@hms.harvard.edu,active,true"],
      "line 2: unquoted carriage return found in data"
    ),
    // A NUL byte, which no text in the database can hold.
    (["a1,Ann\u{0},a1@hms.harvard.edu,active,true"], "line 2: the text holds a NUL byte"),
    // The first problem is the one reported, though the splitter reads ahead of the checks.
    (
      [
        "a1,Ann,a1.hms.harvard.edu,active,true", "b2,Bob,b2@hms.harvard.edu,active,true",
        "c3,Cy,c3@hms.harvard.edu,retired,true",
      ],
      "line 2, column 3 (email)"
    ),
    (
      [
        "a1,Ann,a1@hms.harvard.edu,active,true", "b2,Bob,b2@hms.harvard.edu,active,true",
        "A1,Ann,a1@hms.harvard.edu,active,true",
      ], "line 4, column 1 (account_id): account id a1 appears again (first on line 2)"
    ),
    (
      ["jd123,Jane,jd@hms.harvard.edu,active,true", " JD123 ,Jane,jd@hms.harvard.edu,active,true"],
      "line 3, column 1 (account_id): account id jd123 appears again (first on line 2)"
    ),
  ]

  @Test("a bad feed is refused whole (65, line and column), and nothing changes", arguments: badFeeds)
  func refused(_ feed: (rows: [String], message: String)) throws {
    let registry = try Registry()
    let before = try registry.snapshot()
    let error = #expect(throws: DeskError.self) {
      try registry.importing(feed.rows) { $0.disableMissing = true }
    }
    #expect(error?.status == .dataError)
    #expect(error?.message.contains(feed.message) == true, "\(error?.message ?? "") should say \(feed.message)")
    #expect(error?.message.contains("\n") == false)
    #expect(try registry.snapshot() == before)
  }

  @Test("a bad row after thousands of good ones (several COPY chunks already sent) still changes nothing")
  func refusedLate() throws {
    let registry = try Registry()
    let before = try registry.snapshot()
    let good = (0..<5000).map { "u\($0),User \($0),u\($0)@hms.harvard.edu,active,false" }
    let error = #expect(throws: DeskError.self) {
      try registry.importing(good + ["jd123,Jane,jane@hms,active,true"])
    }
    #expect(error?.message.hasPrefix("line 5002, column 3 (email)") == true, "\(error?.message ?? "")")
    let duplicate = #expect(throws: DeskError.self) {
      try registry.importing(good + ["U17,Again,u@hms.harvard.edu,active,f"])
    }
    #expect(
      duplicate?.message.contains("line 5002, column 1 (account_id): account id u17 appears again (first on line 19)")
        == true)
    #expect(try registry.snapshot() == before)
  }

  @Test("headers: missing, unknown or repeated columns, an empty file, text that isn't UTF-8, a missing file")
  func headersAndFiles() throws {
    let registry = try Registry()
    let before = try registry.snapshot()
    let cases: [(Data, String)] = [
      (
        Data("account_id,display_name,email,status\na1,A,a1@hms.harvard.edu,active\n".utf8),
        "line 1: the header must name the five columns"
      ),
      (Data("account_id,name,email,status,high_risk\n".utf8), "line 1, column 2: 'name' is not a column"),
      (Data("account_id,email,email,status,high_risk\n".utf8), "line 1, column 3: email appears twice"),
      (Data("account_id,email,status,high_risk,display_name,x\n".utf8), "line 1: the header must name the five"),
      (Data(" Account_ID ,EMAIL,Status,high_risk,display_name\na1,a1@x.edu,active,f,A\n".utf8), "ok"),
      (Data(), "is empty"),
      (Data("jd123,Jane,jane@hms.harvard.edu,active,true\n".utf8), "line 1, column 1: 'jd123' is not a column"),
      (
        Data(RosterImportTests.header.utf8) + Data("\na1,Ann".utf8) + Data([0xC3, 0x28])
          + Data(",a1@hms.harvard.edu,active,true\n".utf8), "line 2: the text is not UTF-8"
      ),
    ]
    for (bytes, message) in cases where message != "ok" {
      let error = #expect(throws: DeskError.self) { try registry.importingFile(try registry.file(bytes)) }
      #expect(error?.status == .dataError, "\(message)")
      #expect(error?.message.contains(message) == true, "\(error?.message ?? "") should say \(message)")
    }
    let missing = #expect(throws: DeskError.self) { try RosterFile(path: TestCluster.scratch + "/no-such-feed.csv") }
    #expect(missing?.status == .usage)
    let directory = #expect(throws: DeskError.self) { try RosterFile(path: TestCluster.scratch) }
    #expect(directory?.status == .usage)
    #expect(try registry.snapshot() == before)
    // Names in the header are trimmed and compared in any case.
    let trimmed = try #require(cases.first { $0.1 == "ok" })
    #expect(try registry.importingFile(try registry.file(trimmed.0)).added == 1)
  }

  @Test("a feed that would disable more than the limit is refused unless forced with a ticket")
  func disableLimit() throws {
    let registry = try Registry(accounts: (0..<40).map { ("p\($0)", "active") })
    let everyone = (0..<40).map { "p\($0),Person p\($0),p\($0)@hms.harvard.edu,active,false" }
    let before = try registry.snapshot()
    // 3 of 40 absent: 7.5% > 5%.
    let truncated = Array(everyone.prefix(37))
    let error = #expect(throws: DeskError.self) { try registry.importing(truncated) { $0.disableMissing = true } }
    #expect(error?.status == .dataError)
    #expect(error?.message.contains("would disable 3 of 40 active accounts (7.5%)") == true, "\(error?.message ?? "")")
    // Marking them disabled counts the same as leaving them out.
    let marked = truncated + (37..<40).map { "p\($0),Person p\($0),p\($0)@hms.harvard.edu,disabled,false" }
    #expect(throws: DeskError.self) { try registry.importing(marked) }
    #expect(try registry.snapshot() == before)
    // Without --disable-missing nobody is disabled, so there is nothing to refuse.
    #expect(try registry.importing(truncated).disabled == 0)
    let noTicket = #expect(throws: DeskError.self) {
      try registry.importing(truncated) {
        $0.disableMissing = true
        $0.force = true
      }
    }
    #expect(noTicket?.status == .usage)
    let forced = try registry.importing(truncated) {
      $0.disableMissing = true
      $0.force = true
      $0.ticket = try? Ticket(parsing: "CHG0042")
    }
    #expect(forced.disabled == 3)
    let event = try #require(try registry.importEvents().last)
    #expect(try event.decode("ticket", as: String?.self) == "CHG0042")
    #expect(try event.decode("details", as: String.self).contains(#""forced": true"#))
    // A higher limit lets a smaller cut through.
    let registry2 = try Registry(accounts: (0..<40).map { ("p\($0)", "active") })
    let allowed = try registry2.importing(Array(everyone.prefix(36))) {
      $0.disableMissing = true
      $0.maxDisableFraction = 0.1
    }
    #expect(allowed.disabled == 4)
  }

  @Test("a dry run reports the counts and the changes, and changes nothing (no audit event either)")
  func dryRun() throws {
    let registry = try Registry(accounts: [("jd123", "active"), ("mk456", "active"), ("gone1", "active")])
    let before = try registry.snapshot()
    let result = try registry.importing([
      "jd123,Jane Doe,jd123@hms.harvard.edu,active,true", "mk456,Person mk456,mk456@hms.harvard.edu,active,false",
      "new1,New,new1@hms.harvard.edu,active,false",
    ]) {
      $0.dryRun = true
      $0.disableMissing = true
    }
    #expect(try registry.snapshot() == before)
    #expect(result.dryRun && result.eventID == nil)
    #expect(counts(result) == [1, 1, 1, 1])
    #expect(result.overLimit)
    #expect(result.changes.map(\.kind) == [.changed, .added, .disabled])
    #expect(result.changes.map(\.accountID) == ["jd123", "new1", "gone1"])
    let jane = result.changes[0]
    #expect(jane.line == 2)
    #expect(jane.before.displayName == "Person jd123" && jane.after.displayName == "Jane Doe")
    #expect(jane.before.highRisk == false && jane.after.highRisk == true)
    #expect(jane.before.email == nil && jane.after.email == nil)
    #expect(result.changes[1].after.email == "new1@hms.harvard.edu")
    let limited = try registry.importing(["new1,New,new1@hms.harvard.edu,active,false"]) {
      $0.dryRun = true
      $0.diffLimit = 1
    }
    #expect(limited.changes.count == 1 && limited.added == 1)
  }

  @Test("the batch tier and an operator may import; tier1, tier2 and a login without a tier get 77")
  func tiers() throws {
    let registry = try Registry()
    let feed = ["jd123,Jane,jd123@hms.harvard.edu,active,false"]
    for tier in [Tier.tier1, .tier2, .auditor, nil] {
      let error = #expect(throws: DeskError.self) {
        try registry.importing(feed, as: try registry.database.createLogin(tier))
      }
      #expect(error?.status == .noPermission)
      #expect(error?.message.contains("hms2fa_batch") == true)
    }
    #expect(try registry.importing(feed).changed == 1)
    #expect(try registry.importing(feed, as: TestCluster.superuser).unchanged == 1)
  }

  @Test("a second import while one runs is told to try later (75)")
  func oneAtATime() throws {
    let registry = try Registry()
    let first = try registry.database.connect(as: registry.batch)
    try first.execute("BEGIN")
    try first.execute("SELECT hms2fa_api.open_roster_import()")
    let error = #expect(throws: DeskError.self) {
      try registry.importing(["jd123,Jane,jd123@hms.harvard.edu,active,false"])
    }
    #expect(error?.status == .tryLater)
    try first.execute("ROLLBACK")
    #expect(try registry.importing(["jd123,Jane,jd123@hms.harvard.edu,active,false"]).changed == 1)
  }

  @Test("an account another session adds during the import stops that try; the next one sees it (tries: 2)")
  func addedMeanwhile() throws {
    let registry = try Registry()
    // Added but not committed: the import's join can't see it, and its insert waits for it.
    let other = try registry.database.connect()
    try other.execute("BEGIN")
    try Fixtures.account("new1", name: "Added By Hand", status: "active", on: other)
    let (group, outcome) = try registry.importingInBackground(["new1,New Person,new1@hms.harvard.edu,active,false"])
    // Until the import waits on the uncommitted account's key.
    var waited = false
    for _ in 0..<100 where !waited {
      Thread.sleep(forTimeInterval: 0.05)
      let waiting = try registry.admin.queryFirst(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%import_roster%'")
      waited = try waiting?.decode("n", as: Int.self) == 1
    }
    #expect(waited)
    try other.execute("COMMIT")
    group.wait()
    let result = try #require(try outcome.value?.get())
    #expect(result.tries == 2)
    #expect(result.changed == 1 && result.added == 0)
    #expect(try registry.account("new1")?.decode("display_name", as: String.self) == "New Person")
    #expect(try registry.importEvents().count == 1)
  }

  @Test("an agent's change to an account during the import neither stops it nor is undone by it")
  func agentChangeMeanwhile() throws {
    let registry = try Registry()
    // An agent's reset holds jd123's row: the import's update of it waits, then goes on.
    let agent = try registry.database.connect()
    try agent.execute("BEGIN")
    try agent.execute("UPDATE hms2fa.accounts SET login_action = 'push' WHERE account_id = 'jd123'")
    let (group, outcome) = try registry.importingInBackground(["jd123,Jane Renamed,jd123@hms.harvard.edu,active,false"])
    Thread.sleep(forTimeInterval: 0.5)
    try agent.execute("COMMIT")
    group.wait()
    let result = try #require(try outcome.value?.get())
    #expect(result.tries == 1 && result.changed == 1)
    let jane = try #require(try registry.account("jd123"))
    #expect(try jane.decode("display_name", as: String.self) == "Jane Renamed")
    #expect(try jane.decode("login_action", as: String.self) == "push")
  }

  @Test("with psql: the same two calls, the same checks, and only a staging table the database made")
  func databaseChecks() throws {
    let registry = try Registry()
    let db = try registry.database.connect(as: registry.batch)
    func imported(_ csv: String, dryRun: Bool = false) throws -> Row? {
      try db.execute("SELECT hms2fa_api.open_roster_import()")
      try db.copyIn("COPY pg_temp.roster_raw (f1, f2, f3, f4, f5) FROM STDIN (FORMAT csv)") { writer in
        try writer.write(Array(csv.utf8))
      }
      return try db.queryFirst("SELECT * FROM hms2fa_api.import_roster(false, 0.05, false, \(dryRun), 'psql')")
    }
    try db.execute("BEGIN")
    let row = try imported(RosterImportTests.header + "\n JD123 ,Jane,jd123@HMS.harvard.edu,Active,T\n")
    #expect(try row?.decode("changed", as: Int.self) == 1)
    try db.execute("COMMIT")
    #expect(try registry.account("jd123")?.decode("email", as: String.self) == "jd123@hms.harvard.edu")
    #expect(try registry.account("jd123")?.decode("high_risk", as: Bool.self) == true)
    let before = try registry.snapshot()
    try db.execute("BEGIN")
    let bad = #expect(throws: PostgresError.self) {
      try imported(RosterImportTests.header + "\nmk456,Maria,\"m@x.edu, evil@example.org\",active,t\n")
    }
    #expect(bad?.sqlState == "H2D80")
    #expect(bad?.message.hasPrefix("line 2, column 3 (email)") == true, "\(bad?.message ?? "")")
    try db.execute("ROLLBACK")
    // A staging table of the caller's own (which could carry objects that would run with the
    // owner's rights) is not accepted, and the one the database made can't be altered.
    try db.execute("BEGIN")
    try db.execute("CREATE TEMP TABLE roster_raw (record bigint, f1 text, f2 text, f3 text, f4 text, f5 text)")
    let own = #expect(throws: PostgresError.self) {
      try db.execute("SELECT * FROM hms2fa_api.import_roster(false, 0.05, false, false, 'psql')")
    }
    #expect(own?.sqlState == "H2U82")
    try db.execute("ROLLBACK")
    try db.execute("BEGIN")
    try db.execute("SELECT hms2fa_api.open_roster_import()")
    for statement: Query in [
      "ALTER TABLE pg_temp.roster_raw ENABLE ROW LEVEL SECURITY",
      "CREATE RULE r AS ON INSERT TO pg_temp.roster_raw DO INSTEAD NOTHING",
      "CREATE TRIGGER t BEFORE INSERT ON pg_temp.roster_raw FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger()",
      "DROP TABLE pg_temp.roster_raw",
      "SELECT * FROM pg_temp.roster_raw",
      "SELECT hms2fa.is_email_address('a@b.cd')",
      "SELECT * FROM hms2fa.accounts",
    ] {
      try db.execute("SAVEPOINT s")
      let error = #expect(throws: PostgresError.self) { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
      try db.execute("ROLLBACK TO SAVEPOINT s")
    }
    try db.execute("ROLLBACK")
    let outside = #expect(throws: PostgresError.self) {
      try db.execute("SELECT * FROM hms2fa_api.roster_diff()")
    }
    #expect(outside?.sqlState == "H2U85")
    #expect(try registry.snapshot() == before)
  }

  @Test("emails of record: trimmed, domain lowercased, local part kept, the rest refused with its line")
  func emails() throws {
    let registry = try Registry(accounts: [])
    try registry.importing(["e1,E,\" Jane.Doe@HMS.Harvard.EDU \",active,f", "e2,E,a+b@sub.example.org,active,f"])
    #expect(try registry.account("e1")?.decode("email", as: String.self) == "Jane.Doe@hms.harvard.edu")
    #expect(try registry.account("e2")?.decode("email", as: String.self) == "a+b@sub.example.org")
    for bad in [
      "", "jane", "@hms.harvard.edu", "jane@", "jane@hms", "jane@.edu", "jane@hms.", "j@a@b.cd", "j ane@b.cd",
      "jane@hms..edu", "a@x.edu@y.edu", String(repeating: "a", count: 250) + "@b.cd",
    ] {
      let error = #expect(throws: DeskError.self, "\(bad)") {
        try registry.importing(["e3,E,\"\(bad)\",active,f"])
      }
      #expect(error?.message.hasPrefix("line 2, column 3 (email)") == true, "\(bad): \(error?.message ?? "")")
    }
    #expect(try registry.account("e3") == nil)
  }
}
