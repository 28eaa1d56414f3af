import ArgumentParser
import HelpDesk

struct UserCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "user",
    abstract: "Look people up.",
    subcommands: [Show.self, Find.self]
  )

  struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "show",
      abstract: "Show one person: enrollment, devices, browsers, recent audit.",
      discussion: """
        Says whether "Start setup" is visible (only when nothing is enrolled and the account is \
        active), lists every device including retired ones, counts remembered browsers, and ends \
        with the next step for what it shows (JSON: next_step), naming the command with the \
        ticket of the call (--ticket, else HMS2FA_TICKET).

        Examples:
          hms2fa-admin user show jd123
          HMS2FA_TICKET=INC0012345 hms2fa-admin user show jane_doe@hms.harvard.edu --json
        """
    )

    @Argument(help: ArgumentHelp("HMS Account ID or email of record.", valueName: "account-id|email"))
    var account: String

    @Option(
      help: ArgumentHelp(
        "The ticket of the call, for the next step's command (else HMS2FA_TICKET).", valueName: "ticket"))
    var ticket: String?

    @OptionGroup var global: GlobalOptions

    func run() throws {
      try ShowCard.run(
        account: account, ticket: ticket, from: LookupTarget(database: global.database, readOnly: global.readOnly),
        console: global.console)
    }
  }

  struct Find: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "find",
      abstract: "Find people whose account id, email or name starts with the text.",
      discussion: """
        Case-insensitive. Exits 67 when nobody matches.

        Examples:
          hms2fa-admin user find jd1
          hms2fa-admin user find "jane d" --json
        """
    )

    @Argument(help: "The start of an account id, email or name.")
    var text: String

    @Option(help: "Show at most this many (1–1000).")
    var limit = 50

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connectForLookup()
      let matches = try Lookup.find(text, limit: limit, on: db)
      global.console.emit(
        .object([
          (
            "accounts",
            .array(
              matches.map { m in
                .object([
                  ("account_id", .string(m.accountId)), ("display_name", .string(m.displayName)),
                  ("email", .string(m.email)), ("status", .string(m.status)),
                  ("enrollment", .string(m.enrollment.rawValue)),
                  ("start_setup_visible", .bool(m.enrollment == .notEnrolled && m.status == "active")),
                ])
              })
          ),
          ("truncated", .bool(matches.count == limit)),
        ])
      ) {
        table(
          ["ACCOUNT", "NAME", "EMAIL", "STATUS", "ENROLLMENT"],
          matches.map {
            [shown($0.accountId), shown($0.displayName), shown($0.email), $0.status, $0.enrollment.rawValue]
          })
          + (matches.count == limit ? "\n(first \(limit) shown; narrow the search or raise --limit)" : "")
      }
    }
  }
}
