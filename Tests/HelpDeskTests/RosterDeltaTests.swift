import Foundation
import Postgres
import TestSupport
import Testing

@testable import HelpDesk

/// The roster import by difference: a record recognised as an account unchanged is never parsed,
/// so it must give exactly what reading, checking and comparing it would have given.
@Suite("roster import by difference")
struct RosterDeltaTests {
  typealias Registry = RosterImportTests.Registry

  /// An account as the registry holds it.
  struct Account {
    var id: String
    var name: String
    var email: String
    var status: String
    var highRisk: Bool
  }

  @Test("importing by difference changes, counts and refuses exactly what comparing every row does")
  func sameAsInFull() throws {
    // Twin registries: one imported the way the tool does, one by sending every row to
    // apply_roster, the function a feed loaded with psql goes through.
    let byDifference = try TestDatabase.create()
    let inFull = try TestDatabase.create()
    let databases = [byDifference, inFull]
    let admins = try databases.map { try $0.connect() }
    let batches = try databases.map { try $0.createLogin(.batch) }
    var random = SplitMix(seed: 20_261_130)
    var recognisedSome = false
    for round in 0..<40 {
      let registry = Self.registry(&random)
      let feed = Self.feed(for: registry, &random)
      let path = TestCluster.scratch + "/delta-\(round).csv"
      try Data(feed.text.utf8).write(to: URL(fileURLWithPath: path))
      for admin in admins {
        try admin.execute("TRUNCATE hms2fa.accounts CASCADE")
        for account in registry {
          try Fixtures.account(
            account.id, name: account.name, email: account.email, status: account.status,
            highRisk: account.highRisk, on: admin)
        }
      }
      var options = RosterImportOptions()
      options.disableMissing = feed.disableMissing
      options.maxDisableFraction = 1
      try Self.importBothWays(
        path, options: options, round: round, text: feed.text,
        on: try byDifference.connect(as: batches[0]), andInFullOn: try inFull.connect(as: batches[1]),
        admins: admins)
      recognisedSome = recognisedSome || feed.unchangedInForm > 0
    }
    #expect(recognisedSome)
  }

  @Test("a feed in another order than the registry's is recognised record for record, a block at a time")
  func outOfOrder() throws {
    let registry = try Registry(accounts: [])
    try registry.admin.execute(
      """
      INSERT INTO hms2fa.accounts (account_id, display_name, email)
      SELECT 'u' || g, 'Person ' || g, 'u' || g || '@hms.harvard.edu' FROM generate_series(1, 3000) g
      """)
    var random = SplitMix(seed: 7)
    var rows = (1...3000).map { "u\($0),Person \($0),u\($0)@hms.harvard.edu,active,false" }
    rows.shuffle(using: &random)
    rows[10] = rows[10].replacingOccurrences(of: "Person", with: "Renamed")
    let path = try registry.file(([RosterImportTests.header] + rows).joined(separator: "\n") + "\n")
    let db = try registry.database.connect(as: registry.batch)
    try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    defer { _ = try? db.execute("ROLLBACK") }
    try db.execute("SELECT hms2fa_api.open_roster_delta()")
    let feed = try RosterFeed(path: path, blockSize: 4096)
    let first = try #require(try feed.next())
    let roster = try RosterSnapshot(reading: db, style: feed.style, expectedBytes: feed.size)
    var recognised: [Int: Int] = [:]
    var read: [String] = [first.accountID.value]
    while let record = try feed.nextRecord(recognising: roster) {
      switch record {
      case .recognised(let account, let line): recognised[account] = line
      case .entry(let entry): read.append(entry.accountID.value)
      }
    }
    #expect(recognised.count == 2998)
    #expect(read.count == 2)
    #expect(read.contains(String(rows[10].prefix { $0 != "," })))
    // Each account recognised on the line that lists it.
    #expect(recognised.allSatisfy { account, line in rows[line - 2].hasPrefix(roster.id(of: account) + ",") })
    #expect(roster.answeredAhead > 2500)
  }

