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
        Says whether "Start setup" is visible (only when nothing is enrolled), lists every \
        device including retired ones, and counts remembered browsers.

        Examples:
          hms2fa-admin user show jd123
          hms2fa-admin user show jane_doe@hms.harvard.edu --json
        """
    )

    @Argument(help: ArgumentHelp("HMS Account ID or email of record.", valueName: "account-id|email"))
    var account: String

    @OptionGroup var global: GlobalOptions

    func run() throws {
      try ShowCard.run(
        account: account, from: LookupTarget(database: global.database, readOnly: global.readOnly),
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
                  ("enrollment", .string(m.enrollment)),
                  ("start_setup_visible", .bool(m.enrollment == "not_enrolled")),
                ])
              })
          ),
          ("truncated", .bool(matches.count == limit)),
        ])
      ) {
        table(
          ["ACCOUNT", "NAME", "EMAIL", "STATUS", "ENROLLMENT"],
          matches.map { [shown($0.accountId), shown($0.displayName), shown($0.email), $0.status, $0.enrollment] })
          + (matches.count == limit ? "\n(first \(limit) shown; narrow the search or raise --limit)" : "")
      }
    }
  }
}

/// `user show`: the card of one person, as the parsed command and the quick path print it.
enum ShowCard {
  static func run(account: String, from target: LookupTarget, console: Console) throws {
    let key = try AccountKey(parsing: account)
    let db = try target.connect()
    let card = try Lookup.card(for: key, on: db)
    console.emit(.raw(card.json)) { render(card.account) }
  }

  private static func render(_ a: AccountCard.Account) -> String {
    var lines: [String] = []
    lines.append("\(shown(a.accountId))  \(shown(a.displayName)) <\(shown(a.email))>")
    lines.append("status         \(a.status)\(a.highRisk ? "  (high risk: resets need a second agent)" : "")")
    let setup = a.startSetupVisible ? "\"Start setup\" is shown" : "\"Start setup\" is hidden"
    lines.append("enrollment     \(a.enrollment) (\(setup))")
    lines.append("when I log in  \(a.loginAction)")
    lines.append("")
    lines.append(
      titledTable(
        "devices", ["ID", "KIND", "PLATFORM", "PHONE", "LABEL", "STATE", "DEFAULT", "LAST USED", "RETIRED"],
        a.devices.map { d in
          [
            String(d.deviceId), d.kind, d.platform ?? "-", d.phone ?? "-", shown(d.label), d.state,
            d.isDefault ? "yes" : "", d.lastUsedAt ?? "never",
            d.retiredAt.map { "\($0) \(shown(d.retiredReason))" } ?? "",
          ]
        }))
    let b = a.rememberedBrowsers
    lines.append("")
    lines.append("remembered browsers: \(b.active) active, \(b.expired) expired awaiting purge, \(b.revoked) revoked")
    if let links = a.activationLinks {
      lines.append("")
      lines.append(
        titledTable(
          "activation links", ["LINK", "DEVICE", "SENT", "EXPIRES"],
          links.map { [String($0.linkId), String($0.deviceId), $0.sentAt, $0.expiresAt] }, empty: "none outstanding"))
    }
    lines.append("")
    lines.append(
      titledTable(
        "recent audit", ["EVENT", "AT", "ACTOR", "ACTION", "TICKET"],
        a.recentAudit.map { [String($0.eventId), $0.at, shown($0.actor), $0.action, shown($0.ticket)] }))
    return lines.joined(separator: "\n")
  }
}
