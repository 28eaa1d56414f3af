import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

@Suite("db migrate and db status")
struct MigrationTests {
  @Test("a fresh database gets every migration; a second run changes nothing")
  func idempotent() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    let before = try Migrations.status(on: db)
    #expect(before.allSatisfy { $0.state == .pending })
    let applied = try Migrations.migrate(on: db)
    #expect(applied == Migrations.all.map(\.name))
    #expect(try Migrations.migrate(on: db).isEmpty)
    let after = try Migrations.status(on: db)
    #expect(after.count == Migrations.all.count)
    #expect(after.allSatisfy { $0.state == .applied && $0.appliedBy == TestCluster.superuser })
    // The contract's tables and roles exist.
    for table in ["hms2fa.accounts", "hms2fa.devices", "hms2fa.remembered_browsers", "hms2fa.audit_events"] {
      #expect(try db.queryFirst("SELECT to_regclass(\(table)) IS NOT NULL AS ok")?.decode("ok", as: Bool.self) == true)
    }
    for role in Tier.allCases.map(\.roleName) {
      let canLogin = try db.queryFirst("SELECT rolcanlogin FROM pg_roles WHERE rolname = \(role)")
      #expect(try canLogin?.decode("rolcanlogin", as: Bool.self) == false)
    }
  }

  @Test("the registry takes account ids of 1 to 64 lower-case letters, digits, . _ -, starting with a letter or digit")
  func accountIdFormat() throws {
    let db = try TestDatabase.create().connect()
    let accepted = ["a", "0", "jd123", "a.b_c-d", String(repeating: "a", count: 64)]
    let refused = ["", "A", "Jd123", "-a", "_a", ".a", "a b", "a@b", "ä", "a\n", String(repeating: "a", count: 65)]
    for id in accepted + refused {
      let insert: Query =
        "INSERT INTO hms2fa.accounts (account_id, display_name, email) VALUES (\(id), 'X', 'x@hms.harvard.edu')"
      var state: String? = nil
      do { _ = try db.execute(insert) } catch { state = error.sqlState }
      #expect(state == (accepted.contains(id) ? nil : "23514"), "account id \(id.debugDescription)")
    }
  }

  @Test("an applied migration whose file has changed since stops db migrate")
  func changedChecksum() throws {
    let db = try TestDatabase.create().connect()
    try db.execute(
      "UPDATE hms2fa_meta.schema_migrations SET checksum = 'edited' WHERE name = \(Migrations.all[0].name)")
    #expect(try Migrations.status(on: db).first?.state == .changed)
    let error = #expect(throws: DeskError.self) { try Migrations.migrate(on: db) }
    #expect(error?.status == .configuration)
    #expect(error?.message.contains(Migrations.all[0].name) == true)
  }

  @Test("a database migrated by a newer build is not touched by an older one")
  func unknownMigration() throws {
    let db = try TestDatabase.create().connect()
    try db.execute("INSERT INTO hms2fa_meta.schema_migrations (name, checksum) VALUES ('9999_future.sql', 'x')")
    let error = #expect(throws: DeskError.self) { try Migrations.migrate(on: db) }
    #expect(error?.status == .configuration)
    #expect(try Migrations.status(on: db).last?.state == .unknown)
  }

  @Test("a database made by the migrations before the baseline is refused by db migrate and db status (78, one line)")
  func preBaselineDatabase() throws {
    let database = try TestDatabase.create(migrated: false)
    let db = try database.connect()
    try db.execute("CREATE SCHEMA hms2fa_meta")
    try db.execute(
      """
      CREATE TABLE hms2fa_meta.schema_migrations (
        name text PRIMARY KEY, checksum text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL DEFAULT session_user)
      """)
    try db.execute(
      """
      INSERT INTO hms2fa_meta.schema_migrations (name, checksum)
      VALUES ('0001_registry.sql', 'x'), ('0002_security.sql', 'y'), ('0027_roster_set_based.sql', 'z')
      """)
    for command in ["migrate", "status"] {
      let out = try Tool.run(["db", command, "--database", try database.conninfo()])
      #expect(out.status == 78, "db \(command): \(out.stderr)")
      #expect(
        out.stderr == "hms2fa-admin: this database was made by the migrations before the baseline (it records "
          + "0001_registry.sql), which this hms2fa-admin doesn't carry; nothing was changed: make a new database "
          + "and run hms2fa-admin db migrate on it\n", "db \(command)")
      #expect(out.stdout.isEmpty)
    }
    let schemas = try db.queryFirst("SELECT count(*) AS n FROM pg_namespace WHERE nspname IN ('hms2fa', 'hms2fa_api')")
    #expect(try schemas?.decode("n", as: Int.self) == 0)
  }

  @Test("two migrations at once: each file is applied exactly once")
  func concurrent() throws {
    let database = try TestDatabase.create(migrated: false)
    let results = ResultBox()
    DispatchQueue.concurrentPerform(iterations: 2) { _ in
      do {
        let db = try database.connect()
        results.append(.success(try Migrations.migrate(on: db)))
      } catch {
        results.append(.failure(error))
      }
    }
    let applied = try results.all.flatMap { try $0.get() }
    #expect(applied.sorted() == Migrations.all.map(\.name).sorted())
    let recorded = try database.connect().queryFirst("SELECT count(*) AS n FROM hms2fa_meta.schema_migrations")
    #expect(try recorded?.decode("n", as: Int.self) == Migrations.all.count)
  }

  @Test("a login that may not create schemas gets 77 and nothing is applied")
  func unprivileged() throws {
    let database = try TestDatabase.create(migrated: false)
    let login = try database.createLogin(nil)
    try database.exec(Query(verbatim: "REVOKE CREATE ON DATABASE \(database.name) FROM PUBLIC"))
    let db = try database.connect(as: login)
    let error = #expect(throws: DeskError.self) { try Migrations.migrate(on: db) }
    #expect(error?.status == .noPermission)
    let schemas = try database.connect().queryFirst(
      "SELECT count(*) AS n FROM pg_namespace WHERE nspname IN ('hms2fa', 'hms2fa_api', 'hms2fa_meta')")
    #expect(try schemas?.decode("n", as: Int.self) == 0)
  }
}

final class ResultBox: @unchecked Sendable {
  private let lock = NSLock()
  private var results: [Result<[String], Error>] = []
  func append(_ result: Result<[String], Error>) {
    lock.lock()
    results.append(result)
    lock.unlock()
  }
  var all: [Result<[String], Error>] {
    lock.lock()
    defer { lock.unlock() }
    return results
  }
}
