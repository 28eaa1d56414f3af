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
  /// The email in the outbox.
  public var messageID: Int64
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

  /// Records a new link (revoking the device's older ones) and queues its email, in one
  /// transaction. The delivery service makes the token, stores its hash and sends it: the token
  /// never exists in this process. Follow the email with `Outbox.follow(link.messageID, …)`.
  ///
  /// - Throws: `DeskError`: 65 no pending device / disabled account, 67 unknown account, 75 five
  ///   links in 24 h, 77 without tier1.
  public static func send(
    to account: AccountID, device: Int64? = nil, validFor: DeskDuration = defaultValidity, ticket: Ticket,
    on db: Connection
  ) throws(DeskError) -> SentActivationLink {
    guard validFor.seconds >= 300, validFor.seconds <= maximumValidity.seconds else {
      throw .usage("an activation link can be valid for 5m to 7d, not \(validFor)")
    }
    return try desk(sendAction, on: db) {
      guard
        let row = try db.queryFirst(
          """
          SELECT link_id, device_id, device_label, expires_at, email, superseded, message_id
            FROM hms2fa_api.create_activation_link(
                   \(account.value), \(device)::bigint, make_interval(secs => \(Int64(validFor.seconds))::bigint),
                   \(ticket.value))
          """)
      else { throw DeskError(.software, "internal error: no link was recorded") }
      return SentActivationLink(
        linkID: try row.decode("link_id"), deviceID: try row.decode("device_id"),
        deviceLabel: try row.decode("device_label"), expiresAt: try row.decode("expires_at"),
        sentTo: try row.decode("email"), superseded: try row.decode("superseded"),
        messageID: try row.decode("message_id"))
    }
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
