import ArgumentParser
import HelpDesk

struct StaffCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "staff",
    abstract: "Grant staff logins their tier (operators).",
    discussion: """
      Tiers are database group roles: tier1 (look up, verify phones, send links), tier2 \
      (also resets and approvals), batch (nightly jobs), auditor (read and verify the audit \
      log), signin (the sign-in service), delivery (the delivery service's own login: the only \
      one that makes secrets and sends messages; never a person's). The login must already \
      exist (CREATE ROLE … LOGIN).

      An operator is a member of hms2fa_operator and needs no CREATEROLE: the database grants \
      the tier itself (hms2fa_api.change_staff) and records it in the audit log, in one \
      transaction. Granting a membership that exists already records it: how a membership that \
      audit verify reports as unrecorded is adopted, once checked.
      """,
    subcommands: [Grant.self, Revoke.self, List.self]
  )

  struct Grant: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "grant",
      abstract: "Give a database login a tier.",
      discussion: """
        Example:
          hms2fa-admin staff grant agent_alice --role tier1 --ticket INC0012345
        """
    )

    @Argument(help: "The staff member's database login.")
    var login: String

    @Option(help: "tier1, tier2, batch, auditor or signin.")
    var role: Tier

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connect()
      try Staff.grant(role, to: login, ticket: try change.parsedTicket, on: db)
      global.console.emit(
        .object([("login", .string(login)), ("role", .string(role.rawValue)), ("granted", true)])
      ) { "\(shown(login)) now has \(role.rawValue)" }
    }
  }

  struct Revoke: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "revoke",
      abstract: "Take a tier away from a database login.",
      discussion: """
        Example:
          hms2fa-admin staff revoke agent_alice --role tier1 --ticket INC0012399
        """
    )

    @Argument(help: "The staff member's database login.")
    var login: String

    @Option(help: "tier1, tier2, batch, auditor or signin.")
    var role: Tier

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connect()
      try Staff.revoke(role, from: login, ticket: try change.parsedTicket, on: db)
      global.console.emit(
        .object([("login", .string(login)), ("role", .string(role.rawValue)), ("granted", false)])
      ) { "\(shown(login)) no longer has \(role.rawValue)" }
    }
  }

  struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "list",
      abstract: "List the logins that hold a tier.",
      discussion: """
        Example:
          hms2fa-admin staff list --json
        """
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connectForLookup()
      let members = try Staff.list(on: db)
      global.console.emit(
        .object([
          (
            "staff",
            .array(members.map { .object([("login", .string($0.login)), ("role", .string($0.tier.rawValue))]) })
          )
        ])
      ) {
        members.isEmpty
          ? "no logins hold a tier yet"
          : table(["LOGIN", "ROLE"], members.map { [shown($0.login), $0.tier.rawValue] })
      }
    }
  }
}
