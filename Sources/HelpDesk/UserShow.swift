import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

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
  /// Shows the card of `account`; its last line (and `next_step` in JSON) names the next command,
  /// with `ticket` (else `HMS2FA_TICKET`) filled in.
  public static func run(account: String, ticket: String?, from target: LookupTarget, console: Console) throws {
    let ticket = try (ticket ?? environmentVariable("HMS2FA_TICKET")).map { try Ticket(desk: $0) }
    // Seven digits or more, written as a number: the account with a device in use on it.
    let key = PhoneNumber.looksLikeOne(account) ? nil : try AccountKey(parsing: account)
    let db = try target.connect()
    let card = try Lookup.card(for: try key ?? owner(of: account, on: db), on: db)
    let next = nextStep(for: card.account, ticket: ticket)
    var document = JSONValue.raw(card.json)
    if case .object(let members)? = try? JSONValue.parse(card.json) {
      document = .object(members + [("next_step", .string(next))])
    }
    console.emit(document) { render(card.account) + "\n\nnext: " + next }
  }

  /// The one account with a device in use on the number `text`.
  ///
  /// - Throws: `DeskError` 64 for text that isn't a number, 67 when no device in use has it, 65
  ///   when devices of several accounts do.
  static func owner(of text: String, on db: Connection) throws -> AccountKey {
    let number: PhoneNumber
    do {
      number = try PhoneNumber(parsing: text)
    } catch {
      throw error.deskError
    }
    let holders = try Lookup.find(number.e164, limit: 10, on: db)
    guard holders.count == 1 else {
      throw DeskError(
        .dataError,
        "the number \(number.e164) is on devices of \(holders.count) accounts: "
          + holders.map(\.accountId).joined(separator: ", ") + "; show one by its account id")
    }
    return .id(try AccountID(parsing: holders[0].accountId))
  }

  /// Devices in use not used (or, never used, not activated) for this long make an enrollment
  /// stale: the "set up years ago" caller of the help article.
  static let staleAfter: TimeInterval = 90 * 24 * 3600

  /// What the desk does next for the state the card shows, as one line naming the command.
  public static func nextStep(for a: AccountCard.Account, ticket: Ticket?, now: Date = Date()) -> String {
    let id = a.accountId
    let t = "--ticket \(ticket?.value ?? "TICKET")"
    if a.status != "active" {
      return "nothing at the desk: the account is disabled, so nobody can sign in with it; the identity system "
        + "enables it (the person's department asks HMS IT Accounts), and the next nightly import brings it here"
    }
    switch a.enrollment {
    case .notEnrolled:
      return "nothing to reset: \"Start setup\" is shown; the person signs in and follows it"
    case .pending:
      let waiting = a.devices.filter { $0.state == "pending" }
      let device = waiting.count == 1 ? " (device \(waiting[0].deviceId))" : ""
      if let link = a.activationLinks?.last {
        let until = DeskTime.shown(iso: link.expiresAt)
        return "activation link \(link.linkId) is out until \(until): they open that email on the phone being set "
          + "up; to send a new one, hms2fa-admin activation send \(id) \(t)"
      }
      return "a phone waits for activation\(device): if its camera can't scan the QR code, "
        + "hms2fa-admin activation send \(id) \(t)"
    case .enrolled:
      let inUse = a.devices.filter { $0.state == "active" }
      let lastUse = inUse.compactMap { d in
        (d.lastUsedAt ?? d.activatedAt).flatMap { try? PointInTime(parsing: $0).date }
      }.max()
      let stale = lastUse.map { now.timeIntervalSince($0) > staleAfter } ?? true
      let prove =
        "prove who is calling (hms2fa-admin identity check \(id) --via sms \(t), or in person), then "
        + "hms2fa-admin enrollment reset \(id) --verified-via code-on-file \(t) (tier 2)"
      return stale
        ? "enrolled on devices not used for 90 days or more: if they have a new phone, \(prove)"
        : "enrolled and in use: for a new or lost phone, \(prove)"
    }
  }

  private static func render(_ a: AccountCard.Account) -> String {
    var lines: [String] = []
    lines.append("\(shown(a.accountId))  \(shown(a.displayName)) <\(shown(a.email))>")
    lines.append("status         \(a.status)\(a.highRisk ? "  (high risk: resets need a second agent)" : "")")
    let setup =
      a.status != "active"
      ? "no sign-in at all: the account is disabled"
      : a.startSetupVisible ? "\"Start setup\" is shown" : "\"Start setup\" is hidden"
    lines.append("enrollment     \(a.enrollment.rawValue) (\(setup))")
    lines.append("when I log in  \(a.loginAction)")
    lines.append("")
    lines.append(
      titledTable(
        "devices", ["ID", "KIND", "PLATFORM", "PHONE", "LABEL", "STATE", "DEFAULT", "LAST USED", "RETIRED"],
        a.devices.map { d in
          [
            String(d.deviceId), d.kind, d.platform ?? "-", d.phone ?? "-", shown(d.label), d.state,
            d.isDefault ? "yes" : "", d.lastUsedAt.map { DeskTime.cell(iso: $0) } ?? "never",
            d.retiredAt.map { "\(DeskTime.cell(iso: $0)) \(shown(d.retiredReason))" } ?? "",
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
          links.map {
            [String($0.linkId), String($0.deviceId), DeskTime.cell(iso: $0.sentAt), DeskTime.cell(iso: $0.expiresAt)]
          }, empty: "none outstanding"))
    }
    lines.append("")
    lines.append(
      titledTable(
        "recent audit", ["EVENT", "AT", "ACTOR", "ACTION", "TICKET"],
        a.recentAudit.map {
          [String($0.eventId), DeskTime.cell(iso: $0.at), shown($0.actor), $0.action, shown($0.ticket)]
        }))
    return lines.joined(separator: "\n")
  }
}
