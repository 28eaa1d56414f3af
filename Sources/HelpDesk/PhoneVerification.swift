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
  /// The text message or call in the outbox.
  public var messageID: Int64
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
  /// The notice queued for them in the release's own transaction.
  public var messageID: Int64
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

  /// The verdict on a try at a code, as the database gives it.
  enum CodeOutcome: String {
    case verified
    case wrongCode = "wrong_code"
    case locked
    case expired
    case notPending = "not_pending"
  }

  static let sendAction = DeskAction("sending a verification code", tier: .tier1)
  static let confirmAction = DeskAction("confirming a verification code", tier: .tier1)
  static let releaseAction = DeskAction("releasing a phone number from another account", tier: .tier2)
  static let ownerAction = DeskAction("looking up a phone number", tier: .tier1)

  /// Records a code for `phone` and queues it (phone verify); the delivery service makes and
  /// sends it. Follow it with `Outbox.follow(sent.messageID, …)`.
  ///
  /// - Throws: `DeskError` 65 (disabled account), 67, 75 (three codes to the number in an hour), 77.
  public static func verify(
    _ account: AccountID, phone: PhoneNumber, via channel: PhoneMessage.Channel, ticket: Ticket, on db: Connection
  ) throws(DeskError) -> SentCode {
    try request(
      on: db,
      """
      SELECT verification_id, phone, expires_at, replaced, NULL::bigint AS device_id, message_id
        FROM hms2fa_api.start_phone_verification(\(account.value), \(phone.e164), \(channel.rawValue), \(ticket.value))
      """)
  }

  /// Records a code for a phone already on file for `account` (its default device's, or
  /// `device`'s) and queues it.
  ///
  /// - Throws: as `verify`; 65 also when the account has no such phone.
  public static func identityCheck(
    _ account: AccountID, device: Int64?, via channel: PhoneMessage.Channel, ticket: Ticket, on db: Connection
  ) throws(DeskError) -> SentCode {
    try request(
      on: db,
      """
      SELECT verification_id, phone, expires_at, replaced, device_id, message_id
        FROM hms2fa_api.start_identity_check(\(account.value), \(device)::bigint, \(channel.rawValue), \(ticket.value))
      """)
  }

  private static func request(on db: Connection, _ query: Query) throws(DeskError) -> SentCode {
    try desk(sendAction, on: db) {
      guard let row = try db.queryFirst(query) else {
        throw DeskError(.software, "internal error: no code was recorded")
      }
      return SentCode(
        verificationID: try row.decode("verification_id"), phone: try row.decode("phone"),
        expiresAt: try row.decode("expires_at"), replaced: try row.decode("replaced"),
        deviceID: try row.decode("device_id"), messageID: try row.decode("message_id"))
    }
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
    let action = release ? releaseAction : confirmAction
    // Two transactions: the try is committed, and so counted, before its verdict is asked for;
    // the database refuses a verdict on a try that could still be rolled back.
    let tryID: Int64 = try desk(action, on: db) {
      let attempt: Query =
        """
        SELECT hms2fa_api.try_code(\(account.value), \(purpose.rawValue), \(phone?.e164), \(digits), \(ticket.value))
          AS try_id
        """
      guard let id: Int64 = try db.queryFirst(attempt)?.decode("try_id") else {
        throw DeskError(.software, "internal error: the try was not recorded")
      }
      return id
    }
    let row: Row = try desk(action, on: db) {
      guard
        let result = try db.queryFirst(
          """
          SELECT outcome, tries_left, account_id, phone, other_holders::text AS other_holders,
                 released::text AS released, now() + interval '15 minutes' AS proof_valid_until
            FROM hms2fa_api.confirm_verification(\(tryID), \(ticket.value), \(release))
          """)
      else { throw DeskError(.software, "internal error: no outcome") }
      return result
    }
    let outcome: CodeOutcome
    let triesLeft: Int
    do {
      let name: String = try row.decode("outcome")
      guard let known = CodeOutcome(rawValue: name) else {
        throw DeskError(.software, "internal error: a code's outcome \(quoted(name)) is not known")
      }
      outcome = known
      triesLeft = try row.decode("tries_left")
    } catch {
      throw deskError(error)
    }
    let again = purpose == .ownership ? "hms2fa-admin phone verify" : "hms2fa-admin identity check"
    // When a new code may go: now, or once the hourly limit of the number lets it.
    var when = ""
    if outcome != .verified, outcome != .wrongCode, let number: String = try? row.decode("phone") {
      let nextCode: Query = "SELECT hms2fa_api.next_code_at(\(number)) AS at"
      let next = try? db.queryFirst(nextCode)?.decode("at", as: Date?.self)
      if let next = next ?? nil {
        when = " once the hourly limit of \(number) lets it, at \(DeskTime.shown(next))"
      }
    }
    switch outcome {
    case .verified:
      break
    case .wrongCode:
      throw .badData("the code is wrong; \(triesLeft) \(triesLeft == 1 ? "try" : "tries") left before it stops working")
    case .locked:
      throw .badData(
        "the code is wrong, and that was the fifth wrong try: the code no longer works; send a new one with \(again)"
          + when)
    case .expired:
      throw .badData("the code expired (codes work for 10 minutes); send a new one with \(again)\(when)")
    case .notPending:
      throw .badData(
        "no code is waiting any more (it was just used, replaced or ended); send a new one with \(again)\(when)")
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
            email: try r.string("email"), displayName: try r.string("display_name"),
            messageID: try r.int("message_id"))
        },
        proofValidUntil: try row.decode("proof_valid_until"))
    } catch {
      throw DeskError(.software, "internal error: \(error)")
    }
  }

  /// A number released from the other accounts that have it, on an ownership proof.
  public struct Release: Sendable {
    /// The proof relied on, and the login that confirmed it.
    public var verificationID: Int64
    public var verifiedBy: String
    public var released: [ReleasedHolder]
  }

  /// `phone release`: retires every other account's device in use on `phone` and queues each a
  /// notice, relying on `account`'s ownership proof for it confirmed in the last 15 minutes (by
  /// any agent: a tier-1 agent's confirm is enough), which it spends.
  ///
  /// - Throws: `DeskError` 65 without such a proof or with nobody else on the number, 77 for a
  ///   high-risk holder (a reset instead) or without tier2, 67 for no such account.
  public static func release(
    _ account: AccountID, phone: PhoneNumber, ticket: Ticket, on db: Connection
  ) throws(DeskError) -> Release {
    let row: Row = try desk(releaseAction, on: db) {
      let release: Query = """
        SELECT verification_id, verified_by, released::text AS released
          FROM hms2fa_api.release_number(\(account.value), \(phone.e164), \(ticket.value))
        """
      guard let row = try db.queryFirst(release) else {
        throw DeskError(.software, "internal error: release_number returned nothing")
      }
      return row
    }
    do {
      let released = try JSONFields(try row.decode("released", as: String.self), named: "released")
      return Release(
        verificationID: try row.decode("verification_id"), verifiedBy: try row.decode("verified_by"),
        released: try released.items.map { r in
          ReleasedHolder(
            accountId: try r.string("account_id"), deviceIds: try r.array("device_ids").map { try $0.asInt },
            email: try r.string("email"), displayName: try r.string("display_name"),
            messageID: try r.int("message_id"))
        })
    } catch {
      throw DeskError(.software, "internal error: \(error)")
    }
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