  @Test("an account listed twice is refused with both lines, whether its records were recognised or read")
  func listedTwice() throws {
    let registry = try Registry()
    let exact = "jd123,Person jd123,jd123@hms.harvard.edu,active,false"
    let padded = " JD123 ,Person jd123,jd123@hms.harvard.edu,active,false"
    for rows in [[exact, exact], [exact, padded], [padded, exact]] {
      let before = try registry.snapshot()
      let error = #expect(throws: DeskError.self) {
        try registry.importing(["mk456,Person mk456,mk456@hms.harvard.edu,active,false"] + rows)
      }
      #expect(error?.status == .dataError)
      #expect(
        error?.message == "line 4, column 1 (account_id): account id jd123 appears again (first on line 3); "
          + "ids are compared trimmed and lowercased", "\(rows)")
      #expect(try registry.snapshot() == before)
    }
  }

  @Test("an account the registry holds in a form the feed's checks would change is compared, and corrected")
  func registryNotInFeedForm() throws {
    let registry = try Registry(accounts: [])
    try Fixtures.account("kim2", name: "Kim", email: "kim2@hms.harvard.edu", on: registry.admin)
    try Fixtures.account("pat1", name: "Pat  ", email: "pat1@hms.harvard.edu", on: registry.admin)
    try Fixtures.account("lee3", name: "Lee", email: "Lee@HMS.Harvard.EDU", on: registry.admin)
    let result = try registry.importing([
      "kim2,Kim,kim2@hms.harvard.edu,active,false",
      "pat1,Pat  ,pat1@hms.harvard.edu,active,false",  // exactly as stored
      "lee3,Lee,Lee@HMS.Harvard.EDU,active,false",  // exactly as stored
    ])
    #expect([result.added, result.changed, result.unchanged] == [0, 2, 1] as [Int])
    #expect(try registry.account("pat1")?.decode("display_name", as: String.self) == "Pat")
    #expect(try registry.account("lee3")?.decode("email", as: String.self) == "Lee@hms.harvard.edu")
  }

  @Test("with psql: an import by difference must cover every account once, in one REPEATABLE READ snapshot")
  func databaseGuards() throws {
    let registry = try Registry()  // jd123, mk456 active; xo404 disabled
    let before = try registry.snapshot()
    let db = try registry.database.connect(as: registry.batch)
    func attempt(_ isolation: String, unchanged: Int, feed: [[String?]] = [], absent: [String] = []) throws
      -> PostgresError?
    {
      try db.execute(Query(verbatim: "BEGIN ISOLATION LEVEL \(isolation)"))
      defer { _ = try? db.execute("ROLLBACK") }
      try db.execute("SELECT hms2fa_api.open_roster_delta()")
      if !feed.isEmpty { try db.copyIn("COPY pg_temp.roster_feed FROM STDIN", rows: feed) }
      if !absent.isEmpty { try db.copyIn("COPY pg_temp.roster_absent FROM STDIN", rows: absent.map { [$0] }) }
      return #expect(throws: PostgresError.self) {
        try db.execute(
          "SELECT * FROM hms2fa_api.apply_roster_delta(\(unchanged), true, 1::numeric, false, false, 'psql')")
      }
    }
    let jane: [String?] = ["2", "jd123", "Jane", "jd123@hms.harvard.edu", "active", "f"]
    #expect(try attempt("READ COMMITTED", unchanged: 3)?.sqlState == "H2U87")
    #expect(try attempt("REPEATABLE READ", unchanged: 2)?.sqlState == "H2U86")  // one account unaccounted for
    #expect(try attempt("REPEATABLE READ", unchanged: 3, feed: [jane])?.sqlState == "H2U86")  // jd123 twice
    #expect(try attempt("REPEATABLE READ", unchanged: 2, absent: ["nobody"])?.sqlState == "H2U86")
    #expect(try attempt("REPEATABLE READ", unchanged: 2, feed: [jane], absent: ["jd123"])?.sqlState == "H2U86")
    #expect(try registry.snapshot() == before)

    // The staging tables are the database's: the caller may only add rows, and the counts of the
    // registry only the database writes.
    try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try db.execute("SELECT hms2fa_api.open_roster_delta()")
    for statement: Query in [
      "DROP TABLE pg_temp.roster_absent", "DELETE FROM pg_temp.roster_absent",
      "INSERT INTO pg_temp.roster_registry VALUES (2, 2)", "DROP TABLE pg_temp.roster_registry",
    ] {
      try db.execute("SAVEPOINT s")
      let error = #expect(throws: PostgresError.self) { try db.execute(statement) }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(statement.sql)")
      try db.execute("ROLLBACK TO SAVEPOINT s")
    }
    try db.execute("ROLLBACK")
    // Staging tables of the caller's own are not accepted.
    try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try db.execute("SELECT hms2fa_api.open_roster_feed()")
    try db.execute("CREATE TEMP TABLE roster_absent (account_id text)")
    let own = #expect(throws: PostgresError.self) {
      try db.execute("SELECT * FROM hms2fa_api.apply_roster_delta(3, true, 1::numeric, false, false, 'psql')")
    }
    #expect(own?.sqlState == "H2U82")
    try db.execute("ROLLBACK")
    let notOpen = #expect(throws: PostgresError.self) { try db.execute("SELECT hms2fa_api.count_roster()") }
    #expect(notOpen?.sqlState == "H2U82")

    // Done right: jd123 renamed, mk456 unchanged, xo404 absent (already disabled); the registry
    // counted first, as the tool has it counted.
    try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try db.execute("SELECT hms2fa_api.open_roster_delta()")
    try db.execute("SELECT hms2fa_api.count_roster()")
    try db.copyIn("COPY pg_temp.roster_feed FROM STDIN", rows: [jane])
    try db.copyIn("COPY pg_temp.roster_absent FROM STDIN", rows: [["xo404"]])
    let row = try #require(
      try db.queryFirst("SELECT * FROM hms2fa_api.apply_roster_delta(1, true, 1::numeric, false, false, 'psql')"))
    #expect(try ["feed_rows", "changed", "unchanged"].map { try row.decode($0, as: Int.self) } == [2, 1, 1])
    try db.execute("COMMIT")
    #expect(try registry.account("jd123")?.decode("display_name", as: String.self) == "Jane")

    // Only the batch tier reads the roster.
    for tier in [Tier.tier1, .tier2, .auditor] {
      let other = try registry.database.connect(as: try registry.database.createLogin(tier))
      let error = #expect(throws: PostgresError.self) {
        try other.query("SELECT count(*) FROM hms2fa_api.roster_accounts")
      }
      #expect(error?.sqlState == SQLState.insufficientPrivilege, "\(tier)")
    }
    #expect(try db.queryFirst("SELECT count(*) AS n FROM hms2fa_api.roster_accounts")?.decode("n", as: Int.self) == 3)
  }

  @Test(
    "with psql: an account another session adds while an import runs stops it, a serialization failure; nothing imported"
  )
  func addedMeanwhile() throws {
    let registry = try Registry()  // jd123, mk456 active; xo404 disabled
    let db = try registry.database.connect(as: registry.batch)
    try db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try db.execute("SELECT hms2fa_api.open_roster_delta()")
    try db.copyIn(
      "COPY pg_temp.roster_feed FROM STDIN",
      rows: [
        ["2", "nw001", "New Person", "nw001@hms.harvard.edu", "active", "f"],
        ["3", "nw002", "Other Person", "nw002@hms.harvard.edu", "active", "f"],
      ])
    // The import's snapshot was taken when it opened; nw001 arrives after it.
    try Fixtures.account("nw001", name: "Added By Hand", status: "active", on: registry.admin)
    let before = try registry.snapshot()  // the accounts, and how many events
    let error = try #require(
      #expect(throws: PostgresError.self) {
        try db.execute("SELECT * FROM hms2fa_api.apply_roster_delta(3, true, 1::numeric, false, false, 'psql')")
      })
    _ = try? db.execute("ROLLBACK")
    #expect(error.sqlState == SQLState.serializationFailure)
    // The roster's version (0023) stops it first, before the insert meets nw001.
    #expect(error.message.contains("changed by another session"), "\(error.message)")
    let desk = deskError(error)
    #expect(desk.status == .tryLater && desk.status.rawValue == 75)
    #expect(try registry.snapshot() == before)
    #expect(try registry.account("nw001")?.decode("display_name", as: String.self) == "Added By Hand")
    #expect(try registry.account("nw002") == nil)
  }

  @Test(
    "an import that finds an account it changes changed by someone else meanwhile starts again; at the third time, 75")
  func changedMeanwhile() throws {
    for interruptions in [1, 3] {
      let registry = try Registry()  // jd123, mk456 active; xo404 disabled
      let (database, batch) = (registry.database, registry.batch)
      let path = try registry.file(
        [
          RosterImportTests.header, "jd123,Jane Renamed,jd123@hms.harvard.edu,active,false",
          "mk456,Person mk456,mk456@hms.harvard.edu,active,false",
        ].joined(separator: "\n") + "\n")
      // An agent's reset of jd123 (it sets login_action), under way as the import starts, and
      // again as each later try gets going.
      let agent = try database.connect()
      try agent.execute("BEGIN")
      try agent.execute("UPDATE hms2fa.accounts SET login_action = 'push' WHERE account_id = 'jd123'")
      let outcome = Locked<Result<RosterImportResult, Error>?>(nil)
      let group = DispatchGroup()
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        let result = Result {
          try RosterImport.run(
            try RosterFeed(path: path), options: RosterImportOptions(), on: try database.connect(as: batch))
        }
        outcome.update { $0 = result }
      }
      for round in 1...interruptions {
        // The try waits for jd123's row; the agent commits, so the row it would update is no
        // longer the one it read.
        #expect(try Fixtures.waitForLockWait(of: batch, on: registry.admin), "round \(round)")
        try agent.execute("COMMIT")
        guard round < interruptions else { break }
        // The next try starts 0.2 s after the failed one; the agent is under way again before.
        #expect(try Fixtures.waitForLockWait(of: batch, on: registry.admin, waiting: false))
        try agent.execute("BEGIN")
        try agent.execute("UPDATE hms2fa.accounts SET login_action = 'call' WHERE account_id = 'jd123'")
      }
      group.wait()
      let jane = try #require(try registry.account("jd123"))
      let events = try registry.importEvents().count
      if interruptions == 1 {
        let result = try #require(try outcome.value?.get())
        #expect(result.tries == 2)
        #expect(result.changed == 1 && result.unchanged == 1)
        #expect(try jane.decode("display_name", as: String.self) == "Jane Renamed")
        #expect(events == 1)
      } else {
        let failure = try #require(outcome.value)
        let error = #expect(throws: DeskError.self) { try failure.get() }
        #expect(error?.status == .tryLater, "\(String(describing: error))")
        #expect(try jane.decode("display_name", as: String.self) == "Person jd123")
        #expect(events == 0)
      }
      // The agent's change stands either way.
      #expect(try jane.decode("login_action", as: String.self) == (interruptions == 1 ? "push" : "call"))
    }
  }

  @Test("the registry's roster is read from COPY data cut anywhere")
  func binaryCopyInPieces() throws {
    let rows: [[String]] = [
      ["jd123", "Jane Doe", "jd@hms.harvard.edu", "active", "\u{1}"], ["x", "", "é", "d", "\u{0}"],
    ]
    // The signature, no flags, and a header extension of two bytes (which a reader skips).
    var stream: [UInt8] =
      [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00] + [0, 0, 0, 0] + [0, 0, 0, 2, 9, 9]
    for row in rows {
      stream += [0, 5]
      for field in row {
        let bytes = Array(field.utf8)
        stream += withUnsafeBytes(of: UInt32(bytes.count).bigEndian, Array.init) + bytes
      }
    }
    stream += [0xFF, 0xFF]
    for size in 1...stream.count {
      var decoder = BinaryCopyDecoder(columns: 5)
      var decoded: [[String]] = []
      var offset = 0
      while offset < stream.count {
        let piece = Array(stream[offset..<min(offset + size, stream.count)])
        try piece.withUnsafeBytes { bytes in
          try decoder.feed(bytes) { fields in decoded.append(fields.map { String(decoding: $0, as: UTF8.self) }) }
        }
        offset += size
      }
      #expect(decoded == rows, "pieces of \(size)")
      #expect(decoder.finished)
    }
  }

  @Test("a value the roster takes as already in the feed's form is one the feed's checks keep as it is")
  func normalFormIsKept() throws {
    var random = SplitMix(seed: 7)
    // Plain letters and digits often, so that valid values come up; every awkward character now
    // and then.
    let alphabet: [String] =
      Array(repeating: ["a", "z", "0", "9"], count: 4).flatMap { $0 } + [
        "Q", ".", "-", "_", "@", " ", "\t", "\u{85}", "\u{7F}", "\"", ",", "é", "+", "..",
      ]
    let registry = try Registry(accounts: [])
    var kept = [0, 0, 0]
    func piece(_ random: inout SplitMix) -> String {
      (0..<random.next(below: 5)).map { _ in alphabet[random.next(below: alphabet.count)] }.joined()
    }
    for round in 0..<1200 {
      // Every other value is shaped like an address, or few would be one; every fourth has
      // letters at the ends of its parts too, or few would pass the address rule.
      let text =
        switch round % 4 {
        case 0, 2: piece(&random) + piece(&random)
        case 1: piece(&random) + "@" + piece(&random) + "." + piece(&random)
        default: "j" + piece(&random) + "d@h" + piece(&random) + "s.e" + piece(&random) + "u"
        }
      let bytes = Array(text.utf8)
      let normal = bytes.withUnsafeBytes { raw in
        [RosterSnapshot.isNormalID(raw), RosterSnapshot.isNormalName(raw), RosterSnapshot.isNormalEmail(raw)]
      }
      let quotedText = "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
      let rows = [
        "\(quotedText),N,n@hms.harvard.edu,active,false",
        "id1,\(quotedText),n@hms.harvard.edu,active,false",
        "id1,N,\(quotedText),active,false",
      ]
      for column in 0..<3 where normal[column] {
        kept[column] += 1
        let path = try registry.file(RosterImportTests.header + "\n" + rows[column] + "\n")
        let entry = try #require(try RosterFeed(path: path).next(), "\(text.debugDescription)")
        let value = [entry.accountID.value, entry.displayName, entry.email.value][column]
        #expect(value == text, "column \(column): \(text.debugDescription)")
      }
    }
    // The generator must reach each form often enough for the check to mean something.
    #expect(kept.allSatisfy { $0 > 20 }, "\(kept)")
  }

  // MARK: Helpers

  /// Imports `path` with the tool (`options`) on one of twin registries and in full
  /// (`importInFull`) on the other, and expects the same counts or the same refusal, and the same
  /// accounts after (`admins` are the twins' admin connections). Returns what the tool did.
  @discardableResult
  static func importBothWays(
    _ path: String, options: RosterImportOptions, round: Int, text: String,
    on db: Connection, andInFullOn referenceDB: Connection, admins: [Connection]
  ) throws -> RosterImportResult? {
    var imported: RosterImportResult?
    let viaTool: Result<[Int], DeskError>
    do throws(DeskError) {
      // Two rounds in three in blocks of a record or a few, so that runs of records to parse and
      // records recognised meet block ends, and blocks of a feed out of the registry's order
      // are looked up together.
      let reader = try RosterFeed(path: path, blockSize: [1 << 20, 64, 256][round % 3])
      let result = try RosterImport.run(reader, options: options, on: db)
      imported = result
      viaTool = .success([result.rows, result.added, result.changed, result.disabled, result.unchanged])
    } catch {
      viaTool = .failure(error)
    }
    let reference: Result<[Int], DeskError>
    do throws(DeskError) {
      reference = .success(try importInFull(path, disableMissing: options.disableMissing, on: referenceDB))
    } catch {
      reference = .failure(error)
    }
    switch (viaTool, reference) {
    case (.success(let counts), .success(let expected)):
      #expect(counts == expected, "round \(round):\n\(text)")
    case (.failure(let error), .failure(let expected)):
      #expect(error.message == expected.message, "round \(round):\n\(text)")
    default:
      Issue.record("round \(round): by difference \(viaTool), in full \(reference):\n\(text)")
    }
    #expect(try accounts(admins[0]) == accounts(admins[1]), "round \(round):\n\(text)")
    return imported
  }

  /// The import as apply_roster takes it: every row of the feed, read and checked, then compared
  /// in the database. Returns rows, added, changed, disabled, unchanged.
  static func importInFull(_ path: String, disableMissing: Bool, on db: Connection) throws(DeskError) -> [Int] {
    do {
      let feed = try RosterFeed(path: path)
      return try db.transaction {
        try db.execute("SELECT hms2fa_api.open_roster_feed()")
        try db.copyIn(RosterImport.feedCopy) { writer in
          while let entry = try feed.next() { try writer.append(entry) }
        }
        let row = try #require(
          try db.queryFirst(
            "SELECT * FROM hms2fa_api.apply_roster(\(disableMissing), 1::numeric, false, false, 'in full')"))
        return try ["feed_rows", "added", "changed", "disabled", "unchanged"].map { try row.decode($0, as: Int.self) }
      }
    } catch let error as DeskError {
      throw error
    } catch {
      throw DeskError(.software, "\(error)")
    }
  }

  static func accounts(_ admin: Connection) throws -> String {
    try admin.queryFirst(
      """
      SELECT coalesce(string_agg(format('%s|%s|%s|%s|%s', account_id, display_name, email, status, high_risk),
                                 E'\\n' ORDER BY account_id), '') AS s
        FROM hms2fa.accounts
      """)?.decode("s", as: String.self) ?? "?"
  }

  /// A registry of up to a dozen accounts, some of them held in forms the feed's checks would
  /// change.
  static func registry(_ random: inout SplitMix) -> [Account] {
    let names = [
      "Person", "Pat O\"Brien", "Doe, Jane", "Zoë Ångström", "Trailing ", "Tab\tName", "Two\nLines", "Ann",
    ]
    let emails = ["@hms.harvard.edu", "@HMS.harvard.edu", "@hms.harvard.edu", "@partners.org"]
    return (0..<random.next(below: 12)).map { index in
      let id = "a\(index)"
      let local = random.next(below: 4) == 0 ? "First.Last\(index)" : id
      return Account(
        id: id, name: names[random.next(below: names.count)],
        email: local + emails[random.next(below: emails.count)],
        status: random.next(below: 5) == 0 ? "disabled" : "active", highRisk: random.next(below: 4) == 0)
    }
  }

  /// A feed for `registry`: most accounts exactly as held, written in a style chosen at random
  /// (quoting, spellings, column order, line ends), others changed, padded, left out or listed
  /// twice, and a few new ones; in the registry's order or shuffled.
  /// With `styleSeed`, the style is the one that seed chooses, whatever `random`; new accounts
  /// have ids that start with `newIDs`.
  static func feed(
    for registry: [Account], _ random: inout SplitMix, styleSeed: UInt64? = nil, newIDs: String = "new"
  ) -> (
    text: String, disableMissing: Bool, unchangedInForm: Int
  ) {
    var styleRandom = styleSeed.map(SplitMix.init(seed:)) ?? random
    let quoteAll = styleRandom.next(below: 3) == 0
    let flags = [("true", "false"), ("TRUE", "FALSE"), ("t", "f"), ("Yes", "No"), ("1", "0")][
      styleRandom.next(below: 5)]
    let statusCase = styleRandom.next(below: 3)
    var order = Array(0..<5)
    if styleRandom.next(below: 2) == 0 { order.shuffle(using: &styleRandom) }
    let lineEnd = styleRandom.next(below: 2) == 0 ? "\n" : "\r\n"
    if styleSeed == nil { random = styleRandom }
    func field(_ text: String) -> String {
      let needs = text.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }
      return quoteAll || needs ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }
    func status(_ text: String) -> String {
      [text, text.uppercased(), text.prefix(1).uppercased() + text.dropFirst()][statusCase]
    }
    func row(_ values: [String]) -> String {
      order.map { field(values[$0]) }.joined(separator: ",")
    }
    var rows: [String] = []
    var unchangedInForm = 0
    for account in registry {
      let values = [
        account.id, account.name, account.email, status(account.status), account.highRisk ? flags.0 : flags.1,
      ]
      switch random.next(below: 20) {
      case 0, 1: continue  // left out
      case 2:
        rows.append(row([" " + account.id.uppercased() + " ", account.name, account.email, values[3], values[4]]))
      case 3: rows.append(row([account.id, "Renamed \(account.id)", account.email, values[3], values[4]]))
      case 4:
        rows.append(row([account.id, account.name, account.email, values[3], account.highRisk ? flags.1 : flags.0]))
      case 5: rows.append(row([account.id, account.name, account.email, status("disabled"), values[4]]))
      case 6: rows.append(row([account.id, account.name, account.email.uppercased(), values[3], values[4]]))
      case 7 where random.next(below: 3) == 0:
        rows.append(row(values))
        rows.append(row(values))  // listed twice
      default:
        rows.append(row(values))
        unchangedInForm += 1
      }
    }
    for index in 0..<random.next(below: 3) {
      rows.append(
        row(["\(newIDs)\(index)", "New Person", "\(newIDs)\(index)@hms.harvard.edu", status("active"), flags.1]))
    }
    if random.next(below: 3) == 0 { rows.shuffle(using: &random) }
    let header = order.map { RosterFeed.columns[$0] }.joined(separator: ",")
    return (
      ([header] + rows).joined(separator: lineEnd) + lineEnd, random.next(below: 2) == 0, unchangedInForm
    )
  }
}

/// A small seeded generator, so that a failing round can be run again.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64

  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var value = state
    value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
    value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
    return value ^ (value >> 31)
  }

  mutating func next(below bound: Int) -> Int {
    Int(next() % UInt64(bound))
  }
}
