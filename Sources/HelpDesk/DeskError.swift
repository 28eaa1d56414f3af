import Postgres

/// The exit statuses of the contract (sysexits.h).
public enum ExitStatus: Int32, Sendable, Codable {
  case ok = 0
  case usage = 64
  case dataError = 65
  case noSuchAccount = 67
  case unavailable = 69
  case software = 70
  /// The result could not be written to stdout (a full disk, a closed pipe). Whatever the
  /// command changed stands: look it up before trying again.
  case ioError = 74
  case tryLater = 75
  case noPermission = 77
  case configuration = 78
}

/// A failure a person at the desk can act on: one line saying what was wrong and what to do,
/// and the exit status the contract gives it.
public struct DeskError: Error, CustomStringConvertible, Sendable {
  public var status: ExitStatus
  public var message: String

  public init(_ status: ExitStatus, _ message: String) {
    self.status = status
    self.message = message
  }

  public var description: String { message }

  public static func usage(_ message: String) -> DeskError { DeskError(.usage, message) }
  public static func badData(_ message: String) -> DeskError { DeskError(.dataError, message) }
  public static func noSuchAccount(_ message: String) -> DeskError { DeskError(.noSuchAccount, message) }
}

/// What a failed database call means at the desk, given what the caller was trying to do.
///
/// Matches on SQLSTATE and error kind only, never on message text.
public func deskError(_ error: Error, doing action: DeskAction? = nil, on connection: Connection? = nil) -> DeskError {
  if let desk = error as? DeskError { return desk }
  guard let pg = error as? PostgresError else {
    return DeskError(.software, "internal error: \(error)")
  }
  switch pg.kind {
  case .configuration:
    return DeskError(.configuration, "\(pg.message); fix --database or HMS2FA_DATABASE_URL")
  case .connection:
    return DeskError(.unavailable, "cannot reach the database: \(pg.message)")
  case .authentication:
    return DeskError(
      .noPermission,
      "the database refused the login: \(pg.message); check the password in ~/.pgpass or PGPASSWORD")
  case .connectionLost:
    return DeskError(
      .unavailable,
      "the connection to the database was lost (\(pg.message)); nothing was changed by the "
        + "unfinished step; run the command again")
  case .decoding, .client:
    return DeskError(.software, "internal error: \(pg.message)")
  case .server:
    break
  }
  let state = pg.sqlState ?? ""
  let withHint = pg.hint.map { "\(pg.message); \($0)" } ?? pg.message
  // Every command says "no such account" the same way (NoSuchAccount), whichever function found it.
  if state == "H2N01", let range = pg.message.range(of: "no account has the id ") {
    return NoSuchAccount.error(String(pg.message[range.upperBound...]), on: connection)
  }
  if state.hasPrefix("H2") {
    let status: ExitStatus =
      switch state.dropFirst(2).first {
      case "U": .usage
      case "D": .dataError
      case "N": .noSuchAccount
      case "R": .tryLater
      case "P": .noPermission
      default: .software
      }
    return DeskError(status, withHint)
  }
  switch state {
  case SQLState.insufficientPrivilege:
    let login = connection.map { " \"\($0.user)\"" } ?? ""
    if let action {
      // A tier-2 action is handed to a tier-2 agent, with the command to give them; a reset can
      // also be filed as a request they approve.
      if action.roleName == Tier.tier2.roleName, let command = handOffCommand() {
        let request =
          command.contains(" enrollment reset ") && !command.contains("--request")
          ? ", or file it for them to approve: \(command) --request" : ""
        return DeskError(
          .noPermission,
          "\(action.summary) needs \(action.roleName), which login\(login) does not have; hand this to a "
            + "tier-2 agent: \(command)\(request)")
      }
      return DeskError(
        .noPermission,
        "the database refused: \(action.summary) needs \(action.roleName), which login\(login) "
          + "does not have; ask an operator (hms2fa-admin staff grant)")
    }
    // The server's words name schemas and tables: never shown to the desk.
    return DeskError(
      .noPermission,
      "the database refused login\(login): it has no tier for this; ask an operator (hms2fa-admin staff grant)")
  case SQLState.lockNotAvailable, SQLState.serializationFailure, SQLState.deadlockDetected,
    SQLState.queryCanceled:
    return DeskError(.tryLater, "the records are busy (\(pg.message)); try again in a moment")
  case SQLState.readOnlySQLTransaction:
    return DeskError(.unavailable, "the database is read-only (a standby?); connect to the primary")
  case SQLState.undefinedTable, SQLState.undefinedFunction, SQLState.invalidSchemaName:
    return DeskError(
      .configuration,
      "the database has no hms2fa schema or an older one (\(pg.message)); run hms2fa-admin db migrate")
  default:
    if pg.sqlStateClass == "53" || pg.sqlStateClass == "57" || pg.sqlStateClass == "58" {
      return DeskError(.unavailable, "the database cannot serve this now: \(pg.message)")
    }
    return DeskError(.software, "internal error: \(pg.description)")
  }
}

/// The command line being run, as one to give another agent: without `--database` (which may
/// hold a connection string of one's own) or `--json`; words with spaces or quotes quoted.
func handOffCommand(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> String? {
  guard !arguments.isEmpty else { return nil }
  var words: [String] = []
  var skip = false
  for word in arguments {
    if skip {
      skip = false
      continue
    }
    if word == "--database" {
      skip = true
      continue
    }
    if word.hasPrefix("--database=") || word == "--json" || word == "--yes" { continue }
    let plain =
      !word.isEmpty && word.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value < 0x7F && $0 != "'" && $0 != "\"" }
    words.append(plain ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'")
  }
  return "hms2fa-admin " + words.joined(separator: " ")
}
