import ArgumentParser
import HelpDesk
import Postgres

/// Options every command takes.
struct GlobalOptions: ParsableArguments {
  @Option(
    name: .customLong("database"),
    help: ArgumentHelp(
      "Connection string or URI (no password: use ~/.pgpass or PGPASSWORD).",
      discussion: "Else HMS2FA_DATABASE_URL, else libpq's defaults (PGHOST, PGSERVICE, …).",
      valueName: "conninfo"))
  var database: String?

  @Flag(help: "Print exactly one JSON document on stdout; messages go to stderr.")
  var json = false

  var console: Console { Console(json: json) }

  /// Connects to the database these options name.
  func connect() throws -> Connection {
    try DatabaseTarget.resolve(commandLine: database).connect()
  }
}

/// The options of every command that changes something.
struct ChangeOptions: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "The service-desk ticket this change is made under (1–64 printable characters).", valueName: "ticket"))
  var ticket: String

  var parsedTicket: Ticket {
    get throws { try Ticket(parsing: ticket) }
  }

  func validate() throws {
    do {
      _ = try Ticket(parsing: ticket)
    } catch {
      throw ValidationError(error.message)
    }
  }
}
