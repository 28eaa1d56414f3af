import Postgres

/// A staff login's membership in a tier.
public struct StaffMembership: Sendable {
  public var login: String
  public var tier: Tier
}

/// Granting staff their tier: the operator's job, done with the operator's own login (the
/// database checks its right to grant) and recorded in the audit log.
public enum Staff {
  static let operatorAction = DeskAction("changing staff roles", roleName: "hms2fa_operator")

  /// Makes `login` a member of `tier`'s group role.
  ///
  /// - Throws: `DeskError` 65 when there is no such login (or it can't log in), 77 when this
  ///   login may not grant roles.
  public static func grant(_ tier: Tier, to login: String, ticket: Ticket, on db: Connection) throws(DeskError) {
    try change(granted: true, tier: tier, login: login, ticket: ticket, on: db)
  }

  /// Removes `login` from `tier`'s group role.
  ///
  /// - Throws: as `grant`; revoking a tier the login doesn't have is not an error.
  public static func revoke(_ tier: Tier, from login: String, ticket: Ticket, on db: Connection) throws(DeskError) {
    try change(granted: false, tier: tier, login: login, ticket: ticket, on: db)
  }

  private static func change(granted: Bool, tier: Tier, login: String, ticket: Ticket, on db: Connection)
    throws(DeskError)
  {
    guard !login.isEmpty, login.utf8.count <= 63,
      !login.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
    else {
      throw .usage("\(quoted(login)) is not a database login name")
    }
    // The database grants and records in one call, as hms2fa_staff_admin: the operator's login
    // needs hms2fa_operator, not CREATEROLE, and can't change a tier without the record.
    try desk(operatorAction, on: db) {
      let change: Query = "SELECT hms2fa_api.change_staff(\(login), \(tier.rawValue), \(granted), \(ticket.value))"
      try db.execute(change)
    }
  }

  /// Every login holding a tier, by login.
  public static func list(on db: Connection) throws(DeskError) -> [StaffMembership] {
    try desk(nil, on: db) {
      try db.query(
        """
        SELECT u.rolname AS login, g.rolname AS role
          FROM pg_catalog.pg_auth_members m
          JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
          JOIN pg_catalog.pg_roles u ON u.oid = m.member
         WHERE g.rolname LIKE 'hms2fa\\_%' AND u.rolcanlogin
         ORDER BY u.rolname, g.rolname
        """
      ).compactMap { row in
        let role: String = try row.decode("role")
        guard let tier = Tier.allCases.first(where: { $0.roleName == role }) else { return nil }
        return StaffMembership(login: try row.decode("login"), tier: tier)
      }
    }
  }
}
