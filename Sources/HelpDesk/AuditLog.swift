import Postgres

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
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

/// A head of the chain as `audit anchor` wrote it outside the database: one line,
/// `2026-12-07T02:30:05Z event=1234 hash=<64 hex digits> database=hms2fa`.
public struct AuditAnchor: Sendable, Equatable {
  public var eventID: Int64
  /// SHA-256 of the event, hex.
  public var hash: String
  /// When it was anchored, ISO 8601.
  public var at: String
  public var database: String

  public init(eventID: Int64, hash: String, at: String, database: String) {
    self.eventID = eventID
    self.hash = hash
    self.at = at
    self.database = database
  }

  /// Reads one line of an anchor file; nil when it isn't one.
  public init?(line: some StringProtocol) {
    var fields: [String: String] = [:]
    let words = line.split(separator: " ")
    guard let first = words.first else { return nil }
    for word in words.dropFirst() {
      guard let equals = word.firstIndex(of: "=") else { return nil }
      fields[String(word[..<equals])] = String(word[word.index(after: equals)...])
    }
    guard let id = fields["event"].flatMap({ Int64($0) }), id >= 0, let hash = fields["hash"], hash.count == 64,
      hash.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
    else { return nil }
    self.init(eventID: id, hash: hash, at: String(first), database: fields["database"] ?? "")
  }

  public var line: String { "\(at) event=\(eventID) hash=\(hash) database=\(database)" }
}

/// A membership of a tier role that the record doesn't account for.
public struct UnrecordedMembership: Sendable, Equatable {
  public var login: String
  public var role: String
  public var problem: String
}

/// An anchored head that is no longer on the chain.
public struct AnchorMismatch: Sendable {
  public var anchor: AuditAnchor
  /// The event's hash now; nil when the event is gone.
  public var hashNow: String?
  /// The last anchor before it that still holds: the rewrite came after that event.
  public var lastHolding: AuditAnchor?
}

extension AuditLog {
  static let anchorAction = DeskAction("anchoring the audit chain", tier: .batch)
  static let membershipAction = DeskAction("checking tier memberships against the record", tier: .auditor)

  /// Appends the chain's head to `file` (created 0640 if missing, opened for appending only,
  /// flushed to disk) and one line to syslog, after checking the chain from its first event.
  ///
  /// - Throws: `DeskError` 65 when the chain is broken (nothing is anchored), 74 when the file
  ///   can't be written, 77 without hms2fa_batch.
  public static func anchor(to file: String, on db: Connection) throws(DeskError) -> AuditAnchor {
    let head = try desk(anchorAction, on: db) {
      guard
        let row = try db.queryFirst(
          "SELECT event_id, hash, at, ok, problem, current_database()::text AS database FROM hms2fa_api.audit_head()")
      else { throw DeskError(.software, "internal error: audit_head returned nothing") }
      return (
        anchor: AuditAnchor(
          eventID: try row.decode("event_id"), hash: try row.decode("hash"),
          at: try row.decode("at", as: Date.self).iso8601UTC(), database: try row.decode("database")),
        ok: try row.decode("ok", as: Bool.self), problem: try row.decode("problem", as: String?.self)
      )
    }
    guard head.ok else {
      throw .badData(
        "the audit chain is broken (\(head.problem ?? "?")); nothing was anchored: run hms2fa-admin audit verify")
    }
    try appendLine(head.anchor.line, to: file)
    head.anchor.line.withCString { line in
      openlog("hms2fa-admin", LOG_PID, LOG_AUTHPRIV)
      withVaList([line]) { vsyslog(LOG_NOTICE, "audit anchor %s", $0) }
      closelog()
    }
    return head.anchor
  }

  static func appendLine(_ line: String, to file: String) throws(DeskError) {
    let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o640)
    guard fd >= 0 else { throw DeskError(.ioError, "cannot open the anchor file \(file): \(errnoText())") }
    let bytes = Array((line + "\n").utf8)
    var written = 0
    while written < bytes.count {
      let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress.map { $0 + written }, bytes.count - written) }
      if n < 0 && errno == EINTR { continue }
      guard n > 0 else {
        let reason = errnoText()
        close(fd)
        throw DeskError(.ioError, "cannot write the anchor file \(file): \(reason)")
      }
      written += n
    }
    let synced = fsync(fd) == 0
    let reason = errnoText()
    close(fd)
    guard synced else { throw DeskError(.ioError, "cannot flush the anchor file \(file) to disk: \(reason)") }
  }

  /// The anchors in `file`, oldest first.
  ///
  /// - Throws: `DeskError` 64 when it can't be read, 65 for a line that isn't an anchor.
  public static func readAnchors(_ file: String) throws(DeskError) -> [AuditAnchor] {
    let text: String
    do {
      text = try String(contentsOfFile: file, encoding: .utf8)
    } catch {
      throw .usage("cannot read the anchor file \(quoted(file)); give the file audit anchor writes")
    }
    var anchors: [AuditAnchor] = []
    for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
    where !line.isEmpty {
      guard let anchor = AuditAnchor(line: line) else {
        throw .badData("line \(number + 1) of the anchor file \(quoted(file)) is not an anchor: the file was altered")
      }
      anchors.append(anchor)
    }
    return anchors
  }

  /// Compares every anchor with the chain: the first (lowest event) whose event is gone or has
  /// another hash now, or nil when all hold.
  ///
  /// - Throws: `DeskError` 77 without the auditor tier.
  public static func check(_ anchors: [AuditAnchor], on db: Connection) throws(DeskError) -> AnchorMismatch? {
    guard !anchors.isEmpty else { return nil }
    let ids = Array(Set(anchors.map(\.eventID))).sorted()
    let now: [Int64: String] = try desk(.verifyAudit, on: db) {
      var hashes: [Int64: String] = [:]
      let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
      let current: Query = "SELECT event_id, hash FROM hms2fa_api.audit_hashes(\(list)::bigint[])"
      for row in try db.query(current) {
        hashes[try row.decode("event_id")] = try row.decode("hash")
      }
      return hashes
    }
    let ordered = anchors.sorted { $0.eventID < $1.eventID }
    var holding: AuditAnchor?
    for anchor in ordered {
      if now[anchor.eventID] != anchor.hash {
        return AnchorMismatch(anchor: anchor, hashNow: now[anchor.eventID], lastHolding: holding)
      }
      holding = anchor
    }
    return nil
  }

  /// Memberships of the tier roles that no recorded grant accounts for, however they were made.
  ///
  /// - Throws: `DeskError` 77 without the auditor (or batch, or operator) role.
  public static func unrecordedMemberships(on db: Connection) throws(DeskError) -> [UnrecordedMembership] {
    try desk(membershipAction, on: db) {
      try db.query("SELECT login, role, problem FROM hms2fa_api.unrecorded_memberships()").map { row in
        UnrecordedMembership(
          login: try row.decode("login"), role: try row.decode("role"), problem: try row.decode("problem"))
      }
    }
  }
}
