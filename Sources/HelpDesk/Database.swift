import Postgres

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A variable of the process's environment, read by name (getenv): copying the whole environment
/// into a dictionary, as `ProcessInfo.environment` does, is a measurable part of a look-up's
/// start-up.
public func environmentVariable(_ name: String) -> String? {
  getenv(name).map { String(cString: $0) }
}

/// Where the tool connects: `--database`, else `HMS2FA_DATABASE_URL`, else libpq's defaults
/// (PGHOST, PGSERVICE, ~/.pgpass, …).
public struct DatabaseTarget: Sendable {
  public var conninfo: String?
  /// Seconds to wait for the server before giving up.
  public var connectTimeout: Int

  public init(conninfo: String?, connectTimeout: Int = 5) {
    self.conninfo = conninfo
    self.connectTimeout = connectTimeout
  }

  /// Resolves the target from a command-line value and the environment.
  ///
  /// - Throws: a usage `DeskError` when the command-line value carries a password (it would be
  ///   visible to every user of the machine in the process list), a configuration one when it
  ///   doesn't parse.
  public static func resolve(
    commandLine: String?, environment: (String) -> String? = environmentVariable
  ) throws(DeskError) -> DatabaseTarget {
    if let commandLine {
      let keywords: [String]
      do {
        keywords = try Connection.keywordsSet(in: commandLine)
      } catch {
        throw DeskError(.usage, "--database: \(error.message)")
      }
      if keywords.contains("password") || keywords.contains("sslpassword") {
        throw DeskError(
          .usage,
          "--database must not contain a password (it shows in the process list); "
            + "put it in ~/.pgpass or PGPASSWORD, a client key's passphrase in a service file "
            + "(~/.pg_service.conf) readable only by you")
      }
      return DatabaseTarget(conninfo: commandLine)
    }
    if let url = environment("HMS2FA_DATABASE_URL"), !url.isEmpty {
      do {
        try Connection.validate(conninfo: url)
      } catch {
        throw DeskError(.configuration, "HMS2FA_DATABASE_URL: \(error.message)")
      }
      return DatabaseTarget(conninfo: url)
    }
    return DatabaseTarget(conninfo: nil)
  }

  /// Opens a connection for desk work.
  ///
  /// - Throws: `DeskError` with exit 69 (unreachable, naming socket or host and port), 77
  ///   (password refused) or 78 (bad connection string).
  public func connect() throws(DeskError) -> Connection {
    try connect(for: .change)
  }

  /// What a connection is for, which decides the server it may land on.
  public enum Purpose: Sendable {
    /// Changes: only a primary (`target_session_attrs=read-write`), whatever the hosts listed.
    case change
    /// Look-ups: the first server that answers, primary or standby.
    case lookup
    /// Look-ups that prefer a standby (`--read-only`), sparing the primary.
    case readOnly
  }

  /// Opens a connection for `purpose`, with the desk's session settings: a `lock_timeout`
  /// (`HMS2FA_LOCK_TIMEOUT`, default 5s), so a command blocked by another session's lock gives
  /// up with "try again" instead of hanging.
  ///
  /// - Throws: `DeskError` 69 (unreachable; for a change: no writable server), 77, 78.
  public func connect(
    for purpose: Purpose, environment: (String) -> String? = environmentVariable
  ) throws(DeskError) -> Connection {
    var lockTimeout: Int64 = 5
    if let text = environment("HMS2FA_LOCK_TIMEOUT") {
      guard let duration = try? DeskDuration(parsing: text), duration.seconds <= 600 else {
        throw DeskError(
          .configuration, "HMS2FA_LOCK_TIMEOUT=\(quoted(text)) is not a duration of at most 10m (e.g. 5s)")
      }
      lockTimeout = duration.seconds
    }
    let overrides: [(String, String)] =
      switch purpose {
      case .change: [("target_session_attrs", "read-write")]
      case .lookup: []
      case .readOnly: [("target_session_attrs", "prefer-standby")]
      }
    let connection: Connection
    do {
      connection = try Connection.connect(
        conninfo, connectTimeout: connectTimeout, applicationName: "hms2fa-admin", overrides: overrides)
    } catch {
      let desk = deskError(error)
      if purpose == .change, error.kind == .connection,
        error.message.contains("read-write")
          || error.message.contains("read-only")
      {
        throw DeskError(
          .unavailable,
          "no writable (primary) server answered, so nothing was changed: \(error.message); "
            + "look-ups still work (--read-only); retry once the primary is back or a standby is promoted")
      }
      throw desk
    }
    do {
      // Utility statements in the simple protocol, one round trip: no function to look up and
      // plan in the new session's cold catalog caches, as `SELECT set_config(…)` had (0.3 ms of
      // server time). The values are numbers this function made. The startup packet's `options`
      // would save the round trip, but a pooler in session mode (PgBouncer) refuses or drops it.
      var settings = "SET lock_timeout = \(lockTimeout * 1000)"
      // A client that goes away (Ctrl-C, a kill, a dropped link) is noticed within a second
      // while its statement runs or waits for a lock, and the backend ends with its locks,
      // instead of holding them until the statement is done (PostgreSQL 14 and later).
      if connection.serverVersion >= 140_000 { settings += "; SET client_connection_check_interval = 1000" }
      try connection.runScript(settings)
    } catch {
      throw deskError(error)
    }
    return connection
  }
}

/// Runs `body` and turns any database failure into the `DeskError` the desk should see.
package func desk<T>(_ action: DeskAction?, on connection: Connection, _ body: () throws -> T) throws(DeskError) -> T {
  do {
    return try body()
  } catch {
    throw deskError(error, doing: action, on: connection)
  }
}
