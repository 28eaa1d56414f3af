import Postgres

/// Where a look-up connects: what `--database` and `--read-only` say.
public struct LookupTarget: Sendable {
  public var database: String?
  public var readOnly: Bool

  public init(database: String?, readOnly: Bool) {
    self.database = database
    self.readOnly = readOnly
  }

  public func connect() throws -> Connection {
    if database == nil, let url = environmentVariable("HMS2FA_READ_ONLY_DATABASE_URL"), !url.isEmpty {
      let standbys = { (name: String) in name == "HMS2FA_DATABASE_URL" ? url : environmentVariable(name) }
      return try DatabaseTarget.resolve(commandLine: nil, environment: standbys).connect(for: .readOnly)
    }
    return try DatabaseTarget.resolve(commandLine: database).connect(for: readOnly ? .readOnly : .lookup)
  }
}

/// `user show`: the card of one person.
public enum ShowCard {
  public static func run(account: String, from target: LookupTarget, console: Console) throws {
    let key = try AccountKey(parsing: account)
    let db = try target.connect()
    let card = try Lookup.card(for: key, on: db)
    console.emit(.raw(card.json)) { render(card.account) }
  }

  private static func render(_ a: AccountCard.Account) -> String {
    var lines: [String] = []
    lines.append("\(shown(a.accountId))  \(shown(a.displayName)) <\(shown(a.email))>")
    lines.append("status         \(a.status)\(a.highRisk ? "  (high risk: resets need a second agent)" : "")")
    let setup = a.startSetupVisible ? "\"Start setup\" is shown" : "\"Start setup\" is hidden"
    lines.append("enrollment     \(a.enrollment.rawValue) (\(setup))")
    lines.append("when I log in  \(a.loginAction)")
    lines.append("")
    lines.append(
      titledTable(
        "devices", ["ID", "KIND", "PLATFORM", "PHONE", "LABEL", "STATE", "DEFAULT", "LAST USED", "RETIRED"],
        a.devices.map { d in
          [
            String(d.deviceId), d.kind, d.platform ?? "-", d.phone ?? "-", shown(d.label), d.state,
            d.isDefault ? "yes" : "", d.lastUsedAt ?? "never",
            d.retiredAt.map { "\($0) \(shown(d.retiredReason))" } ?? "",
          ]
        }))
    let b = a.rememberedBrowsers
    lines.append("")
    lines.append("remembered browsers: \(b.active) active, \(b.expired) expired awaiting purge, \(b.revoked) revoked")
    if let links = a.activationLinks {
      lines.append("")
      lines.append(
        titledTable(
          "activation links", ["LINK", "DEVICE", "SENT", "EXPIRES"],
          links.map { [String($0.linkId), String($0.deviceId), $0.sentAt, $0.expiresAt] }, empty: "none outstanding"))
    }
    lines.append("")
    lines.append(
      titledTable(
        "recent audit", ["EVENT", "AT", "ACTOR", "ACTION", "TICKET"],
        a.recentAudit.map { [String($0.eventId), $0.at, shown($0.actor), $0.action, shown($0.ticket)] }))
    return lines.joined(separator: "\n")
  }
}
