import Postgres

/// One numbered SQL file from `sql/`, compiled into the tool.
public struct Migration: Sendable {
  public let name: String
  public let sql: String

  /// SHA-256 of the file, hex: what `db migrate` records and later compares.
  public var checksum: String {
    Secrets.hex(Secrets.sha256(sql.utf8))
  }
}

/// A migration's state in one database.
public struct MigrationState: Sendable {
  public enum State: String, Sendable { case applied, pending, changed, unknown }
  public var name: String
  public var state: State
  public var appliedAt: String?
  public var appliedBy: String?
}

/// Applies the schema: forward-only numbered files, each in its own transaction, recorded in
/// `hms2fa_meta.schema_migrations` with a checksum.
public enum Migrations {
  /// The migrations this build of the tool carries, in order.
  public static let all: [Migration] = embeddedMigrations.map { Migration(name: $0.name, sql: $0.sql) }

  /// The baseline: the files that folded the first 27 migrations into one per concern, before
  /// the first release. Every later file is a change of its own.
  public static let baseline = all.filter { $0.name <= "0011_roster.sql" }

  /// The first file of the numbering before the baseline: a database that records it was made
  /// by those migrations, which this build doesn't carry.
  static let preBaselineFirst = "0001_registry.sql"

  // Any fixed key: it only has to differ from other advisory locks taken in this database.
  static let lockKey: Int64 = 0x686D_7332_6661_01

  /// Lists every migration this tool knows and every one the database has recorded.
  ///
  /// - Throws: `DeskError` (69 unreachable, 77 not allowed to read the record).
  public static func status(on db: Connection) throws(DeskError) -> [MigrationState] {
    try desk(nil, on: db) {
      // The record is the migrating login's: say so, never the server's words about a schema.
      let readable = try db.queryFirst(
        """
        SELECT to_regnamespace('hms2fa_meta') IS NULL
               OR has_schema_privilege('hms2fa_meta', 'USAGE') AS readable
        """)
      guard try readable?.decode("readable", as: Bool.self) == true else {
        throw DeskError(
          .noPermission,
          "db status reads the migrations' record, which only the login that migrates may read; "
            + "ask an operator (login \(db.user) is a desk or job login)")
      }
      let exists = try db.queryFirst("SELECT to_regclass('hms2fa_meta.schema_migrations') IS NOT NULL AS present")
      let recorded =
        try exists?.decode("present", as: Bool.self) == true
        ? try db.query(
          """
          SELECT name, checksum,
                 to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS applied_at,
                 applied_by
            FROM hms2fa_meta.schema_migrations ORDER BY name
          """)
        : []
      return try merge(recorded: recorded)
    }
  }

  private static func merge(recorded: [Row]) throws -> [MigrationState] {
    var states: [MigrationState] = []
    var seen: Set<String> = []
    var byName: [String: Row] = [:]
    for row in recorded { byName[try row.decode("name", as: String.self)] = row }
    if byName[preBaselineFirst] != nil {
      throw DeskError(
        .configuration,
        "this database was made by the migrations before the baseline (it records \(preBaselineFirst)), "
          + "which this hms2fa-admin doesn't carry; nothing was changed: make a new database and run "
          + "hms2fa-admin db migrate on it")
    }
    for migration in all {
      seen.insert(migration.name)
      guard let row = byName[migration.name] else {
        states.append(MigrationState(name: migration.name, state: .pending))
        continue
      }
      let same = try row.decode("checksum", as: String.self) == migration.checksum
      states.append(
        MigrationState(
          name: migration.name, state: same ? .applied : .changed,
          appliedAt: try row.decode("applied_at"), appliedBy: try row.decode("applied_by")))
    }
    for (name, row) in byName.sorted(by: { $0.key < $1.key }) where !seen.contains(name) {
      states.append(
        MigrationState(
          name: name, state: .unknown, appliedAt: try row.decode("applied_at"),
          appliedBy: try row.decode("applied_by")))
    }
    return states
  }

  /// Applies every pending migration and returns their names (empty when up to date).
  ///
  /// Concurrent runs queue on an advisory lock (and give up with exit 75 after the session's
  /// lock_timeout); none applies a file twice.
  /// - Throws: `DeskError` 78 when an applied file has changed since, or the database has
  ///   migrations this tool doesn't know; 69/77 from the server.
  public static func migrate(on db: Connection, progress: (String) -> Void = { _ in }) throws(DeskError) -> [String] {
    try desk(nil, on: db) {
      let lock: Query = "SELECT pg_advisory_lock(\(lockKey))"
      let unlock: Query = "SELECT pg_advisory_unlock(\(lockKey))"
      try db.execute(lock)
      defer { _ = try? db.execute(unlock) }
      try db.transaction {
        try db.execute("CREATE SCHEMA IF NOT EXISTS hms2fa_meta")
        try db.execute("REVOKE ALL ON SCHEMA hms2fa_meta FROM PUBLIC")
        try db.execute(
          """
          CREATE TABLE IF NOT EXISTS hms2fa_meta.schema_migrations (
            name       text PRIMARY KEY,
            checksum   text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            applied_by text NOT NULL DEFAULT session_user
          )
          """)
      }
      let states = try merge(
        recorded: try db.query(
          "SELECT name, checksum, NULL::text AS applied_at, NULL::text AS applied_by FROM hms2fa_meta.schema_migrations"
        ))
      if let changed = states.first(where: { $0.state == .changed }) {
        throw DeskError(
          .configuration,
          "migration \(changed.name) was changed after it was applied; migrations are never edited: "
            + "restore the file and add a new one")
      }
      if let unknown = states.first(where: { $0.state == .unknown }) {
        throw DeskError(
          .configuration,
          "the database has migration \(unknown.name), which this hms2fa-admin doesn't know; use a newer build")
      }
      var applied: [String] = []
      for migration in all where states.contains(where: { $0.name == migration.name && $0.state == .pending }) {
        progress("applying \(migration.name)")
        do {
          try db.transaction {
            try db.runScript(migration.sql)
            try db.execute("RESET ROLE")
            let record: Query =
              """
              INSERT INTO hms2fa_meta.schema_migrations (name, checksum) VALUES (\(migration.name), \(migration.checksum))
              """
            try db.execute(record)
          }
        } catch let error as PostgresError where error.kind == .server {
          if error.sqlState == SQLState.insufficientPrivilege {
            throw DeskError(
              .noPermission,
              "migration \(migration.name) was refused (\(error.message)); migrate as a superuser or a "
                + "login with CREATEROLE and CREATE on the database; nothing of it was applied")
          }
          throw DeskError(
            .software, "migration \(migration.name) failed: \(error.description); nothing of it was applied")
        }
        applied.append(migration.name)
      }
      return applied
    }
  }
}
