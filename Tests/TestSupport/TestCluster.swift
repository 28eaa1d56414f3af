import Foundation
import HelpDesk
import Postgres

/// The throwaway cluster ops/test started (HMS2FA_TEST_* variables).
public enum TestCluster {
  static let environment = ProcessInfo.processInfo.environment

  public static var socketDirectory: String {
    get throws {
      guard let host = environment["HMS2FA_TEST_PGHOST"] else {
        throw TestSetupError("HMS2FA_TEST_PGHOST is not set: run the tests with ops/test")
      }
      return host
    }
  }

  public static var port: String { environment["HMS2FA_TEST_PGPORT"] ?? "5432" }
  public static var superuser: String { environment["HMS2FA_TEST_PGUSER"] ?? "postgres" }
  public static var serverBinaries: String? { environment["HMS2FA_TEST_PGBIN"] }
  public static var scratch: String { environment["HMS2FA_TEST_SCRATCH"] ?? NSTemporaryDirectory() }

  /// A conninfo for `database` as `user` on the test cluster.
  public static func conninfo(database: String, user: String? = nil) throws -> String {
    "host='\(try socketDirectory)' port=\(port) dbname='\(database)' user='\(user ?? superuser)'"
  }

  public static func superuserConnection(database: String = "postgres") throws -> Connection {
    try Connection.connect(try conninfo(database: database))
  }

  /// A database migrated once per test process; each test database is a copy of it.
  static let template: Result<String, TestSetupError> = {
    let name = "hms2fa_template_\(ProcessInfo.processInfo.processIdentifier)"
    do {
      let admin = try superuserConnection()
      try admin.execute(Query(verbatim: "CREATE DATABASE \(name)"))
      let db = try superuserConnection(database: name)
      _ = try Migrations.migrate(on: db)
      return .success(name)
    } catch {
      return .failure(TestSetupError("could not prepare the template database: \(error)"))
    }
  }()
}

public struct TestSetupError: Error, CustomStringConvertible {
  public var description: String
  public init(_ description: String) { self.description = description }
}

/// A database of the test's own, dropped with the cluster at the end of the run.
public final class TestDatabase: @unchecked Sendable {
  public let name: String
  private let counter = LoginCounter()

  private init(name: String) { self.name = name }

  /// A new database with every migration applied (or none, when `migrated` is false).
  public static func create(migrated: Bool = true) throws -> TestDatabase {
    let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(20)
    let admin = try TestCluster.superuserConnection()
    if migrated {
      let template = try TestCluster.template.get()
      try admin.execute(Query(verbatim: "CREATE DATABASE \(name) TEMPLATE \(template)"))
    } else {
      try admin.execute(Query(verbatim: "CREATE DATABASE \(name)"))
    }
    // Roles are the cluster's, shared by every test's database: each database admits only its
    // own logins, so that what one test grants is not another's (unrecorded) staff.
    try admin.execute(Query(verbatim: "REVOKE CONNECT ON DATABASE \(name) FROM PUBLIC"))
    return TestDatabase(name: String(name))
  }

  /// A conninfo for this database, as `user` (default: the cluster's superuser).
  public func conninfo(user: String? = nil) throws -> String {
    try TestCluster.conninfo(database: name, user: user)
  }

  /// A connection as `user` (default: the superuser).
  public func connect(as user: String? = nil) throws -> Connection {
    try Connection.connect(try conninfo(user: user))
  }

  /// Creates a new login (unique to this database) holding `tier`, and returns its name.
  public func createLogin(_ tier: Tier?, password: String? = nil) throws -> String {
    let login = "\(name)_\(tier?.rawValue ?? "none")_\(counter.next())"
    let admin = try connect()
    try admin.execute(Query(verbatim: "CREATE ROLE \(login) LOGIN"))
    try admin.execute(Query(verbatim: "GRANT CONNECT ON DATABASE \(name) TO \(login)"))
    if let tier { try admin.execute(Query(verbatim: "GRANT \(tier.roleName) TO \(login)")) }
    if let password {
      try admin.runScript(
        """
        DO $$ BEGIN CREATE ROLE hms2fa_password_logins NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$
        """)
      try admin.execute(Query(verbatim: "GRANT hms2fa_password_logins TO \(login)"))
      try admin.execute("SELECT set_config('password_encryption', 'scram-sha-256', false)")
      let statement = try admin.queryFirst(
        "SELECT format('ALTER ROLE %I PASSWORD %L', \(login)::text, \(password)::text) AS sql")
      try admin.execute(Query(verbatim: try statement?.decode("sql", as: String.self) ?? ""))
    }
    return login
  }

  /// A digest of every row of every table of the registry and its audit log: equal before and
  /// after means nothing was changed.
  public func snapshot() throws -> String {
    let db = try connect()
    let tables = try db.query(
      """
      SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables
       WHERE schemaname IN ('hms2fa', 'hms2fa_meta') ORDER BY 1
      """
    ).map { try $0.decode("name", as: String.self) }
    return try tables.map { table in
      let digest = try db.queryFirst(
        Query(verbatim: "SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS d FROM \(table) t"))
      return table + "=" + (try digest?.decode("d", as: String.self) ?? "")
    }.joined(separator: "\n")
  }

  /// Runs SQL as the superuser (fixtures).
  public func exec(_ query: Query) throws {
    try connect().execute(query)
  }
}

final class LoginCounter: @unchecked Sendable {
  private let lock = NSLock()
  private var value = 0
  func next() -> Int {
    lock.lock()
    defer { lock.unlock() }
    value += 1
    return value
  }
}
