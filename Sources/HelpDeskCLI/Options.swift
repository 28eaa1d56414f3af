import ArgumentParser
import HelpDesk
import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

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

  @Flag(
    help: ArgumentHelp(
      "Look-ups only: prefer a standby (HMS2FA_READ_ONLY_DATABASE_URL if set, else the same servers).",
      discussion: "Changes always go to a writable primary."))
  var readOnly = false

  var console: Console { Console(json: json) }

  /// Connects for a change: to a writable primary only.
  func connect() throws -> Connection {
    if readOnly { throw DeskError.usage("--read-only is for look-ups; this command changes data") }
    return try DatabaseTarget.resolve(commandLine: database).connect(for: .change)
  }

  /// Connects for a look-up: any server that answers, a standby with --read-only (or the
  /// HMS2FA_READ_ONLY_DATABASE_URL servers, when set and --database isn't given).
  func connectForLookup() throws -> Connection {
    try LookupTarget(database: database, readOnly: readOnly).connect()
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

/// How email leaves (HMS2FA_MAILER) and its settings; 78 when a setting is unusable.
func mailDelivery() throws(DeskError) -> (mailer: Mailer, settings: DeliverySettings) {
  let environment = ProcessInfo.processInfo.environment
  return (try Mailer.fromEnvironment(environment), try DeliverySettings.fromEnvironment(environment))
}

/// How text messages and calls leave (HMS2FA_SMS) and the delivery settings; 78 when unset or
/// unusable.
func smsDelivery() throws(DeskError) -> (gateway: SMSGateway, settings: DeliverySettings) {
  let environment = ProcessInfo.processInfo.environment
  return (try SMSGateway.fromEnvironment(environment), try DeliverySettings.fromEnvironment(environment))
}
