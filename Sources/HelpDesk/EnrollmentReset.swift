import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// How the agent made sure the caller is the person.
public enum IdentityVerification: String, Sendable, CaseIterable {
  /// A code sent to a phone on file, confirmed in the last 15 minutes (checked by the database).
  case codeOnFile = "code-on-file"
  /// The agent called back a number on file.
  case callback
  case inPerson = "in-person"
  case video
  /// The person's manager vouched for them.
  case manager
}

/// What a reset did, would do, or asked a second agent to do.
public struct ResetOutcome: Sendable {
  public struct Device: Sendable {
    public var deviceId: Int64
    public var kind: String
    public var platform: String?
    public var phone: String?
    public var label: String?
    public var isDefault: Bool
    public var state: String
    public var lastUsedAt: String?
  }

  /// `reset`, `pending_approval`, `dry_run` or `nothing_to_reset`.
  public var status: String
  public var accountID: String
  public var displayName: String
  public var email: String
  public var highRisk: Bool
  /// The devices in use before (the plan).
  public var devices: [Device]
  public var links: Int
  public var browsers: Int
  public var codes: Int
  /// Why a second agent must approve (empty when none must).
  public var approvalNeeded: [String]
  public var requestID: Int64?
  public var requestExpiresAt: String?
  /// The `enrollment.reset` event.
  public var eventID: Int64?
  public var devicesRetired: Int
  public var linksRevoked: Int
  public var browsersRevoked: Int
  public var codesCancelled: Int
  public var enrollment: String?
  public var startSetupVisible: Bool?
  public var verifiedVia: String?
  public var at: String?
  /// What the plan's decision rests on (devices, email, risk), hashed: pass it back as
  /// `expectedPlan` so that the reset refuses (75) if the plan changed since it was shown.
  public var planFingerprint: String?

  init(_ d: JSONFields) throws {
    status = try d.string("status")
    accountID = try d.string("account_id")
    displayName = try d.string("display_name")
    email = try d.string("email")
    highRisk = try d.bool("high_risk")
    devices = try d.array("devices").map { v in
      Device(
        deviceId: try v.int("device_id"), kind: try v.string("kind"), platform: try v.optionalString("platform"),
        phone: try v.optionalString("phone"), label: try v.optionalString("label"), isDefault: try v.bool("is_default"),
        state: try v.string("state"), lastUsedAt: try v.optionalString("last_used_at"))
    }
    links = Int(try d.int("links"))
    browsers = Int(try d.int("browsers"))
    codes = Int(try d.int("codes"))
    approvalNeeded = try d.optionalArray("approval_needed")?.map { try $0.asString } ?? []
    requestID = try d.optionalInt("request_id")
    requestExpiresAt = try d.optionalString("expires_at")
    eventID = try d.optionalInt("event_id")
    devicesRetired = Int(try d.optionalInt("devices_retired") ?? 0)
    linksRevoked = Int(try d.optionalInt("links_revoked") ?? 0)
    browsersRevoked = Int(try d.optionalInt("browsers_revoked") ?? 0)
    codesCancelled = Int(try d.optionalInt("codes_cancelled") ?? 0)
    enrollment = try d.optionalString("enrollment")
    startSetupVisible = try d.optionalBool("start_setup_visible")
    verifiedVia = try d.optionalString("verified_via")
    at = try d.optionalString("at")
    planFingerprint = try d.optionalString("plan_fingerprint")
  }
}

/// An open (or recent) request for a second agent's approval.
public struct ResetRequest: Sendable {
  public var requestID: Int64
  public var accountID: String
  public var requestedBy: String
  public var ticket: String
  public var verifiedVia: String
  public var reason: String?
  public var approvalNeeded: [String]
  public var createdAt: Date
  public var expiresAt: Date
  /// `pending`, `approved` or `expired`.
  public var state: String
  public var approvedBy: String?
}

/// Enrollment reset: every device retired, links, remembered browsers and codes revoked, in one
/// transaction, so that "Start setup" shows again.
public enum EnrollmentReset {
  static let resetAction = DeskAction("resetting an enrollment", tier: .tier2)
  static let approveAction = DeskAction("approving a reset request", tier: .tier2)
  static let listAction = DeskAction("listing reset requests", tier: .tier1)

