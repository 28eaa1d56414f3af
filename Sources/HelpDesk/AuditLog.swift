import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// One audit event, as `audit log` shows it.
public struct AuditEvent: Sendable {
  public var eventId: Int64
  public var at: Date
  public var actor: String
  public var action: String
  public var accountId: String?
  public var ticket: String?
  public var reason: String?
  /// The event's details, JSON text.
  public var details: String
}

/// Which events `audit log` shows.
public struct AuditFilter: Sendable {
  public var account: AccountID?
  public var actor: String?
  public var since: Date?
  public var limit: Int

  public init(account: AccountID? = nil, actor: String? = nil, since: Date? = nil, limit: Int = 50) {
    self.account = account
    self.actor = actor
    self.since = since
    self.limit = limit
  }
}

/// The result of walking the hash chain.
public struct AuditVerification: Sendable {
  public var events: Int64
  public var ok: Bool
  public var firstBadEvent: Int64?
  public var problem: String?
  /// The hash of the last event: an operator may note it elsewhere to catch a rewrite of the
  /// whole chain by someone able to recompute it.
  public var headHash: String?
}

/// Reading and verifying the audit log.
public enum AuditLog {
  /// Events matching `filter`, oldest first (the most recent `limit` of them).
  ///
  /// - Throws: `DeskError` 64 for a bad limit or actor, 77 without tier1 or auditor.
  public static func events(_ filter: AuditFilter, on db: Connection) throws(DeskError) -> [AuditEvent] {
    guard (1...10_000).contains(filter.limit) else { throw .usage("--limit must be between 1 and 10000") }
    if let actor = filter.actor {
      guard !actor.isEmpty, actor.utf8.count <= 63, !actor.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
        throw .usage("\(quoted(actor)) is not a database login name")
      }
    }
    let events = try desk(.readAudit, on: db) {
      try db.query(
        """
        SELECT event_id, at, actor, action, account_id, ticket, reason, details::text AS details
          FROM hms2fa_api.audit_events
         WHERE (\(filter.account?.value)::text IS NULL OR account_id = \(filter.account?.value))
           AND (\(filter.actor)::text IS NULL OR actor = \(filter.actor))
           AND (\(filter.since)::timestamptz IS NULL OR at >= \(filter.since))
         ORDER BY event_id DESC
         LIMIT \(filter.limit)
        """
      ).map { row in
        AuditEvent(
          eventId: try row.decode("event_id"), at: try row.decode("at"), actor: try row.decode("actor"),
          action: try row.decode("action"), accountId: try row.decode("account_id"),
          ticket: try row.decode("ticket"), reason: try row.decode("reason"),
          details: try row.decode("details"))
      }
    }
    return events.reversed()
  }

  /// Walks the whole chain.
  ///
  /// - Throws: `DeskError` 77 without the auditor tier; a broken chain is a result, not an error.
  public static func verify(on db: Connection) throws(DeskError) -> AuditVerification {
    try desk(.verifyAudit, on: db) {
      guard let row = try db.queryFirst("SELECT * FROM hms2fa_api.audit_verify()") else {
        throw DeskError(.software, "internal error: audit_verify returned nothing")
      }
      return AuditVerification(
        events: try row.decode("events"), ok: try row.decode("ok"),
        firstBadEvent: try row.decode("first_bad_event"), problem: try row.decode("problem"),
        headHash: try row.decode("head_hash"))
    }
  }
}
