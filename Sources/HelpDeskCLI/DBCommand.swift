import ArgumentParser
import HelpDesk

struct DBCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "db",
    abstract: "Install and inspect the registry's schema (operators).",
    subcommands: [Migrate.self, Status.self]
  )

  struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "migrate",
      abstract: "Apply the pending migrations, each in its own transaction.",
      discussion: """
        Needs a login that may create roles and schemas (a superuser, or CREATEROLE with \
        CREATE on the database). Running it again changes nothing. It refuses to run when a \
        migration already applied has since changed.

        Example:
          hms2fa-admin db migrate --database "host=db1 dbname=hms2fa user=ops"
        """
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connect()
      let console = global.console
      let applied = try Migrations.migrate(on: db) { console.note($0) }
      console.emit(
        .object([
          ("applied", .array(applied.map { .string($0) })),
          ("migrations", .int(Int64(Migrations.all.count))),
        ])
      ) {
        applied.isEmpty
          ? "up to date: \(Migrations.all.count) migrations applied"
          : "applied \(applied.count) migration(s); \(Migrations.all.count) in all"
      }
    }
  }

  struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "status",
      abstract: "List applied and pending migrations.",
      discussion: """
        States: applied, pending, changed (edited after it was applied: restore it), unknown \
        (applied by a newer build of the tool).

        Example:
          hms2fa-admin db status --json
        """
    )

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connectForLookup()
      let states = try Migrations.status(on: db)
      global.console.emit(
        .object([
          (
            "migrations",
            .array(
              states.map { s in
                .object([
                  ("name", .string(s.name)), ("state", .string(s.state.rawValue)),
                  ("applied_at", .string(s.appliedAt)), ("applied_by", .string(s.appliedBy)),
                ])
              })
          ),
          ("pending", .int(states.filter { $0.state == .pending }.count)),
        ])
      ) {
        table(
          ["MIGRATION", "STATE", "APPLIED AT", "BY"],
          states.map { [$0.name, $0.state.rawValue, $0.appliedAt ?? "", $0.appliedBy ?? ""] })
      }
    }
  }
}
