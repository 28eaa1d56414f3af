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

  /// What became of the call, as the database said it (`status`), decoded once.
  public enum Status: String, Sendable {
    case reset
    case pendingApproval = "pending_approval"
    case dryRun = "dry_run"
    case nothingToReset = "nothing_to_reset"
  }

  public var status: Status
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
  public var enrollment: Enrollment?
  public var startSetupVisible: Bool?
  public var verifiedVia: String?
  public var at: String?
  /// What the plan's decision rests on (devices, email, risk), hashed: pass it back as
  /// `expectedPlan` so that the reset refuses (75) if the plan changed since it was shown.
  public var planFingerprint: String?
  /// The notice to the email of record, queued in the reset's own transaction.
  public var messageID: Int64?
  /// A request for this account waiting for a second agent: while it waits, no other reset.
  public var pendingRequestID: Int64?

  init(_ d: JSONFields) throws {
    let statusName = try d.string("status")
    guard let status = Status(rawValue: statusName) else {
      throw DeskError(.software, "internal error: a reset's status \(quoted(statusName)) is not known")
    }
    self.status = status
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
    enrollment = try d.optionalString("enrollment").flatMap(Enrollment.init(rawValue:))
    startSetupVisible = try d.optionalBool("start_setup_visible")
    verifiedVia = try d.optionalString("verified_via")
    at = try d.optionalString("at")
    planFingerprint = try d.optionalString("plan_fingerprint")
    messageID = try d.optionalInt("message_id")
    pendingRequestID = try d.optionalInt("pending_request_id")
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
  public enum State: String, Sendable, PostgresTextState {
    case pending, approved, withdrawn, expired
  }
  public var state: State
  public var approvedBy: String?
  public var withdrawnBy: String?
}

/// Enrollment reset: every device retired, links, remembered browsers and codes revoked, in one
/// transaction, so that "Start setup" shows again.
public enum EnrollmentReset {
  public static let resetAction = DeskAction("resetting an enrollment", tier: .tier2)

  /// Whether this login may carry out a reset (tier 2), asked before anyone types a confirmation.
  public static func mayReset(on db: Connection) throws(DeskError) -> Bool {
    try desk(planAction, on: db) {
      try db.queryFirst("SELECT pg_has_role(current_user, 'hms2fa_tier2', 'MEMBER') AS may")?.decode("may") ?? false
    }
  }
  static let planAction = DeskAction("showing a reset's plan", tier: .tier1)
  static let requestAction = DeskAction("requesting a reset", tier: .tier1)
  static let approveAction = DeskAction("approving a reset request", tier: .tier2)
  static let listAction = DeskAction("listing reset requests", tier: .tier1)
  static let withdrawAction = DeskAction("withdrawing a reset request", tier: .tier1)

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
    // The plan is tier 1's to see; the reset is tier 2's.
    let json: String = try desk(dryRun ? planAction : resetAction, on: db) {
      let query: Query =
        dryRun
        ? """
        SELECT hms2fa_api.plan_reset(\(account.value), \(ticket.value), \(verifiedVia.rawValue), \(reason))::text
          AS result
        """
        : """
        SELECT hms2fa_api.reset_enrollment(\(account.value), \(ticket.value), \(verifiedVia.rawValue), \(reason),
                                           false, \(expectedPlan)::text)::text AS result
        """
      return try db.queryFirst(query)?.decode("result") ?? "{}"
    }
    return try decode(json)
  }

  /// Files the reset of the plan the agent confirmed (`expectedPlan`) as a pending request that
  /// a tier-2 agent other than the requester approves: how a tier-1 agent hands a reset on.
  ///
  /// - Throws: `DeskError` 65 (disabled, no fresh identity proof for code-on-file), 67, 75 (the
  ///   plan changed since it was shown, or a request is pending already), 77.
  public static func request(
    _ account: AccountID, ticket: Ticket, verifiedVia: IdentityVerification, reason: String?, expectedPlan: String,
    on db: Connection
  ) throws(DeskError) -> ResetOutcome {
    let json: String = try desk(requestAction, on: db) {
      let request: Query = """
        SELECT hms2fa_api.request_reset(\(account.value), \(ticket.value), \(verifiedVia.rawValue), \(reason),
                                        \(expectedPlan))::text AS result
        """
      return try db.queryFirst(request)?.decode("result") ?? "{}"
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
               array_to_string(approval_needed, ',') AS approval_needed, created_at, expires_at, state, approved_by,
               withdrawn_by
          FROM hms2fa_api.reset_requests(\(all))
        """
      ).map { row in
        ResetRequest(
          requestID: try row.decode("request_id"), accountID: try row.decode("account_id"),
          requestedBy: try row.decode("requested_by"), ticket: try row.decode("ticket"),
          verifiedVia: try row.decode("verified_via"), reason: try row.decode("reason"),
          approvalNeeded: try row.decode("approval_needed", as: String.self).split(separator: ",").map(String.init),
          createdAt: try row.decode("created_at"), expiresAt: try row.decode("expires_at"),
          state: try row.decode("state"), approvedBy: try row.decode("approved_by"),
          withdrawnBy: try row.decode("withdrawn_by"))
      }
    }
  }

  /// One request of the last 30 days (or still pending).
  ///
  /// - Throws: `DeskError` 65 when there is none, 77 without tier1.
  public static func request(_ id: Int64, on db: Connection) throws(DeskError) -> ResetRequest {
    guard let request = try requests(all: true, on: db).first(where: { $0.requestID == id }) else {
      throw .badData("there is no reset request \(id) of the last 30 days; hms2fa-admin enrollment requests lists them")
    }
    return request
  }

  /// Withdraws a pending request: its requester, or any tier-2 agent.
  ///
  /// - Throws: `DeskError` 65 (no such request, or no longer pending), 77 (someone else's request,
  ///   without tier2).
  public static func withdraw(_ id: Int64, ticket: Ticket, reason: String?, on db: Connection) throws(DeskError) {
    try desk(withdrawAction, on: db) {
      let withdraw: Query = "SELECT hms2fa_api.withdraw_reset(\(id), \(ticket.value), \(reason))"
      _ = try db.execute(withdraw)
    }
  }
}
