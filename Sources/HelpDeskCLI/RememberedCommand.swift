import ArgumentParser
import HelpDesk

struct RememberedCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "remembered",
    abstract: "\"Remember me for 30 days\" browsers.",
    subcommands: [List.self, Revoke.self]
  )

  struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "list",
      abstract: "List a person's remembered browsers (active, expired, revoked).",
      discussion: """
        Example:
          hms2fa-admin remembered list jd123
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Flag(help: "Also list expired browsers awaiting the nightly purge.")
    var all = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let db = try global.connectForLookup()
      let id = try key.accountID(on: db)
      let everything = try RememberedBrowsers.list(for: id, on: db)
      let browsers = all ? everything : everything.filter { $0.state != .expired }
      let expired = everything.count - everything.filter { $0.state != .expired }.count
      global.console.emit(
        .object([
          ("account_id", .string(id.value)),
          ("active", .int(browsers.filter { $0.state == .active }.count)),
          ("expired", .int(expired)),
          (
            "browsers",
            .array(
              browsers.map { b in
                .object([
                  ("browser", .string(b.browser)), ("state", .string(b.state.rawValue)),
                  ("created_at", .string(b.createdAt.iso8601UTC())),
                  ("expires_at", .string(b.expiresAt.iso8601UTC())),
                  ("revoked_at", .string(b.revokedAt?.iso8601UTC())),
                ])
              })
          ),
        ])
      ) {
        let expiredNote =
          !all && expired > 0 ? "\n(and \(expired) expired, awaiting the nightly purge: --all lists them)" : ""
        return browsers.isEmpty
          ? "\(id) has no active or revoked remembered browsers" + expiredNote
          : table(
            ["BROWSER", "STATE", "REMEMBERED SINCE", "EXPIRES", "REVOKED"],
            browsers.map {
              [
                shown($0.browser), $0.state.rawValue, DeskTime.cell($0.createdAt), DeskTime.cell($0.expiresAt),
                DeskTime.cell($0.revokedAt),
              ]
            }) + expiredNote
      }
    }
  }

  struct Revoke: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "revoke",
      abstract: "Forget every active remembered browser of a person (tier2).",
      discussion: """
        Each of the person's browsers must pass two-factor authentication again. Use it for a \
        lost or stolen laptop, or a shared computer someone was remembered on.

        Example:
          hms2fa-admin remembered revoke jd123 --ticket INC0012345 --reason "laptop stolen"
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Option(help: "Why, for the audit log.")
    var reason: String?

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let reason = try reason.map { try Reason(parsing: $0).value }
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let revoked = try RememberedBrowsers.revokeAll(for: id, ticket: try change.parsedTicket, reason: reason, on: db)
      global.console.emit(.object([("account_id", .string(id.value)), ("revoked", .int(revoked))])) {
        revoked == 0
          ? "\(id) had no active remembered browsers: nothing to revoke"
          : "revoked \(revoked) remembered browser(s) of \(id)"
      }
    }
  }
}
