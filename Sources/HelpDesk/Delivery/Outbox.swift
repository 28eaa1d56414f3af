import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// What became of a message a desk command queued, as far as its wait saw.
public enum DeliveryOutcome: Sendable, Equatable {
  /// The transport accepted it.
  case sent
  /// It failed for good (or what it carried ended first); a link or code it carried is revoked.
  case failed(reason: String)
  /// Not sent when the wait ended; the service keeps trying. `lastError` is the last temporary
  /// failure, if any.
  case queued(lastError: String?)

  /// `sent`, `failed` or `queued`, as `--json` prints it.
  public var name: String {
    switch self {
    case .sent: "sent"
    case .failed: "failed"
    case .queued: "queued"
    }
  }
}

/// A message waiting or failed, as `delivery status` lists it: never what it carries.
public struct QueuedMessage: Sendable {
  public var messageID: Int64
  public var kind: String
  public var channel: String
  public var accountID: String
  public var recipient: String
  public var ticket: String
  public var queuedBy: String
  public var queuedAt: Date
  /// `queued`, `sending` or `failed`.
  public var state: String
  public var attempts: Int
  public var nextAttemptAt: Date
  public var lastError: String?
  public var endedAt: Date?
}

/// The desk's side of the outbox: following a message it queued, and listing the queue.
public enum Outbox {
  static let followAction = DeskAction("following a message's delivery", tier: .tier1)
  static let statusAction = DeskAction("listing queued messages", tier: .tier1)

  /// The default wait for the delivery service.
  public static let defaultWait = DeskDuration(seconds: 15)

  /// Waits up to `wait` seconds for the delivery service to report message `id` sent or failed.
  /// It wakes on the service's NOTIFY, so a message normally shows as sent within a second.
  ///
  /// - Throws: `DeskError` 69 when the database is lost, 77 without tier1.
  public static func follow(_ id: Int64, wait: Double, on db: Connection) throws(DeskError) -> DeliveryOutcome {
    try desk(followAction, on: db) {
      // Listening before the first look: a report between the look and the wait still wakes it.
      try db.execute("LISTEN hms2fa_delivery")
      defer { _ = try? db.execute("UNLISTEN hms2fa_delivery") }
      let deadline = DeliveryProgram.monotonicSeconds() + max(0, wait)
      let look: Query = "SELECT state, last_error FROM hms2fa_api.message_state(\(id))"
      while true {
        guard
          let row = try db.queryFirst(look)
        else { throw DeskError(.software, "internal error: message \(id) is not in the outbox") }
        let state: String = try row.decode("state")
        let lastError: String? = try row.decode("last_error")
        switch state {
        case "sent": return .sent
        case "failed", "cancelled": return .failed(reason: lastError ?? state)
        default: break
        }
        let left = deadline - DeliveryProgram.monotonicSeconds()
        if left <= 0 { return .queued(lastError: lastError) }
        _ = try db.waitForNotification(timeout: left)
      }
    }
  }

  /// Messages not sent yet, and those that failed in the last `days` days.
  public static func status(days: Int = 7, on db: Connection) throws(DeskError) -> [QueuedMessage] {
    try desk(statusAction, on: db) {
      try db.query(
        """
        SELECT message_id, kind, channel, account_id, recipient, ticket, queued_by, queued_at, state, attempts,
               next_attempt_at, last_error, ended_at
          FROM hms2fa_api.delivery_status(\(days))
        """
      ).map { row in
        QueuedMessage(
          messageID: try row.decode("message_id"), kind: try row.decode("kind"), channel: try row.decode("channel"),
          accountID: try row.decode("account_id"), recipient: try row.decode("recipient"),
          ticket: try row.decode("ticket"), queuedBy: try row.decode("queued_by"),
          queuedAt: try row.decode("queued_at"), state: try row.decode("state"), attempts: try row.decode("attempts"),
          nextAttemptAt: try row.decode("next_attempt_at"), lastError: try row.decode("last_error"),
          endedAt: try row.decode("ended_at"))
      }
    }
  }
}
