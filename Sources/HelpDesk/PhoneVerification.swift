import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A code on its way to a phone.
public struct SentCode: Sendable {
  public var verificationID: Int64
  /// E.164.
  public var phone: String
  public var expiresAt: Date
  /// A waiting code for the same person and number that this one replaced.
  public var replaced: Int
  /// The device on file the code went to (identity checks).
  public var deviceID: Int64?
}

/// Another account's device on the number.
public struct PhoneHolder: Sendable {
  public var accountId: String
  public var deviceId: Int64
}

/// An account whose devices on the number were retired by `--release`.
public struct ReleasedHolder: Sendable {
  public var accountId: String
  public var deviceIds: [Int64]
  public var email: String
  public var displayName: String
}

/// The result of a right code.
public struct PhoneConfirmation: Sendable {
  public var accountID: String
  public var phone: String
  /// Other accounts with a device in use on the number (before any release).
  public var otherHolders: [PhoneHolder]
  /// What `--release` retired.
  public var released: [ReleasedHolder]
  /// For an identity check: until when the proof counts for `enrollment reset`, by the
  /// database's clock (which decides), at most a second or so early, never late.
  public var proofValidUntil: Date
}

/// Who is, was and proved to be on a number (`phone owner`).
public struct PhoneOwnership: Sendable {
  public struct Holder: Sendable {
    public var accountId: String
    public var displayName: String
    public var status: String
    public var deviceId: Int64
    public var kind: String
    public var label: String?
    public var state: String
    public var since: String
    public var lastUsedAt: String?
  }
  public struct Past: Sendable {
    public var accountId: String
    public var deviceId: Int64
    public var kind: String
    public var since: String
    public var retiredAt: String
    public var retiredReason: String?
  }
  public struct Check: Sendable {
    public var verificationId: Int64
    public var accountId: String
    public var purpose: String
    public var at: String
    public var channel: String
    public var actor: String
    public var state: String
  }
  /// The contract's JSON document, as the database composed it.
  public var json: String
  public var phone: String
  public var accounts: [Holder]
  public var history: [Past]
  public var verifications: [Check]
}

/// Proving who owns a phone number with a 6-digit code by text or voice call: for a number the
/// caller says is theirs (`phone verify`/`confirm`), or for a number already on file before a
/// reset (`identity check`/`confirm`).
public enum PhoneVerification {
  public enum Purpose: String, Sendable {
    case ownership
    case identity
  }

  static let sendAction = DeskAction("sending a verification code", tier: .tier1)
  static let confirmAction = DeskAction("confirming a verification code", tier: .tier1)
  static let releaseAction = DeskAction("releasing a phone number from another account", tier: .tier2)
  static let ownerAction = DeskAction("looking up a phone number", tier: .tier1)

  /// Sends a code to `phone` for `account` (phone verify).
  public static func verify(
    _ account: AccountID, phone: PhoneNumber, via channel: PhoneMessage.Channel, ticket: Ticket,
    gateway: SMSGateway, timeout: Double, on db: Connection
  ) throws(DeskError) -> SentCode {
    try send(
      ticket: ticket, channel: channel, gateway: gateway, timeout: timeout, on: db,
      query: { hash, salt in
        """
        SELECT verification_id, phone, expires_at, replaced, NULL::bigint AS device_id
          FROM hms2fa_api.start_phone_verification(
                 \(account.value), \(phone.e164), \(channel.rawValue), \(hash), \(salt), \(ticket.value))
        """
      })
  }

  /// Sends a code to a phone already on file for `account`: its default device's, or `device`'s.
  public static func identityCheck(
    _ account: AccountID, device: Int64?, via channel: PhoneMessage.Channel, ticket: Ticket, gateway: SMSGateway,
    timeout: Double, on db: Connection
  ) throws(DeskError) -> SentCode {
    try send(
      ticket: ticket, channel: channel, gateway: gateway, timeout: timeout, on: db,
      query: { hash, salt in
        """
        SELECT verification_id, phone, expires_at, replaced, device_id
          FROM hms2fa_api.start_identity_check(
                 \(account.value), \(device)::bigint, \(channel.rawValue), \(hash), \(salt), \(ticket.value))
        """
      })
  }

