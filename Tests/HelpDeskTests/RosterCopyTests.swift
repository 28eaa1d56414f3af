import Foundation
import Postgres
import TestSupport
import Testing

@testable import HelpDesk

/// The copy of the roster an import keeps for the next (`RosterCopy`): used only while it is the
/// roster exactly, as the database says.
@Suite("roster copy kept between imports")
struct RosterCopyTests {
  typealias Account = RosterDeltaTests.Account
  typealias Registry = RosterImportTests.Registry

  static func directory() -> String {
    TestCluster.scratch + "/copy-" + UUID().uuidString.prefix(8)
  }

  /// The registry's accounts, in id order.
  static func accounts(_ admin: Connection) throws -> [Account] {
    try admin.query(
      "SELECT account_id, display_name, email, status, high_risk FROM hms2fa.accounts ORDER BY account_id"
    ).map { row in
      Account(
        id: try row.decode("account_id"), name: try row.decode("display_name"), email: try row.decode("email"),
        status: try row.decode("status"), highRisk: try row.decode("high_risk"))
    }
  }

  /// The roster as the registry holds it now, written in `style`: what an import without a copy
  /// compares with.
  static func roster(of database: TestDatabase, as login: String, style: RosterStyle) throws -> RosterRecords {
    let db = try database.connect(as: login)
    return try db.transaction {
      try db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
      return try RosterSnapshot(reading: db, style: style).stored
    }
  }

  /// Each account's record, by id.
  static func byID(_ stored: RosterRecords) -> [String: String] {
    var records: [String: String] = [:]
    for account in 0..<stored.count {
      records[String(decoding: stored.idBytes[stored.idRange(account)], as: UTF8.self)] = String(
        decoding: stored.records[stored.recordRange(account)], as: UTF8.self)
    }
    return records
  }

  @Test(
    "import after import, the copy kept is the roster exactly, and comparing with it changes what comparing with the registry does"
  )
  func copyIsTheRoster() throws {
    // Twin registries: one imported with a copy kept between imports, one by sending every row
    // to apply_roster. Unlike RosterDeltaTests.sameAsInFull, each round imports into the registry
    // the round before left.
    let kept = try TestDatabase.create()
    let inFull = try TestDatabase.create()
    let admins = try [kept, inFull].map { try $0.connect() }
    let batches = try [kept, inFull].map { try $0.createLogin(.batch) }
    var random = SplitMix(seed: 20_261_130_2)
    for account in RosterDeltaTests.registry(&random)
      + RosterDeltaTests.registry(&random).map({ account in
        var account = account
        account.id += "b"
        return account
      })
    {
      for admin in admins {
        try Fixtures.account(
          account.id, name: account.name, email: account.email, status: account.status,
          highRisk: account.highRisk, on: admin)
      }
    }
    let directory = Self.directory()
    var comparedWithCopy = 0
    var keptCopies = 0
    var recordsCompared = 0
    for round in 0..<40 {
      let registry = try Self.accounts(admins[0])
      // The export's style stays the same for ten nights at a time.
      let feed = RosterDeltaTests.feed(
        for: registry, &random, styleSeed: UInt64(round / 10), newIDs: "n\(round)x")
      let path = TestCluster.scratch + "/copy-round-\(round)-" + UUID().uuidString.prefix(8) + ".csv"
      try Data(feed.text.utf8).write(to: URL(fileURLWithPath: path))
      var options = RosterImportOptions()
      options.disableMissing = feed.disableMissing
      options.maxDisableFraction = 1
      options.copyDirectory = directory
      let db = try kept.connect(as: batches[0])
      let result = try RosterDeltaTests.importBothWays(
        path, options: options, round: round, text: feed.text, on: db,
        andInFullOn: try inFull.connect(as: batches[1]), admins: admins)
      guard let result else { continue }
      #expect(result.copyProblem == nil, "round \(round)")
      if result.comparedWithCopy { comparedWithCopy += 1 }
      // What the next import would find: the copy, byte for byte the roster it would otherwise read.
      let reader = try RosterFeed(path: path)
      _ = try reader.next()
      guard let style = reader.style else { continue }
      let version = try db.transaction { try RosterCopy.Version(on: db) }
      if result.copyKept != nil {
        keptCopies += 1
        let loaded = try #require(try RosterCopy(directory: directory).load(version, style: style), "round \(round)")
        let check = RosterCopy.Loaded.Check(loaded)
        check.run()
        #expect(check.problem == nil, "round \(round)")
        let copy = Self.byID(loaded.stored)
        let roster = Self.byID(try Self.roster(of: kept, as: batches[0], style: style))
        // Every account, and each with the record reading the registry gives it, or none (an
        // account --disable-missing may have disabled: the next import reads its row in full).
        #expect(copy.keys.sorted() == roster.keys.sorted(), "round \(round):\n\(feed.text)")
        for (id, record) in copy where !record.isEmpty {
          #expect(record == roster[id], "round \(round), \(id):\n\(feed.text)")
        }
        recordsCompared += copy.values.filter { !$0.isEmpty }.count
      }
    }
    #expect(keptCopies > 20)
    #expect(recordsCompared > 200)
    #expect(comparedWithCopy > 15)
  }

