import Foundation
import Postgres

/// How a roster import runs.
public struct RosterImportOptions: Sendable {
  /// Disable active accounts that the feed doesn't list.
  public var disableMissing = false
  /// The largest fraction of the active accounts a feed may disable (absent with
  /// `disableMissing`, or marked disabled) before it is refused as a likely truncated export.
  public var maxDisableFraction = 0.05
  /// Apply a feed over that limit all the same; needs a ticket.
  public var force = false
  /// Check and count, show what would change, change nothing.
  public var dryRun = false
  /// Recorded in the audit event; required with `force`.
  public var ticket: Ticket?
  /// At most this many changes are listed by a dry run (the counts are always complete).
  public var diffLimit = 1000

  public init() {}
}

/// One account a feed adds, changes or disables, as a dry run lists it. For a change, the
/// fields that stay as they are are nil in both `before` and `after`.
public struct RosterChange: Sendable {
  public enum Kind: String, Sendable { case added, changed, disabled }

  /// The fields of an account that an import sets.
  public struct Fields: Sendable, Equatable {
    public var displayName: String?
    public var email: String?
    public var status: String?
    public var highRisk: Bool?
  }

  public var kind: Kind
  public var accountID: String
  /// The feed's line; nil for an account the feed doesn't list.
  public var line: Int?
  public var before: Fields
  public var after: Fields
}

/// What a roster import did, or with `dryRun`, would do.
public struct RosterImportResult: Sendable {
  public var source: String
  public var dryRun: Bool
  /// Rows in the feed.
  public var rows: Int
  public var added: Int
  public var changed: Int
  /// Accounts disabled because the feed doesn't list them.
  public var disabled: Int
  public var unchanged: Int
  public var activeBefore: Int
  /// Accounts that go from active to disabled, for whatever reason: what the limit counts.
  public var wouldDisable: Int
  /// More than the limit would be disabled (a real run then needs `force`).
  public var overLimit: Bool
  /// The `accounts.imported` event; nil for a dry run.
  public var eventID: Int64?
  /// Tries it took: more than 1 when a deadlock, or an account another session added, stopped a try.
  public var tries = 1
  /// With `dryRun`: the changes, up to `diffLimit`.
  public var changes: [RosterChange]
}

/// The identity feed's export, opened before the import connects: a missing or unreadable file
/// is said before anything else happens.
public struct RosterFile: Sendable {
  /// The file, as named by the caller.
  public let path: String

  /// - Throws: a usage `DeskError` when the file doesn't exist, is a directory or can't be read.
  public init(path: String) throws(DeskError) {
    self.path = path
    let shownPath = quoted(path, limit: 120)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw .usage("\(shownPath): no such file")
    }
    guard !isDirectory.boolValue else { throw .usage("\(shownPath) is a directory, not a CSV file") }
    guard FileManager.default.isReadableFile(atPath: path) else {
      throw .usage("\(shownPath) can't be read (permissions?)")
    }
  }

  /// Hands `body` the file's bytes from its start, a MiB at a time.
  func read(_ body: ([UInt8]) throws -> Void) throws {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw DeskError.usage("\(quoted(path, limit: 120)) can't be read (permissions?)")
    }
    defer { try? handle.close() }
    while true {
      let data: Data?
      do {
        data = try handle.read(upToCount: 1 << 20)
      } catch {
        throw DeskError.usage("\(quoted(path, limit: 120)) could not be read: \(error.localizedDescription)")
      }
      guard let data, !data.isEmpty else { return }
      try body([UInt8](data))
    }
  }
}

/// Loads the identity feed's export into `hms2fa.accounts`: the batch job behind `accounts
/// import`. The file is streamed as it is into the server's CSV parser
/// (`COPY … FROM STDIN (FORMAT csv)`, into a staging table of the transaction), and
/// `hms2fa_api.import_roster` maps its columns by the header, normalises and checks every row,
/// refuses repeated ids, finds what changes and applies it, all in SQL and in one transaction:
/// a refused or failed import changes nothing.
public enum RosterImport {
  static let action = DeskAction("importing the roster", tier: .batch)

  /// An import stopped by a deadlock with another session, or by an account another session
  /// added during it (nothing was applied), starts again from the file, up to this many tries in
  /// all; then it exits 75, "try again".
  public static let tries = 3

  /// The file, header first, as the five fields of each record.
  static let copy = "COPY pg_temp.roster_raw (f1, f2, f3, f4, f5) FROM STDIN (FORMAT csv)"

  /// Imports `file` (or with `options.dryRun`, reports what importing it would do).
  ///
  /// - Throws: `DeskError` 65 for a malformed or invalid record (naming its line and column), a
  ///   repeated account id, or a feed that would disable more than the limit; 64 for bad options
  ///   or an unreadable file; 75 while another import runs, or when every one of its `tries` was
  ///   stopped; 77 without the batch tier.
  public static func run(
    _ file: RosterFile, options: RosterImportOptions, on db: Connection
  ) throws(DeskError) -> RosterImportResult {
    guard (0...1).contains(options.maxDisableFraction) else {
      throw .usage("the largest fraction to disable is between 0 and 1, e.g. 0.05")
    }
    if options.force && options.ticket == nil && !options.dryRun {
      throw .usage("--force overrides the disable limit and needs --ticket")
    }
    return try desk(action, on: db) {
      var tried = 1
      while true {
        do {
          var result = try db.transaction {
            let result = try load(file, options: options, on: db)
            // A dry run has changed nothing; rolling back says so to the database too.
            if options.dryRun { throw DryRunFinished(result: result) }
            return result
          }
          result.tries = tried
          return result
        } catch let finished as DryRunFinished {
          var result = finished.result
          result.tries = tried
          return result
        } catch let error as PostgresError
          where [SQLState.serializationFailure, SQLState.deadlockDetected].contains(error.sqlState) && tried < tries
        {
          // Nothing was applied: wait a moment and send the file again.
          usleep(UInt32(tried) * 200_000)
          tried += 1
        }
      }
    }
  }