  /// Records the code's salted hash, commits, then hands the code to the gateway; cancels the
  /// code when the gateway fails (exit 69).
  private static func send(
    ticket: Ticket, channel: PhoneMessage.Channel, gateway: SMSGateway, timeout: Double, on db: Connection,
    query: ([UInt8], [UInt8]) -> Query
  ) throws(DeskError) -> SentCode {
    let code = Secrets.newCode()
    let salt = Secrets.randomBytes(16)
    let sent: SentCode = try desk(sendAction, on: db) {
      guard let row = try db.queryFirst(query(code.saltedHash(salt), salt)) else {
        throw DeskError(.software, "internal error: no code was recorded")
      }
      return SentCode(
        verificationID: try row.decode("verification_id"), phone: try row.decode("phone"),
        expiresAt: try row.decode("expires_at"), replaced: try row.decode("replaced"),
        deviceID: try row.decode("device_id"))
    }
    do {
      try gateway.deliver(
        PhoneMessage(to: sent.phone, channel: channel, body: body(code, channel)), timeout: timeout,
        secrets: [code.digits, spoken(code)])
    } catch {
      var ended = "the code was cancelled"
      do {
        let cancel: Query =
          """
          SELECT hms2fa_api.cancel_verification(\(sent.verificationID), \(ticket.value), 'delivery failed')
          """
        _ = try db.queryFirst(cancel)
      } catch {
        ended = "the code could not be cancelled (\(deskError(error).message)); it expires in 10 minutes"
      }
      throw DeskError(
        .unavailable,
        "the \(channel == .sms ? "text message" : "voice call") to \(sent.phone) could not be handed to the "
          + "gateway (\(error.reason)); \(ended); check HMS2FA_SMS and try again")
    }
    return sent
  }

  static func body(_ code: SecretCode, _ channel: PhoneMessage.Channel) -> String {
    switch channel {
    case .sms:
      return "HMS IT Service Desk: your verification code is \(code.digits). It expires in 10 minutes. "
        + "Read it only to the agent you are talking to."
    case .voice:
      return "This is the Harvard Medical School IT Service Desk. Your verification code is \(spoken(code)). "
        + "Again: \(spoken(code))."
    }
  }

  /// The code as a voice call reads it: "1, 2, 3, 4, 5, 6".
  static func spoken(_ code: SecretCode) -> String {
    code.digits.map(String.init).joined(separator: ", ")
  }

