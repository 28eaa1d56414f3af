import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A link the desk emailed: what the agent may see (never the token).
public struct SentActivationLink: Sendable {
  public var linkID: Int64
  public var deviceID: Int64
  public var deviceLabel: String?
  public var expiresAt: Date
  /// The email of record it went to.
  public var sentTo: String
  /// Older outstanding links of the device revoked by this one.
  public var superseded: Int
}

/// One activation link as `activation list` shows it.
public struct ActivationLinkRecord: Sendable {
  public var linkID: Int64
  public var deviceID: Int64
  public var sentBy: String
  public var ticket: String
  public var sentAt: Date
  public var expiresAt: Date
  public var usedAt: Date?
  public var revokedAt: Date?
  public var revokedReason: String?
  /// `outstanding`, `used`, `revoked` or `expired`.
  public var state: String
}

/// "Email me an activation link": single-use links for a mobile device waiting for activation,
/// sent to the email of record only.
public enum ActivationLinks {
  static let sendAction = DeskAction("sending an activation link", tier: .tier1)
  static let listAction = DeskAction("listing activation links", tier: .tier1)
  static let revokeAction = DeskAction("revoking activation links", tier: .tier1)

  /// Longest life of a link.
  public static let maximumValidity = DeskDuration(seconds: 7 * 86_400)
  public static let defaultValidity = DeskDuration(seconds: 86_400)

  /// Records a new link (revoking the device's older ones), commits, then emails it.
  ///
  /// The token exists only in this process and in the email; the database gets its SHA-256. When
  /// the email can't be handed over, the link is revoked (reason "delivery failed") before this
  /// throws, so no working link is left that nobody received.
  ///
  /// - Throws: `DeskError`: 65 no pending device / disabled account, 67 unknown account, 69
  ///   delivery failed, 75 five links in 24 h, 77 without tier1.
  public static func send(
    to account: AccountID, device: Int64? = nil, validFor: DeskDuration = defaultValidity, ticket: Ticket,
    mailer: Mailer, settings: DeliverySettings, on db: Connection
  ) throws(DeskError) -> SentActivationLink {
    guard validFor.seconds >= 300, validFor.seconds <= maximumValidity.seconds else {
      throw .usage("an activation link can be valid for 5m to 7d, not \(validFor)")
    }
    let token = Secrets.newToken()
    let link: SentActivationLink
    let displayName: String
    (link, displayName) = try desk(sendAction, on: db) {
      guard
        let row = try db.queryFirst(
          """
          SELECT link_id, device_id, device_label, expires_at, email, display_name, superseded
            FROM hms2fa_api.create_activation_link(
                   \(account.value), \(device)::bigint, \(token.hash), make_interval(secs => \(Int64(validFor.seconds))::bigint),
                   \(ticket.value))
          """)
      else { throw DeskError(.software, "internal error: no link was recorded") }
      return (
        SentActivationLink(
          linkID: try row.decode("link_id"), deviceID: try row.decode("device_id"),
          deviceLabel: try row.decode("device_label"), expiresAt: try row.decode("expires_at"),
          sentTo: try row.decode("email"), superseded: try row.decode("superseded")),
        try row.decode("display_name", as: String.self)
      )
    }

    let message = MailMessage(
      from: settings.from, to: Mailbox(name: displayName, address: link.sentTo),
      subject: "Your HMS two-factor activation link",
      body: activationEmail(
        name: displayName, link: settings.activationURL + "/" + token.text, device: link.deviceLabel,
        expiresAt: link.expiresAt, ticket: ticket.value))
    do {
      try mailer.deliver(message, bounce: settings.bounce, timeout: settings.timeout, secrets: [token.text])
    } catch {
      let revoked: String
      do {
        _ = try revoke(
          for: account, ticket: ticket, reason: "delivery failed", linkID: link.linkID, on: db)
        revoked = "link \(link.linkID) was revoked"
      } catch let failure {
        revoked =
          "link \(link.linkID) could NOT be revoked (\(failure.message)); revoke it with "
          + "hms2fa-admin activation revoke \(account) --ticket \(ticket.value)"
      }
      throw DeskError(
        .unavailable,
        "the activation email to \(link.sentTo) could not be delivered (\(error.reason)); "
          + "\(revoked); "
          + "check the mail transport (HMS2FA_MAILER) and send again")
    }
    return link
  }

  static func activationEmail(name: String, link: String, device: String?, expiresAt: Date, ticket: String)
    -> String
  {
    let deviceLine = device.map { " for \"\(MailMessage.headerSafe($0) ?? "")\"" } ?? ""
    return """
      Hello \(MailMessage.headerSafe(name) ?? ""),

      You asked the HMS IT Service Desk (ticket \(ticket)) to email you an activation link for \
      Duo Mobile\(deviceLine), because the QR code could not be scanned.

      On the phone you are setting up, open this link and follow the steps:

      \(link)

      The link works once, until \(readable(expiresAt)). A newer link replaces this one.

      If you did not ask for this, do not open the link: call the HMS IT Service Desk at \
      617-432-2000.

      HMS IT Service Desk
      """
  }

  /// `2026-11-30 19:52 UTC`.
  static func readable(_ date: Date) -> String {
    let iso = date.iso8601UTC()
    return iso.prefix(10) + " " + iso.dropFirst(11).prefix(5) + " UTC"
  }

  /// The person's links, newest first (50 at most).
  public static func list(for account: AccountID, on db: Connection) throws(DeskError) -> [ActivationLinkRecord] {
    try desk(listAction, on: db) {
      try db.query(
        """
        SELECT link_id, device_id, created_by, ticket, created_at, expires_at, used_at, revoked_at,
               revoked_reason, state
          FROM hms2fa_api.activation_links(\(account.value))
        """
      ).map { row in
        ActivationLinkRecord(
          linkID: try row.decode("link_id"), deviceID: try row.decode("device_id"),
          sentBy: try row.decode("created_by"), ticket: try row.decode("ticket"),
          sentAt: try row.decode("created_at"), expiresAt: try row.decode("expires_at"),
          usedAt: try row.decode("used_at"), revokedAt: try row.decode("revoked_at"),
          revokedReason: try row.decode("revoked_reason"), state: try row.decode("state"))
      }
    }
  }

  /// Revokes the person's outstanding links (or one, by id); returns how many (0 writes nothing).
  public static func revoke(
    for account: AccountID, ticket: Ticket, reason: String? = nil, linkID: Int64? = nil, on db: Connection
  ) throws(DeskError) -> Int {
    try desk(revokeAction, on: db) {
      try db.queryFirst(
        """
        SELECT hms2fa_api.revoke_activation_links(\(account.value), \(ticket.value), \(reason), \(linkID)::bigint)
          AS revoked
        """
      )?.decode("revoked", as: Int.self) ?? 0
    }
  }
}
