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

  // Read by Screen from the command line, as --json is by CLI.run before parsing.
  @Flag(help: "Show every table cell whole, whatever the terminal's width.")
  var wide = false

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
      "The service-desk ticket this change is made under, e.g. INC0012345.",
      discussion: "Else HMS2FA_TICKET: set it once for a call. Checked against HMS2FA_TICKET_PATTERN "
        + "(default \(Ticket.defaultPattern)).", valueName: "ticket"))
  var ticket: String?

  var parsedTicket: Ticket {
    get throws { try Ticket(desk: ticket) }
  }

  func validate() throws {
    do {
      _ = try Ticket(desk: ticket)
    } catch {
      // A setting that is wrong (78) is said when the command runs, with its own exit status.
      guard error.status == .usage else { return }
      throw ValidationError(error.message)
    }
  }
}

/// How long a command that queues a message waits for the delivery service to send it.
struct DeliveryWaitOptions: ParsableArguments {
  @Option(
    help: ArgumentHelp(
      "How long to wait for the delivery service to send the message (0: don't wait; at most 10m).",
      discussion: "Default: HMS2FA_DELIVERY_WAIT, else 15s.", valueName: "duration"))
  var wait: String?

  /// The wait asked for, from --wait or HMS2FA_DELIVERY_WAIT.
  var seconds: Double {
    get throws {
      let text = wait ?? environmentVariable("HMS2FA_DELIVERY_WAIT") ?? "15s"
      let name = wait == nil ? "HMS2FA_DELIVERY_WAIT" : "--wait"
      if text.trimmingASCIISpaces() == "0" { return 0 }
      let seconds: Int64
      do {
        seconds = try DeskDuration(parsing: text).seconds
      } catch {
        throw DeskError.usage("\(name): \(error.message)")
      }
      guard seconds <= 600 else { throw DeskError.usage("\(name) can be at most 10m, not \(text)") }
      return Double(seconds)
    }
  }

  func validate() throws {
    guard let wait else { return }
    do {
      _ = try seconds
    } catch let error as DeskError {
      throw ValidationError(error.message)
    }
  }
}

/// A message a command queued, followed until it was sent or the wait ended.
struct FollowedMessage {
  var messageID: Int64
  var outcome: DeliveryOutcome

  /// Waits up to `wait` seconds for message `id` (see `Outbox.follow`).
  init(_ id: Int64, wait: Double, on db: Connection) throws {
    messageID = id
    outcome = try Outbox.follow(id, wait: wait, on: db)
  }

  /// Waits for message `id` as long as `--wait` says.
  init(_ id: Int64, options: DeliveryWaitOptions, on db: Connection) throws {
    try self.init(id, wait: try options.seconds, on: db)
  }

  /// `message_id`, `delivery` and, when it failed or is still waiting after a failure,
  /// `delivery_error`.
  var fields: [(String, JSONValue)] {
    var fields: [(String, JSONValue)] = [("message_id", .int(messageID)), ("delivery", .string(outcome.name))]
    switch outcome {
    case .failed(let reason): fields.append(("delivery_error", .string(reason)))
    case .queued(let lastError?): fields.append(("delivery_error", .string(lastError)))
    default: break
    }
    return fields
  }

  /// The line the text output ends with: `delivery: sent`, `delivery: queued` or
  /// `delivery: failed (why)`.
  var line: String {
    switch outcome {
    case .sent: "delivery: sent"
    case .queued: "delivery: queued"
    case .failed(let reason): "delivery: failed (\(reason))"
    }
  }

  /// After the output: a warning for a message still queued, exit 69 for one that failed.
  ///
  /// - Parameter failed: what failing means for the person, e.g. "the link was revoked".
  func finish(failed: String, console: Console) throws {
    switch outcome {
    case .sent:
      return
    case .queued(let lastError):
      console.note(
        "hms2fa-admin: warning: message \(messageID) is not sent yet"
          + (lastError.map { " (last try: \($0))" } ?? " (is the delivery service running?)")
          + "; the delivery service keeps trying: see hms2fa-admin delivery status")
    case .failed(let reason):
      throw DeskError(
        .unavailable,
        "message \(messageID) could not be delivered (\(reason)); \(failed); see hms2fa-admin delivery status")
    }
  }
}
