import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

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
    commandLine: String?, environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws(DeskError) -> DatabaseTarget {
    if let commandLine {
      let keywords: Set<String>
      do {
        keywords = try Connection.keywordsSet(in: commandLine)
      } catch {
        throw DeskError(.usage, "--database: \(error.message)")
      }
      if keywords.contains("password") {
        throw DeskError(
          .usage,
          "--database must not contain a password (it shows in the process list); "
            + "put it in ~/.pgpass or PGPASSWORD")
      }
      return DatabaseTarget(conninfo: commandLine)
    }
    if let url = environment["HMS2FA_DATABASE_URL"], !url.isEmpty {
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
    do {
      return try Connection.connect(conninfo, connectTimeout: connectTimeout, applicationName: "hms2fa-admin")
    } catch {
      throw deskError(error)
    }
  }
}

/// Runs `body` and turns any database failure into the `DeskError` the desk should see.
func desk<T>(_ action: DeskAction?, on connection: Connection, _ body: () throws -> T) throws(DeskError) -> T {
  do {
    return try body()
  } catch {
    throw deskError(error, doing: action, on: connection)
  }
}
