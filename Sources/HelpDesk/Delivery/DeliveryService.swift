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

/// Where the delivery service sends messages, read from its own environment: no desk command
/// reads these.
public struct DeliveryTransports: Sendable {
  public var mailer: Mailer
  /// nil when HMS2FA_SMS is unset: codes then fail, and what they carried is cancelled.
  public var sms: SMSGateway?
  public var settings: DeliverySettings

  public init(mailer: Mailer, sms: SMSGateway?, settings: DeliverySettings) {
    self.mailer = mailer
    self.sms = sms
    self.settings = settings
  }

  /// `HMS2FA_MAILER`, `HMS2FA_SMS`, `HMS2FA_MAIL_FROM`, `HMS2FA_ACTIVATION_URL`, ….
  ///
  /// - Throws: a configuration `DeskError` (78) for a setting that can't be used.
  public static func fromEnvironment(_ environment: [String: String]) throws(DeskError) -> DeliveryTransports {
    let sms: SMSGateway? =
      (environment["HMS2FA_SMS"] ?? "").isEmpty ? nil : try SMSGateway.fromEnvironment(environment)
    return DeliveryTransports(
      mailer: try Mailer.fromEnvironment(environment), sms: sms,
      settings: try DeliverySettings.fromEnvironment(environment))
  }
}

/// How often, and how long after, the service tries a message again after a temporary failure.
public struct RetryPolicy: Sendable {
  /// Attempts in all, the first included.
  public var maxAttempts: Int
  /// The wait after the first failed attempt, in seconds; it doubles with each further one.
  public var firstWait: Double
  /// The longest wait between two attempts, in seconds.
  public var longestWait: Double

  public init(maxAttempts: Int = 6, firstWait: Double = 30, longestWait: Double = 1_800) {
    self.maxAttempts = maxAttempts
    self.firstWait = firstWait
    self.longestWait = longestWait
  }

  /// The wait after failed attempt `attempt` (from 1).
  public func wait(after attempt: Int) -> Double {
    min(firstWait * Double(1 << min(max(attempt - 1, 0), 20)), longestWait)
  }
}

/// One message the service handled, for its log line: never its secret, nor its text.
public struct DeliveryReport: Sendable {
  public var messageID: Int64
  public var kind: String
  public var channel: String
  public var attempt: Int
  /// `sent`, `retry` or `failed`.
  public var outcome: String
  public var reason: String?
  /// For `retry`: seconds until the next attempt.
  public var retryAfter: Double?
}

/// The delivery service: the only process that makes secrets and sends messages.
///
/// Each message goes in three steps. (1) In one transaction it is claimed for a lease, its
/// secret made from the OS's CSPRNG and only the hash stored, and committed, so that the link or
/// code works before the person can receive it. (2) It is handed to the transport, outside any
/// transaction. (3) The outcome is recorded; a failure for good revokes what it carried. A
/// service killed between (1) and (3) leaves the message claimed until the lease runs out; then
/// it is sent again, with a new secret that replaces the first and the same Message-ID. Once an
/// outcome is recorded, the message is never sent again.
public enum DeliveryService {
  static let action = DeskAction("sending queued messages", tier: .delivery)

  /// Sends every message that is due, one after the other, until none is left or `shouldStop`
  /// says so; returns how many it handled.
  ///
  /// - Throws: `DeskError`: 77 without hms2fa_delivery, 69 when the database is lost.
  @discardableResult
  public static func drain(
    on db: Connection, transports: DeliveryTransports, policy: RetryPolicy = RetryPolicy(),
    shouldStop: () -> Bool = { false }, report: (DeliveryReport) -> Void = { _ in }
  ) throws(DeskError) -> Int {
    var handled = 0
    while !shouldStop(), let result = try deliverNext(on: db, transports: transports, policy: policy) {
      report(result)
      handled += 1
    }
    return handled
  }

