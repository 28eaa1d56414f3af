/// The staff tiers of the contract, each a NOLOGIN group role in the database.
public enum Tier: String, CaseIterable, Sendable, Codable {
  case tier1, tier2, batch, auditor, signin, delivery

  /// The group role, e.g. `hms2fa_tier1`.
  public var roleName: String { "hms2fa_\(rawValue)" }
}

/// Something a person asks the tool to do, with the tier the database requires for it; used to
/// say which tier is missing when the database refuses.
public struct DeskAction: Sendable {
  public var summary: String
  /// The group role it needs, e.g. `hms2fa_tier2`.
  public var roleName: String

  public init(_ summary: String, tier: Tier) {
    self.summary = summary
    self.roleName = tier.roleName
  }

  /// An action of a role that is no staff tier (`hms2fa_operator`).
  public init(_ summary: String, roleName: String) {
    self.summary = summary
    self.roleName = roleName
  }

  public static let lookup = DeskAction("looking people up", tier: .tier1)
  public static let readAudit = DeskAction("reading the audit log", tier: .tier1)
  public static let verifyAudit = DeskAction("verifying the audit log", tier: .auditor)
}
