import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The baseline (`sql/0001_roles.sql` … `0011_roster.sql`) makes exactly the catalogue the 27
/// migrations it folded made: tables, constraints, indexes, functions with their bodies and settings, grants,
/// triggers, default privileges, the rows the migrations write, roles and their memberships.
/// `Tests/Reference/pre-baseline-catalogue.txt` is that catalogue, made by this test (with
/// `HMS2FA_WRITE_CATALOGUE=1`) from the last commit before the baseline.
@Suite("the migrations' catalogue")
struct BaselineTests {
  static let reference = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Reference/pre-baseline-catalogue.txt")

  /// Differences made on purpose, by the `-- Name:` line of the entry, and why.
  static let deliberate = [
    "-- Name: phone_owner(text); Type: FUNCTION; Schema: hms2fa_api; Owner: hms2fa_owner":
      "the body's `x.*` is bound when the function is made: made before phone_verifications.used_at "
      + "(0005, then 0020 added the column) it listed the table's columns but that one; the baseline makes "
      + "the table whole first, so it lists them all (the column is never read there)",
    "-- Name: roster_diff(integer); Type: FUNCTION; Schema: hms2fa_api; Owner: hms2fa_owner":
      "its hint named apply_roster, which 0027 dropped; it names import_roster",
  ]

  @Test("a database made by the baseline has the pre-baseline catalogue, object for object")
  func sameCatalogue() throws {
    // The baseline's files only: the migrations after it change the catalogue, as they should.
    let database = try TestDatabase.create(migrated: false)
    let db = try database.connect()
    #expect(Migrations.baseline.count == 11)
    for migration in Migrations.baseline {
      try db.transaction {
        try db.runScript(migration.sql)
        try db.execute("RESET ROLE")
      }
    }
    let catalogue = try Self.catalogue(of: database)
    if ProcessInfo.processInfo.environment["HMS2FA_WRITE_CATALOGUE"] == "1" {
      let text = catalogue.joined(separator: "\n\n") + "\n"
      try text.write(to: Self.reference, atomically: true, encoding: .utf8)
    }
    let expected = try String(contentsOf: Self.reference, encoding: .utf8)
      .trimmingCharacters(in: .newlines).components(separatedBy: "\n\n")
    func named(_ entry: String) -> Bool {
      Self.deliberate.keys.contains { entry.hasPrefix($0 + "\n") }
    }
    let missing = expected.filter { !catalogue.contains($0) && !named($0) }
    let extra = catalogue.filter { !expected.contains($0) && !named($0) }
    #expect(missing.isEmpty, "in the reference, not made by the baseline:\n\(missing.joined(separator: "\n\n"))")
    #expect(extra.isEmpty, "made by the baseline, not in the reference:\n\(extra.joined(separator: "\n\n"))")
    #expect(catalogue.count > 200)
    // Each named difference is still one: the object is on both sides, and differs.
    for header in Self.deliberate.keys {
      let ours = catalogue.filter { $0.hasPrefix(header + "\n") }
      let theirs = expected.filter { $0.hasPrefix(header + "\n") }
      #expect(ours.count == 1 && theirs.count == 1 && ours != theirs, "\(header)")
    }
  }

  /// The database's objects as `pg_dump` writes them (schema, and the data the migrations
  /// write), one entry each, sorted; then the roles, their memberships and the database's
  /// grants to them. The migrations' own record (`hms2fa_meta`) is left out.
  static func catalogue(of database: TestDatabase) throws -> [String] {
    let bin = try #require(TestCluster.serverBinaries, "HMS2FA_TEST_PGBIN names the server's binaries")
    var entries: [String] = []
    for mode in ["--schema-only", "--data-only"] {
      let process = Process()
      process.executableURL = URL(fileURLWithPath: bin + "/pg_dump")
      process.arguments = [mode, "--no-password", try database.conninfo()]
      let output = Pipe()
      process.standardOutput = output
      try process.run()
      let dump = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
      process.waitUntilExit()
      #expect(process.terminationStatus == 0, "pg_dump \(mode)")
      entries += objects(in: dump)
    }
    let db = try database.connect()
    // Roles are the cluster's: only the migrations' own, not the logins other tests make.
    let roles = [
      "hms2fa_owner", "hms2fa_tier1", "hms2fa_tier2", "hms2fa_batch", "hms2fa_auditor", "hms2fa_signin",
      "hms2fa_operator", "hms2fa_delivery", "hms2fa_staff_admin",
    ]
    let list = roles.joined(separator: ",")
    let rows = try db.query(
      """
      SELECT 'role ' || r.rolname || ': login ' || r.rolcanlogin || ', inherit ' || r.rolinherit
             || ', createrole ' || r.rolcreaterole || ', createdb ' || r.rolcreatedb || ', superuser '
             || r.rolsuper || ', bypassrls ' || r.rolbypassrls AS line
        FROM pg_catalog.pg_roles r WHERE r.rolname = ANY(string_to_array(\(list), ','))
      UNION ALL
      SELECT 'member ' || u.rolname || ' of ' || g.rolname || ', admin option ' || m.admin_option
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
        JOIN pg_catalog.pg_roles u ON u.oid = m.member
       WHERE g.rolname = ANY(string_to_array(\(list), ',')) AND u.rolname = ANY(string_to_array(\(list), ','))
      UNION ALL
      SELECT 'database grants ' || a.privilege_type || ' to ' || r.rolname
        FROM pg_catalog.pg_database d, aclexplode(d.datacl) a
        JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
       WHERE d.datname = current_database() AND r.rolname = ANY(string_to_array(\(list), ','))
      ORDER BY 1
      """)
    entries.append(try rows.map { try $0.decode("line", as: String.self) }.joined(separator: "\n"))
    return entries.sorted()
  }

  /// `dump`'s objects: each from its `-- Name:` header to the next, without comments, blank
  /// lines or session settings; the lines of a grant entry sorted (their order is the order the
  /// grants were made in, which says nothing of who may do what).
  static func objects(in dump: String) -> [String] {
    var objects: [String] = []
    var current: [String] = []
    var isACL = false
    func flush() {
      let skipped = current.first.map { $0.contains("Schema: hms2fa_meta;") || $0.contains("Name: hms2fa_meta;") }
      if skipped == false, current.count > 1 {
        objects.append((isACL ? [current[0]] + current.dropFirst().sorted() : current).joined(separator: "\n"))
      }
      current = []
    }
    for line in dump.components(separatedBy: "\n") {
      if line.hasPrefix("-- Name: ") || line.hasPrefix("-- Data for Name: ") {
        flush()
        isACL = line.contains("; Type: ACL;") || line.contains("; Type: DEFAULT ACL;")
        current = [line]
        continue
      }
      let noise = ["--", "SET ", "SELECT pg_catalog.set_config(", "\\restrict ", "\\unrestrict "]
      if line.trimmingCharacters(in: .whitespaces).isEmpty || noise.contains(where: line.hasPrefix) { continue }
      if !current.isEmpty { current.append(line) }
    }
    flush()
    return objects
  }
}