  /// Runs until `shouldStop`: drains the outbox, then sleeps until a desk function queues a
  /// message (LISTEN hms2fa_outbox) or `idle` seconds pass (a retry may have come due).
  ///
  /// - Throws: as `drain`.
  public static func run(
    on db: Connection, transports: DeliveryTransports, policy: RetryPolicy = RetryPolicy(), idle: Double = 5,
    shouldStop: () -> Bool, report: (DeliveryReport) -> Void
  ) throws(DeskError) {
    _ = try desk(action, on: db) { try db.execute("LISTEN hms2fa_outbox") }
    while !shouldStop() {
      try drain(on: db, transports: transports, policy: policy, shouldStop: shouldStop, report: report)
      if shouldStop() { break }
      // In slices of a second: a stop signal may land on another thread than this wait's.
      let until = DeliveryProgram.monotonicSeconds() + idle
      do {
        while !shouldStop(), DeliveryProgram.monotonicSeconds() < until,
          try db.waitForNotification(timeout: min(1, until - DeliveryProgram.monotonicSeconds())) == nil
        {}
      } catch {
        throw deskError(error, doing: action, on: db)
      }
    }
  }

  /// Claims the next due message and sends it; nil when none is due.
  static func deliverNext(
    on db: Connection, transports: DeliveryTransports, policy: RetryPolicy
  ) throws(DeskError) -> DeliveryReport? {
    let lease = Int64(transports.settings.timeout) + 30
    enum Secret {
      case token(SecretToken)
      case code(SecretCode)
    }
    let claimed: (message: OutboxMessage, secret: Secret?)? = try desk(action, on: db) {
      try db.transaction {
        guard
          let row = try db.queryFirst(
            """
            SELECT message_id, kind, channel, recipient, ticket, body::text AS body, attempts, queued_at, expires_at
              FROM hms2fa_api.claim_message(make_interval(secs => \(lease)::bigint))
            """)
        else { return nil }
        let message = try OutboxMessage(row)
        switch message.kind {
        case .activationLink:
          let token = Secrets.newToken()
          let store: Query = "SELECT hms2fa_api.store_message_secret(\(message.messageID), \(token.hash), NULL::bytea)"
          try db.execute(store)
          return (message, .token(token))
        case .phoneCode:
          let code = Secrets.newCode()
          let salt = Secrets.randomBytes(16)
          let hash = code.saltedHash(salt)
          let store: Query = "SELECT hms2fa_api.store_message_secret(\(message.messageID), \(hash), \(salt))"
          try db.execute(store)
          return (message, .code(code))
        case .resetNotice, .releaseNotice:
          return (message, nil)
        }
      }
    }
    guard let (message, secret) = claimed else { return nil }

    var failure: DeliveryFailure?
    do throws(DeliveryFailure) {
      switch secret {
      case .token(let token):
        let link = transports.settings.activationURL + "/" + token.text
        try transports.mailer.deliver(
          try message.email(from: transports.settings, link: link), bounce: transports.settings.bounce,
          timeout: transports.settings.timeout, secrets: [token.text])
      case .code(let code):
        guard let gateway = transports.sms else {
          throw DeliveryFailure(
            "no SMS or voice gateway is configured for the delivery service (HMS2FA_SMS)", temporary: false)
        }
        try gateway.deliver(
          try message.phoneMessage(code: code), timeout: transports.settings.timeout,
          secrets: [code.digits, OutboxMessage.spoken(code)])
      case nil:
        try transports.mailer.deliver(
          try message.email(from: transports.settings), bounce: transports.settings.bounce,
          timeout: transports.settings.timeout)
      }
    } catch {
      failure = error
    }

    var outcome = "sent"
    var retryAfter: Double?
    if let failure {
      let wait = policy.wait(after: message.attempt)
      let expired = message.expiresAt.map { $0.timeIntervalSinceNow <= wait } ?? false
      if failure.temporary, message.attempt < policy.maxAttempts, !expired {
        outcome = "retry"
        retryAfter = wait
      } else {
        outcome = "failed"
      }
    }
    let reason = failure.map { f in
      outcome == "failed" && f.temporary ? "\(f.reason) (attempt \(message.attempt), giving up)" : f.reason
    }
    _ = try desk(action, on: db) {
      try db.execute(
        """
        SELECT hms2fa_api.record_delivery(\(message.messageID), \(message.attempt), \(outcome), \(reason),
                                          make_interval(secs => \(retryAfter.map { Int64($0) })::bigint))
        """)
    }
    return DeliveryReport(
      messageID: message.messageID, kind: message.kind.rawValue, channel: message.channel, attempt: message.attempt,
      outcome: outcome, reason: reason, retryAfter: retryAfter)
  }
}
