/// A failure reported by libpq or the server, or a value that could not be decoded.
///
/// `description` is one line meant for a person; it never contains bound parameter values.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
  /// What kind of failure this is, so callers can choose an exit code without reading messages.
  public enum Kind: Sendable, Equatable {
    /// The connection string could not be parsed.
    case configuration
    /// The server could not be reached, or refused the connection before authentication.
    case connection
    /// The server rejected the credentials (a password was used and refused).
    case authentication
    /// The connection was lost while a statement ran (backend terminated, server stopped).
    case connectionLost
    /// The server answered a statement with an error; `sqlState` says which.
    case server
    /// A column could not be decoded into the requested Swift type.
    case decoding
    /// The caller asked for something this wrapper cannot do (e.g. a NUL byte in text).
    case client
  }

  public var kind: Kind
  /// The five-character SQLSTATE, when the server sent one.
  public var sqlState: String?
  /// The primary message.
  public var message: String
  public var detail: String?
  public var hint: String?
  /// The constraint named by the server, when a constraint was violated.
  public var constraint: String?
  /// Where the server was when it failed, innermost first, one line each: for COPY,
  /// `COPY t, line 3, column f2: "…"` (the line of the data, which may quote it).
  public var context: String?

  public init(
    _ kind: Kind, message: String, sqlState: String? = nil, detail: String? = nil,
    hint: String? = nil, constraint: String? = nil, context: String? = nil
  ) {
    self.kind = kind
    self.message = message
    self.sqlState = sqlState
    self.detail = detail
    self.hint = hint
    self.constraint = constraint
    self.context = context
  }

  /// The SQLSTATE class (its first two characters), e.g. "08" for connection exceptions.
  public var sqlStateClass: String? { sqlState.map { String($0.prefix(2)) } }

  public var description: String {
    if let sqlState { return "\(message) (SQLSTATE \(sqlState))" }
    return message
  }
}

/// Well-known SQLSTATE values the project matches on.
public enum SQLState {
  public static let uniqueViolation = "23505"
  public static let checkViolation = "23514"
  public static let notNullViolation = "23502"
  public static let foreignKeyViolation = "23503"
  public static let insufficientPrivilege = "42501"
  public static let lockNotAvailable = "55P03"
  public static let serializationFailure = "40001"
  public static let deadlockDetected = "40P01"
  public static let queryCanceled = "57014"
  public static let adminShutdown = "57P01"
  public static let readOnlySQLTransaction = "25006"
  public static let undefinedTable = "42P01"
  public static let undefinedFunction = "42883"
  public static let invalidSchemaName = "3F000"
}