  /// A registry of 50 accounts and a feed that lists them unchanged, but for `renamed`.
  static func feed(renaming renamed: [Int] = []) -> [String] {
    (1...50).map { index in
      let name = renamed.contains(index) ? "Renamed \(index)" : "Person p\(index)"
      return "p\(index),\(name),p\(index)@hms.harvard.edu,active,false"
    }
  }

  static func registry() throws -> Registry {
    let registry = try Registry(accounts: [])
    try registry.admin.execute(
      """
      INSERT INTO hms2fa.accounts (account_id, display_name, email)
      SELECT 'p' || g, 'Person p' || g, 'p' || g || '@hms.harvard.edu' FROM generate_series(1, 50) g
      """)
    return registry
  }

  @Test("a copy is used only while no one has changed the roster since it was kept")
  func onlyWhileUnchanged() throws {
    let registry = try Self.registry()
    let directory = Self.directory()
    func importing(_ rows: [String]) throws -> RosterImportResult {
      try registry.importing(rows) { $0.copyDirectory = directory }
    }
    let first = try importing(Self.feed())
    #expect(!first.comparedWithCopy)
    let path = try #require(first.copyKept)
    // Owner only: it holds the registry's names and emails.
    let mode = try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    #expect(mode == 0o600)
    #expect(try importing(Self.feed()).comparedWithCopy)
    // A new account, all else as it was: a copy with it in is kept, and compared with next.
    let hire = Self.feed() + ["q9,New Person,q9@hms.harvard.edu,active,false"]
    let added = try importing(hire)
    #expect(added.comparedWithCopy && added.added == 1)
    #expect(added.copyKept != nil && added.copyKept != path)
    let again = try importing(hire)
    #expect(again.comparedWithCopy && again.unchanged == 51)

    // A column the feed doesn't set: the copy still holds.
    try registry.admin.execute("UPDATE hms2fa.accounts SET login_action = 'push' WHERE account_id = 'p3'")
    let afterReset = try importing(Self.feed(renaming: [4]))
    #expect(afterReset.comparedWithCopy)
    #expect(afterReset.changed == 1)

    // An agent's (or anyone's) change to a name: the roster is read again, and the feed's name
    // restored.
    try registry.admin.execute("UPDATE hms2fa.accounts SET display_name = 'Changed by hand' WHERE account_id = 'p5'")
    let afterEdit = try importing(Self.feed(renaming: [4]))
    #expect(!afterEdit.comparedWithCopy)
    #expect(afterEdit.changed == 1)
    #expect(afterEdit.copyProblem == nil)
    let name = try registry.admin.queryFirst("SELECT display_name FROM hms2fa.accounts WHERE account_id = 'p5'")?
      .decode("display_name", as: String.self)
    #expect(name == "Person p5")
    #expect(try importing(Self.feed(renaming: [4])).comparedWithCopy)

    // A refused feed keeps nothing and changes nothing: the copy stays the roster's.
    #expect(throws: DeskError.self) { try importing(Self.feed() + ["p1,Again,p1@hms.harvard.edu,active,false"]) }
    let dryRun = try registry.importing(Self.feed(renaming: [6])) {
      $0.copyDirectory = directory
      $0.dryRun = true
    }
    #expect(dryRun.comparedWithCopy)
    #expect(dryRun.copyKept == nil)
    #expect(try importing(Self.feed()).comparedWithCopy)
  }