  private struct DryRunFinished: Error {
    var result: RosterImportResult
  }

  private static func load(
    _ file: RosterFile, options: RosterImportOptions, on db: Connection
  ) throws -> RosterImportResult {
    try db.execute("SELECT hms2fa_api.open_roster_import()")
    do {
      try db.copyIn(copy) { writer in try file.read { try writer.write($0) } }
    } catch let error as PostgresError where error.kind == .server {
      throw feedProblem(error)
    }
    let apply: Query = """
      SELECT * FROM hms2fa_api.import_roster(
        \(options.disableMissing), \(String(options.maxDisableFraction))::numeric,
        \(options.force), \(options.dryRun), \(file.path), \(options.ticket?.value))
      """
    guard let row = try db.queryFirst(apply) else {
      throw DeskError(.software, "internal error: import_roster returned nothing")
    }
    var result = RosterImportResult(
      source: file.path, dryRun: options.dryRun, rows: try row.decode("feed_rows"),
      added: try row.decode("added"), changed: try row.decode("changed"), disabled: try row.decode("disabled"),
      unchanged: try row.decode("unchanged"), activeBefore: try row.decode("active_before"),
      wouldDisable: try row.decode("would_disable"), overLimit: try row.decode("over_limit"),
      eventID: try row.decode("event_id"), changes: [])
    if options.dryRun {
      let diff: Query = "SELECT * FROM hms2fa_api.roster_diff(\(max(options.diffLimit, 0)))"
      result.changes = try db.query(diff).map { row in
        RosterChange(
          kind: RosterChange.Kind(rawValue: try row.decode("change")) ?? .changed,
          accountID: try row.decode("account_id"), line: try row.decode("line"),
          before: RosterChange.Fields(
            displayName: try row.decode("old_display_name"), email: try row.decode("old_email"),
            status: try row.decode("old_status"), highRisk: try row.decode("old_high_risk")),
          after: RosterChange.Fields(
            displayName: try row.decode("display_name"), email: try row.decode("email"),
            status: try row.decode("status"), highRisk: try row.decode("high_risk")))
      }
    }
    return result
  }

  /// What the server's CSV parser refused, as the line and column of the file it names (its
  /// error's context reads `COPY roster_raw, line 3, column f2: "…"`), never with the record's
  /// text, which holds a person's name and email.
  static func feedProblem(_ error: PostgresError) -> DeskError {
    // The context starts with the COPY's place; the record's text that follows may hold line
    // breaks and anything else, and is not read.
    let context = error.context ?? ""
    var line: Int?
    var column: Int?
    if context.hasPrefix("COPY "), let range = context.range(of: ", line ") {
      let digits = context[range.upperBound...].prefix { $0.isNumber }
      line = Int(digits)
      let rest = context[range.upperBound...].dropFirst(digits.count)
      if rest.hasPrefix(", column f") {
        column = Int(rest.dropFirst(", column f".count).prefix { $0.isNumber })
      }
    }
    let message = error.message
    let missing = "missing data for column \"f"
    let columns = "account_id,display_name,email,status,high_risk"
    let problem: String
    if line == 1, message.hasPrefix(missing) || message.hasPrefix("extra data") {
      problem = "the header must name the five columns \(columns), each once (in any order)"
    } else if message.hasPrefix(missing) {
      let fields = (Int(message.dropFirst(missing.count).prefix { $0.isNumber }) ?? 1) - 1
      column = fields + 1
      problem =
        "missing; the record has \(fields) field\(fields == 1 ? "" : "s"), the header 5 (a blank line, or a record "
        + "cut short?)"
    } else if message.hasPrefix("extra data after last expected column") {
      column = 6
      problem = "one field too many; the header has 5 (a comma in an unquoted value?)"
    } else if message.hasPrefix("unterminated CSV quoted field") {
      problem = "a quoted field is not closed before the end of the file"
    } else if message.contains("carriage return") || message.contains("newline") {
      problem = "\(message): lines end in CRLF or LF throughout, and a line break inside a value is quoted"
    } else if error.sqlState == "22021" && message.hasSuffix(": 0x00") {
      problem = "the text holds a NUL byte, which no value may; export the feed as UTF-8 text"
    } else if error.sqlState == "22021" {
      problem = "the text is not UTF-8; export the feed as UTF-8"
    } else {
      problem = message
    }
    let place = [line.map { "line \($0)" }, column.map { "column \($0)" }].compactMap { $0 }.joined(separator: ", ")
    return .badData((place.isEmpty ? "" : place + ": ") + problem + "; nothing was imported")
  }
}
