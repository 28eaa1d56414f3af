import ArgumentParser
import HelpDesk

struct AuditCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "audit",
    abstract: "Read and verify the audit log.",
    subcommands: [Log.self, Verify.self]
  )

  struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "log",
      abstract: "Show audit events, oldest first (the most recent --limit of them).",
      discussion: """
        The actor is the database login that made the change.

        Examples:
          hms2fa-admin audit log --account jd123
          hms2fa-admin audit log --actor agent_bob --since 24h --json
          hms2fa-admin audit log --since 2026-11-01 --limit 500
        """
    )

    @Option(help: "Only events about this account.")
    var account: String?

    @Option(help: "Only events made by this database login.")
    var actor: String?

    @Option(help: "Only events since then: a duration back from now (24h, 7d) or a date (2026-11-01).")
    var since: String?

    @Option(help: "At most this many events (1–10000).")
    var limit = 50

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let filter = AuditFilter(
        account: try account.map { try AccountID(parsing: $0) }, actor: actor,
        since: try since.map { try PointInTime(parsing: $0).date }, limit: limit)
      let db = try global.connectForLookup()
      let events = try AuditLog.events(filter, on: db)
      global.console.emit(
        .object([
          (
            "events",
            .array(
              events.map { e in
                .object([
                  ("event_id", .int(e.eventId)), ("at", .string(e.at.iso8601UTC(fractionalDigits: 3))),
                  ("actor", .string(e.actor)), ("action", .string(e.action)),
                  ("account_id", .string(e.accountId)), ("ticket", .string(e.ticket)),
                  ("reason", .string(e.reason)), ("details", .raw(e.details)),
                ])
              })
          )
        ])
      ) {
        events.isEmpty
          ? "no audit events match"
          : table(
            ["EVENT", "AT", "ACTOR", "ACTION", "ACCOUNT", "TICKET", "REASON", "DETAILS"],
            events.map { e in
              [
                String(e.eventId), e.at.iso8601UTC(), shown(e.actor), e.action, shown(e.accountId),
                shown(e.ticket), shown(e.reason), shown(e.details),
              ]
            })
      }
    }
  }

  struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "verify",
      abstract: "Check the audit log's hash chain; exit 65 naming the first event that doesn't match.",
      discussion: """
        Each event carries the hash of its predecessor and of its own content, so an event \
        altered, deleted or inserted out of band (even by a superuser) breaks the chain. Note \
        the head hash it prints somewhere else to detect a rewrite of the whole chain.

        Example:
          hms2fa-admin audit verify --json
        """
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connectForLookup()
      let result = try AuditLog.verify(on: db)
      global.console.emit(
        .object([
          ("events", .int(result.events)), ("ok", .bool(result.ok)),
          ("first_bad_event", result.firstBadEvent.map { .int($0) } ?? .null),
          ("problem", .string(result.problem)), ("head_hash", .string(result.headHash)),
        ])
      ) {
        result.ok
          ? "ok: \(result.events) events verified; head \(result.headHash ?? "-")"
          : ""
      }
      if !result.ok {
        throw DeskError(
          .dataError,
          "audit log tampering found: \(result.problem ?? "the chain is broken") "
            + "(\(result.events) events verified before it)")
      }
    }
  }
}
