import ArgumentParser
import HelpDesk

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

struct DeliveryCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "delivery",
    abstract: "The delivery service: the only process that makes secrets and sends messages.",
    subcommands: [Run.self, Status.self]
  )

  struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "run",
      abstract: "Send queued activation links, codes and notices, until stopped (role hms2fa_delivery).",
      discussion: """
        Desk commands queue messages in the database; this service makes each link's token or \
        code from the operating system's random source, stores only its hash, sends the \
        message and records what happened. It wakes when a message is queued (LISTEN/NOTIFY) \
        and at least every --idle. A temporary failure (a gateway that timed out or exited 75, \
        a full disk) is tried again after --retry-after, doubling each time, up to \
        --max-attempts; a failure for good revokes the link or cancels the code.

        It reads the transports, which desk commands never read:
          HMS2FA_MAILER          sendmail (default), sendmail:/path/to/program or maildir:/path/to/dir
          HMS2FA_SMS             command:/path/to/program or spool:/path/to/dir (unset: codes fail)
          HMS2FA_MAIL_FROM       the From address
          HMS2FA_ACTIVATION_URL  the base of activation links (https)
          HMS2FA_DELIVERY_TIMEOUT  how long a transport may take (default 30s)

        SIGTERM or Ctrl-C stops it after the message in hand. One line per message goes to \
        stderr: its id, kind, attempt and outcome, never its text or secret.

        Examples:
          hms2fa-admin delivery run
          hms2fa-admin delivery run --once
        """
    )

    @Flag(help: "Send what is due now, then exit (for cron and tests).")
    var once = false

    @Option(help: "Attempts in all before a message fails for good (1–20).")
    var maxAttempts = 6

    @Option(
      help: ArgumentHelp("The wait after the first failed attempt; it doubles each time.", valueName: "duration"))
    var retryAfter = "30s"

    @Option(help: ArgumentHelp("The longest wait between attempts.", valueName: "duration"))
    var longestWait = "30m"

    @Option(help: ArgumentHelp("Look for due retries at least this often.", valueName: "duration"))
    var idle = "5s"

    @OptionGroup var global: GlobalOptions

    func validate() throws {
      guard (1...20).contains(maxAttempts) else { throw ValidationError("--max-attempts must be 1 to 20") }
      for (name, text) in [("--retry-after", retryAfter), ("--longest-wait", longestWait), ("--idle", idle)] {
        do {
          _ = try DeskDuration(parsing: text)
        } catch {
          throw ValidationError("\(name): \(error.message)")
        }
      }
    }

    func run() throws {
      let policy = RetryPolicy(
        maxAttempts: maxAttempts, firstWait: Double(try DeskDuration(parsing: retryAfter).seconds),
        longestWait: Double(try DeskDuration(parsing: longestWait).seconds))
      let transports = try DeliveryTransports.fromEnvironment(ProcessInfo.processInfo.environment)
      let console = global.console
      installStopHandlers()
      let db = try global.connect()
      var counts: [String: Int] = [:]
      let report = { (r: DeliveryReport) in
        counts[r.outcome, default: 0] += 1
        console.note(
          "delivery: message \(r.messageID) (\(r.kind), \(r.channel)) attempt \(r.attempt): \(r.outcome)"
            + (r.retryAfter.map { ", next try in \(DeskDuration(seconds: Int64($0)))" } ?? "")
            + (r.reason.map { " (\($0))" } ?? ""))
      }
      if once {
        try DeliveryService.drain(
          on: db, transports: transports, policy: policy, shouldStop: { stopSignal.pointee != 0 }, report: report)
      } else {
        console.note("delivery: running as \(db.user); waiting for messages")
        try DeliveryService.run(
          on: db, transports: transports, policy: policy, idle: Double(try DeskDuration(parsing: idle).seconds),
          shouldStop: { stopSignal.pointee != 0 }, report: report)
      }
      let sent = counts["sent"] ?? 0
      let retry = counts["retry"] ?? 0
      let failed = counts["failed"] ?? 0
      console.emit(.object([("sent", .int(sent)), ("retry", .int(retry)), ("failed", .int(failed))])) {
        "delivery: \(sent) sent, \(retry) to try again, \(failed) failed"
      }
    }
  }

  struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "status",
      abstract: "List messages not sent yet, and those that failed recently (tier1, operator).",
      discussion: """
        Never shows what a message carries: no link, no code, no text.

        Example:
          hms2fa-admin delivery status
          hms2fa-admin delivery status --days 30 --json
        """
    )

    @Option(help: "Failed messages of the last this many days (1–366).")
    var days = 7

    @OptionGroup var global: GlobalOptions

    func validate() throws {
      guard (1...366).contains(days) else { throw ValidationError("--days must be 1 to 366") }
    }

    func run() throws {
      let db = try global.connectForLookup()
      let messages = try Outbox.status(days: days, on: db)
      global.console.emit(
        .object([
          (
            "messages",
            .array(
              messages.map { m in
                .object([
                  ("message_id", .int(m.messageID)), ("kind", .string(m.kind)), ("channel", .string(m.channel)),
                  ("account_id", .string(m.accountID)), ("recipient", .string(m.recipient)),
                  ("ticket", .string(m.ticket)), ("queued_by", .string(m.queuedBy)),
                  ("queued_at", .string(m.queuedAt.iso8601UTC())), ("state", .string(m.state)),
                  ("attempts", .int(m.attempts)), ("next_attempt_at", .string(m.nextAttemptAt.iso8601UTC())),
                  ("last_error", .string(m.lastError)), ("ended_at", .string(m.endedAt?.iso8601UTC())),
                ])
              })
          )
        ])
      ) {
        guard !messages.isEmpty else { return "no message is waiting, and none failed in the last \(days) day(s)" }
        return table(
          ["MESSAGE", "KIND", "TO", "ACCOUNT", "TICKET", "QUEUED", "STATE", "TRIES", "NEXT / ENDED", "LAST ERROR"],
          messages.map { m in
            [
              String(m.messageID), m.kind, m.recipient, m.accountID, m.ticket, DeskTime.cell(m.queuedAt), m.state,
              String(m.attempts), DeskTime.cell(m.endedAt ?? m.nextAttemptAt), shown(m.lastError),
            ]
          })
      }
    }
  }
}