  /// Asks the database for the plan (`dryRun`) or to carry out the reset; a reset that needs a
  /// second agent comes back as `pending_approval` with a request id. With `expectedPlan` (the
  /// `planFingerprint` of the plan the agent confirmed), the reset is refused, and nothing is
  /// changed, when the plan is no longer that plan.
  ///
  /// - Throws: `DeskError` 65 (disabled, no fresh identity proof for code-on-file), 67, 75 (the
  ///   plan changed since it was shown), 77.
  public static func reset(
    _ account: AccountID, ticket: Ticket, verifiedVia: IdentityVerification, reason: String?, dryRun: Bool,
    expectedPlan: String? = nil, on db: Connection
  ) throws(DeskError) -> ResetOutcome {
    let json: String = try desk(resetAction, on: db) {
      try db.queryFirst(
        """
        SELECT hms2fa_api.reset_enrollment(\(account.value), \(ticket.value), \(verifiedVia.rawValue), \(reason),
                                           \(dryRun), \(expectedPlan)::text)::text AS result
        """)?.decode("result") ?? "{}"
    }
    return try decode(json)
  }

  /// Carries out a pending request made by another tier-2 login, as it was made.
  ///
  /// - Throws: `DeskError` 65 (unknown, approved or expired request), 75 (the plan changed since
  ///   the request was made), 77 (own request, or tier1).
  public static func approve(_ requestID: Int64, ticket: Ticket, on db: Connection) throws(DeskError) -> ResetOutcome {
    let json: String = try desk(approveAction, on: db) {
      let approve: Query = "SELECT hms2fa_api.approve_reset(\(requestID), \(ticket.value))::text AS result"
      return try db.queryFirst(approve)?.decode("result") ?? "{}"
    }
    return try decode(json)
  }

  static func decode(_ json: String) throws(DeskError) -> ResetOutcome {
    do {
      return try ResetOutcome(JSONFields(json, named: "outcome"))
    } catch {
      throw DeskError(.software, "internal error: the reset's outcome did not decode: \(error)")
    }
  }

  /// Open requests, or with `all` every request of the last 30 days.
  public static func requests(all: Bool, on db: Connection) throws(DeskError) -> [ResetRequest] {
    try desk(listAction, on: db) {
      try db.query(
        """
        SELECT request_id, account_id, requested_by, ticket, verified_via, reason,
               array_to_string(approval_needed, ',') AS approval_needed, created_at, expires_at, state, approved_by
          FROM hms2fa_api.reset_requests(\(all))
        """
      ).map { row in
        ResetRequest(
          requestID: try row.decode("request_id"), accountID: try row.decode("account_id"),
          requestedBy: try row.decode("requested_by"), ticket: try row.decode("ticket"),
          verifiedVia: try row.decode("verified_via"), reason: try row.decode("reason"),
          approvalNeeded: try row.decode("approval_needed", as: String.self).split(separator: ",").map(String.init),
          createdAt: try row.decode("created_at"), expiresAt: try row.decode("expires_at"),
          state: try row.decode("state"), approvedBy: try row.decode("approved_by"))
      }
    }
  }

  /// Emails the notice of a reset to the email of record. When it can't be handed over, records
  /// that next to the reset (`enrollment.notice_failed`) and returns the reason; the reset stands.
  public static func sendNotice(
    for outcome: ResetOutcome, ticket: Ticket, mailer: Mailer, settings: DeliverySettings, on db: Connection
  ) -> String? {
    let what = outcome.devices.map { d in
      "  - \(d.kind)\(d.label.map { " \"\(MailMessage.headerSafe($0) ?? "")\"" } ?? "")"
        + (d.phone.map { " (\($0))" } ?? "")
    }
    let extras = [
      outcome.linksRevoked > 0 ? "  - \(outcome.linksRevoked) unused activation link(s)" : nil,
      outcome.browsersRevoked > 0 ? "  - \(outcome.browsersRevoked) browser(s) remembered for 30 days" : nil,
    ].compactMap { $0 }
    let message = MailMessage(
      from: settings.from, to: Mailbox(name: outcome.displayName, address: outcome.email),
      subject: "Your HMS two-factor authentication was reset",
      body: """
        Hello \(MailMessage.headerSafe(outcome.displayName) ?? ""),

        At your request, the HMS IT Service Desk reset your HMS two-factor authentication on \
        \(outcome.at.map { $0.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: " UTC") } ?? "today") \
        (ticket \(ticket.value)). These were removed:

        \((what + extras).joined(separator: "\n"))

        The next time you sign in you will see "Start setup": set up your phone again then.

        If you did not ask for this, someone may be trying to take over your account: call the \
        HMS IT Service Desk at 617-432-2000 right away.

        HMS IT Service Desk
        """)
    do {
      try mailer.deliver(message, bounce: settings.bounce, timeout: settings.timeout)
      return nil
    } catch {
      let reason = "the notice to \(outcome.email) could not be delivered: \(error.reason)"
      if let event = outcome.eventID {
        _ = try? db.queryFirst(
          """
          SELECT hms2fa_api.record_reset_notice_failure(\(outcome.accountID), \(ticket.value), \(event),
                                                        \(error.reason))
          """)
      }
      return reason
    }
  }
}