  /// Checks the code the caller read out against the waiting one for `account` (and `phone`, for
  /// ownership). A wrong code costs one of five tries; `release` (tier2) retires other accounts'
  /// devices on the number.
  ///
  /// - Throws: `DeskError` 64 for something that isn't 6 digits, 65 for a wrong, expired or
  ///   missing code (saying how many tries are left), 77 for `release` without tier2.
  public static func confirm(
    _ account: AccountID, purpose: Purpose, phone: PhoneNumber?, code text: String, ticket: Ticket,
    release: Bool = false, on db: Connection
  ) throws(DeskError) -> PhoneConfirmation {
    let digits = text.filter { $0 != " " && $0 != "-" }
    guard digits.count == 6, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
      throw .usage("a verification code is 6 digits (what the person received)")
    }
    let code = SecretCode(digits: digits)
    let action = release ? releaseAction : confirmAction
    let row: Row = try desk(action, on: db) {
      guard
        let pending = try db.queryFirst(
          """
          SELECT verification_id, salt
            FROM hms2fa_api.pending_verification(\(account.value), \(purpose.rawValue), \(phone?.e164))
          """)
      else { throw DeskError(.software, "internal error: no pending code") }
      let id: Int64 = try pending.decode("verification_id")
      let salt: [UInt8] = try pending.decode("salt")
      guard
        let result = try db.queryFirst(
          """
          SELECT outcome, tries_left, account_id, phone, other_holders::text AS other_holders,
                 released::text AS released, now() + interval '15 minutes' AS proof_valid_until
            FROM hms2fa_api.confirm_verification(\(id), \(code.saltedHash(salt)), \(ticket.value), \(release))
          """)
      else { throw DeskError(.software, "internal error: no outcome") }
      return result
    }
    let outcome: String
    let triesLeft: Int
    do {
      outcome = try row.decode("outcome")
      triesLeft = try row.decode("tries_left")
    } catch {
      throw deskError(error)
    }
    let again = purpose == .ownership ? "hms2fa-admin phone verify" : "hms2fa-admin identity check"
    switch outcome {
    case "verified":
      break
    case "wrong_code":
      throw .badData("the code is wrong; \(triesLeft) \(triesLeft == 1 ? "try" : "tries") left before it stops working")
    case "locked":
      throw .badData(
        "the code is wrong, and that was the fifth wrong try: the code no longer works; send a new one with \(again)")
    case "expired":
      throw .badData("the code expired (codes work for 10 minutes); send a new one with \(again)")
    default:
      throw .badData("no code is waiting any more (it was just used, replaced or ended); send a new one with \(again)")
    }
    do {
      let holders = try JSONFields(try row.decode("other_holders", as: String.self), named: "other_holders")
      let released = try JSONFields(try row.decode("released", as: String.self), named: "released")
      return PhoneConfirmation(
        accountID: try row.decode("account_id"), phone: try row.decode("phone"),
        otherHolders: try holders.items.map { h in
          PhoneHolder(accountId: try h.string("account_id"), deviceId: try h.int("device_id"))
        },
        released: try released.items.map { r in
          ReleasedHolder(
            accountId: try r.string("account_id"), deviceIds: try r.array("device_ids").map { try $0.asInt },
            email: try r.string("email"), displayName: try r.string("display_name"))
        },
        proofValidUntil: try row.decode("proof_valid_until"))
    } catch {
      throw DeskError(.software, "internal error: \(error)")
    }
  }

  /// Emails each former holder of a released number at their email of record. Returns one line
  /// per notice that could not be handed over (the release stands either way).
  public static func notifyReleased(
    _ released: [ReleasedHolder], phone: String, mailer: Mailer, settings: DeliverySettings
  ) -> [String] {
    var failures: [String] = []
    for holder in released {
      let message = MailMessage(
        from: settings.from, to: Mailbox(name: holder.displayName, address: holder.email),
        subject: "A phone number was removed from your HMS two-factor authentication",
        body: """
          Hello \(MailMessage.headerSafe(holder.displayName) ?? ""),

          The phone number \(phone) was removed from your HMS two-factor authentication on \
          \(ActivationLinks.readable(Date())), because its new owner proved to the HMS IT Service Desk \
          that it is now theirs.

          If that number is still yours, or you did not expect this, call the HMS IT Service Desk \
          at 617-432-2000. To add a new phone, sign in and choose "Add another device".

          HMS IT Service Desk
          """)
      do {
        try mailer.deliver(message, bounce: settings.bounce, timeout: settings.timeout)
      } catch {
        failures.append("the notice to \(holder.accountId) <\(holder.email)> could not be delivered: \(error.reason)")
      }
    }
    return failures
  }

  /// Everyone on the number now, before, and who proved it.
  public static func owner(of phone: PhoneNumber, on db: Connection) throws(DeskError) -> PhoneOwnership {
    let json: String = try desk(ownerAction, on: db) {
      let owner: Query = "SELECT hms2fa_api.phone_owner(\(phone.e164))::text AS doc"
      return try db.queryFirst(owner)?.decode("doc") ?? "{}"
    }
    do {
      let doc = try JSONFields(json, named: "owner")
      return PhoneOwnership(
        json: json, phone: try doc.string("phone"),
        accounts: try doc.array("accounts").map { a in
          PhoneOwnership.Holder(
            accountId: try a.string("account_id"), displayName: try a.string("display_name"),
            status: try a.string("status"), deviceId: try a.int("device_id"), kind: try a.string("kind"),
            label: try a.optionalString("label"), state: try a.string("state"), since: try a.string("since"),
            lastUsedAt: try a.optionalString("last_used_at"))
        },
        history: try doc.array("history").map { h in
          PhoneOwnership.Past(
            accountId: try h.string("account_id"), deviceId: try h.int("device_id"), kind: try h.string("kind"),
            since: try h.string("since"), retiredAt: try h.string("retired_at"),
            retiredReason: try h.optionalString("retired_reason"))
        },
        verifications: try doc.array("verifications").map { v in
          PhoneOwnership.Check(
            verificationId: try v.int("verification_id"), accountId: try v.string("account_id"),
            purpose: try v.string("purpose"), at: try v.string("at"), channel: try v.string("channel"),
            actor: try v.string("actor"), state: try v.string("state"))
        })
    } catch {
      throw DeskError(.software, "internal error: \(error)")
    }
  }
}
