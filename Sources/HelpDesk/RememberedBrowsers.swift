import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// One "Remember me for 30 days" browser of a person.
public struct RememberedBrowser: Sendable {
  public var browser: String?
  public var createdAt: Date
  public var expiresAt: Date
  public var revokedAt: Date?
  public enum State: String, Sendable, PostgresTextState {
    case active
    /// Awaiting the nightly purge.
    case expired
    case revoked
  }
  public var state: State
}

/// Remembered browsers at the desk: list them (tier1), forget them all (tier2).
public enum RememberedBrowsers {
  static let listAction = DeskAction("listing remembered browsers", tier: .tier1)
  static let revokeAction = DeskAction("revoking remembered browsers", tier: .tier2)

  /// Every remembered browser of the person, newest first.
  ///
  /// - Throws: `DeskError` 67 for an unknown account, 77 without tier1.
  public static func list(for account: AccountID, on db: Connection) throws(DeskError) -> [RememberedBrowser] {
    try desk(listAction, on: db) {
      try db.query(
        """
        SELECT browser, created_at, expires_at, revoked_at, state
          FROM hms2fa_api.remembered_browsers(\(account.value))
        """
      ).map { row in
        RememberedBrowser(
          browser: try row.decode("browser"), createdAt: try row.decode("created_at"),
          expiresAt: try row.decode("expires_at"), revokedAt: try row.decode("revoked_at"),
          state: try row.decode("state"))
      }
    }
  }

  /// Revokes every active remembered browser of the person, so each must pass 2FA again.
  /// Returns how many were revoked (0 writes nothing).
  ///
  /// - Throws: `DeskError` 67 for an unknown account, 77 without tier2.
  public static func revokeAll(
    for account: AccountID, ticket: Ticket, reason: String? = nil, on db: Connection
  ) throws(DeskError) -> Int {
    try desk(revokeAction, on: db) {
      let revoke: Query =
        """
        SELECT hms2fa_api.revoke_remembered_browsers(\(account.value), \(ticket.value), \(reason)) AS revoked
        """
      return try db.queryFirst(revoke)?.decode("revoked", as: Int.self) ?? 0
    }
  }
}