  @Test("a copy edited, or one others may write, is not trusted, and the import is done from the registry")
  func untrustedCopy() throws {
    let registry = try Self.registry()
    let directory = Self.directory()
    let first = try registry.importing(Self.feed()) { $0.copyDirectory = directory }
    let path = try #require(first.copyKept)
    let db = try registry.database.connect(as: registry.batch)
    let version = try db.transaction { try RosterCopy.Version(on: db) }
    let style = RosterStyle(
      positions: [0, 1, 2, 3, 4], quoteAll: false, active: "active", disabled: "disabled", yes: "true", no: "false")
    let copy = RosterCopy(directory: directory)
    let stored = try #require(try copy.load(version, style: style)).stored

    // Someone writes a copy in which p7 already has tonight's name: trusted, it would keep the
    // registry from being renamed.
    var edited = RosterRecords()
    for account in 0..<stored.count {
      let id = String(decoding: stored.idBytes[stored.idRange(account)], as: UTF8.self)
      edited.idBytes += Array(id.utf8)
      edited.idEnds.append(edited.idBytes.count)
      var record = String(decoding: stored.records[stored.recordRange(account)], as: UTF8.self)
      if id == "p7" { record = record.replacingOccurrences(of: "Person p7", with: "Renamed 7") }
      edited.records += Array(record.utf8)
      edited.recordEnds.append(edited.records.count)
    }
    let saved = try copy.save(edited, style: style, registry: version.registry, version: version.version)
    if saved.path != path { #expect(rename(saved.path, path) == 0) }
    let renamed = try registry.importing(Self.feed(renaming: [7])) { $0.copyDirectory = directory }
    #expect(!renamed.comparedWithCopy)
    #expect(renamed.changed == 1)
    #expect(renamed.copyProblem?.contains("SHA-256") == true, "\(renamed.copyProblem ?? "")")
    let name = try registry.admin.queryFirst("SELECT display_name FROM hms2fa.accounts WHERE account_id = 'p7'")?
      .decode("display_name", as: String.self)
    #expect(name == "Renamed 7")
    let current = try #require(renamed.copyKept)
    #expect(current.hasPrefix(directory + "/roster-"))

    // Writable by others: not used.
    chmod(current, 0o666)
    let shared = try registry.importing(Self.feed(renaming: [7])) { $0.copyDirectory = directory }
    #expect(!shared.comparedWithCopy)
    #expect(shared.copyProblem?.contains("mode 0600") == true, "\(shared.copyProblem ?? "")")
    // The import kept one of its own.
    let own = try registry.importing(Self.feed(renaming: [7])) { $0.copyDirectory = directory }
    #expect(own.comparedWithCopy)
    let last = try #require(own.copyKept)
    // Nothing changed: the copy compared with is kept as it is, not written again.
    #expect(last == shared.copyKept)
    let mode = try #require(try FileManager.default.attributesOfItem(atPath: last)[.posixPermissions] as? Int)
    #expect(mode == 0o600)

    // Cut short: the registry again, and a copy of the whole roster after.
    let size = try #require(try FileManager.default.attributesOfItem(atPath: last)[.size] as? Int)
    truncate(last, off_t(size / 2))
    let cut = try registry.importing(Self.feed()) { $0.copyDirectory = directory }
    #expect(!cut.comparedWithCopy)
    #expect(cut.changed == 1)
    #expect(cut.copyProblem?.contains("cut short") == true, "\(cut.copyProblem ?? "")")
    #expect(try registry.importing(Self.feed()) { $0.copyDirectory = directory }.comparedWithCopy)
  }

  @Test("the copy is in the feed's order, whatever the registry's: the next export in that order is met in order")
  func copyInFeedOrder() throws {
    let registry = try Self.registry()  // p1 … p50, inserted in that order
    var random = SplitMix(seed: 11)
    var rows = Self.feed(renaming: [3])
    rows.shuffle(using: &random)
    rows.append("q1,New Person,q1@hms.harvard.edu,active,false")
    rows.swapAt(10, rows.count - 1)  // a new account among the others
    let directory = Self.directory()
    let result = try registry.importing(Array(rows.dropLast(5))) {
      $0.copyDirectory = directory
      $0.disableMissing = true
      $0.maxDisableFraction = 1
    }
    #expect(result.disabled == 5)
    #expect(result.added == 1)
    let db = try registry.database.connect(as: registry.batch)
    let version = try db.transaction { try RosterCopy.Version(on: db) }
    let style = RosterStyle(
      positions: [0, 1, 2, 3, 4], quoteAll: false, active: "active", disabled: "disabled", yes: "true", no: "false")
    let stored = try #require(try RosterCopy(directory: directory).load(version, style: style)).stored
    let ids = (0..<stored.count).map { String(decoding: stored.idBytes[stored.idRange($0)], as: UTF8.self) }
    // The feed's accounts in its order, then the ones it left out (disabled: no record).
    let listed = rows.dropLast(5).map { String($0.prefix { $0 != "," }) }
    #expect(Array(ids.prefix(listed.count)) == listed)
    #expect(Set(ids.dropFirst(listed.count)) == Set(rows.suffix(5).map { String($0.prefix { $0 != "," }) }))
    #expect(ids.dropFirst(listed.count).indices.allSatisfy { stored.recordRange($0).isEmpty })
  }

  @Test("a copy that can't be kept is said, and the import stands")
  func cannotKeep() throws {
    let registry = try Self.registry()
    // A file where the directory should be.
    let blocked = try registry.file("not a directory")
    let result = try registry.importing(Self.feed(renaming: [2])) { $0.copyDirectory = blocked + "/copies" }
    #expect(result.changed == 1)
    #expect(result.copyKept == nil)
    #expect(result.copyProblem?.contains("next import reads the roster from the registry") == true)
    let name = try registry.admin.queryFirst("SELECT display_name FROM hms2fa.accounts WHERE account_id = 'p2'")?
      .decode("display_name", as: String.self)
    #expect(name == "Renamed 2")
  }

  @Test("with psql: every change to the accounts' feed columns gives the roster a new version, whoever makes it")
  func versionInTheDatabase() throws {
    let registry = try Self.registry()
    let admin = registry.admin
    func version() throws -> String {
      try #require(try admin.queryFirst("SELECT version::text AS v FROM hms2fa.roster_version")?.decode("v"))
    }
    let changes = [
      "UPDATE hms2fa.accounts SET display_name = 'X' WHERE account_id = 'p1'",
      "UPDATE hms2fa.accounts SET email = 'x@hms.harvard.edu' WHERE account_id = 'p1'",
      "UPDATE hms2fa.accounts SET status = 'disabled' WHERE account_id = 'p1'",
      "UPDATE hms2fa.accounts SET high_risk = true WHERE account_id = 'p1'",
      "INSERT INTO hms2fa.accounts (account_id, display_name, email) VALUES ('q1', 'Q', 'q1@hms.harvard.edu')",
      "DELETE FROM hms2fa.accounts WHERE account_id = 'q1'",
      "TRUNCATE hms2fa.accounts CASCADE",
    ]
    for change in changes {
      let before = try version()
      try admin.execute(Query(verbatim: change))
      #expect(try version() != before, "\(change)")
    }
    // Changes that arrive by logical replication, which skips ordinary triggers, too.
    let replicated = try version()
    try admin.execute("SET session_replication_role = replica")
    try admin.execute(
      "INSERT INTO hms2fa.accounts (account_id, display_name, email) VALUES ('r1', 'R', 'r1@hms.harvard.edu')")
    try admin.execute("SET session_replication_role = origin")
    #expect(try version() != replicated)
    try Fixtures.account("p9", on: admin)
    let before = try version()
    try admin.execute("UPDATE hms2fa.accounts SET login_action = 'push' WHERE account_id = 'p9'")
    #expect(try version() == before)

    // The batch role reads the version and notes a copy's digest, only for the version as it
    // stands; it can't set either itself.
    let batch = try registry.database.connect(as: registry.batch)
    let digest = String(repeating: "ab", count: 32)
    let noted = try batch.queryFirst(
      "SELECT hms2fa_api.note_roster_copy(\(before)::uuid, decode(\(digest), 'hex')) AS noted")
    #expect(try noted?.decode("noted", as: Bool.self) == true)
    let stale = try batch.queryFirst(
      "SELECT hms2fa_api.note_roster_copy(gen_random_uuid(), decode(\(digest), 'hex')) AS noted")
    #expect(try stale?.decode("noted", as: Bool.self) == false)
    #expect(throws: PostgresError.self) {
      try batch.execute("SELECT hms2fa_api.note_roster_copy(gen_random_uuid(), '\\x00'::bytea)")
    }
    #expect(throws: PostgresError.self) {
      try batch.execute("UPDATE hms2fa.roster_version SET version = gen_random_uuid()")
    }
    // A change clears the digest: that copy is out of date.
    try admin.execute("UPDATE hms2fa.accounts SET display_name = 'Y' WHERE account_id = 'p9'")
    let cleared = try admin.queryFirst("SELECT copy_digest IS NULL AS cleared FROM hms2fa.roster_version")
    #expect(try cleared?.decode("cleared", as: Bool.self) == true)

    // The desk's tiers neither read nor note it.
    for tier in [Tier.tier1, .tier2, .auditor] {
      let db = try registry.database.connect(as: try registry.database.createLogin(tier))
      #expect(throws: PostgresError.self, "\(tier)") { try db.execute("SELECT * FROM hms2fa_api.roster_version()") }
      #expect(throws: PostgresError.self, "\(tier)") {
        try db.execute("SELECT hms2fa_api.note_roster_copy(gen_random_uuid(), decode(repeat('ab', 32), 'hex'))")
      }
    }
  }
}
