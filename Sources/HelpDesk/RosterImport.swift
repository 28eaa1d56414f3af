import Postgres

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

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
  /// A directory where the import keeps a copy of the roster as it leaves it, and where it looks
  /// for the copy the last import kept (`RosterCopy`); nil for none.
  public var copyDirectory: String?

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
  /// Tries it took: more than 1 when the registry changed under an import (see `RosterImport.tries`).
  public var tries = 1
  /// The feed was compared with the copy of the roster the last import kept, rather than with
  /// the roster read from the registry.
  public var comparedWithCopy = false
  /// The copy of the roster this import kept, for the next; nil for none.
  public var copyKept: String?
  /// Why a copy in `copyDirectory` couldn't be used or kept (the import is done all the same).
  public var copyProblem: String?
  /// With `dryRun`: the changes, up to `diffLimit`.
  public var changes: [RosterChange]
}

/// Loads the identity feed's export into `hms2fa.accounts`: the batch job behind `accounts
/// import`. The registry's roster is read first (`RosterSnapshot`); the feed's records that are
/// exactly an account as it stands are recognised without being parsed, and the others are
/// parsed, checked and streamed by COPY into a staging table of the transaction, with the
/// accounts the feed doesn't list in another. `hms2fa_api.apply_roster_delta` checks them again,
/// checks that the parts cover every account once, refuses the whole feed at the first problem
/// and applies it. Everything happens in one REPEATABLE READ transaction: what was compared is
/// what is changed, and a refused or failed import changes nothing.
public enum RosterImport {
  static let action = DeskAction("importing the roster", tier: .batch)

  /// Imports `feed` (or with `options.dryRun`, reports what importing it would do).
  ///
  /// - Throws: `DeskError` 65 for a malformed or invalid row (naming its line and column), a
  ///   repeated account id, or a feed that would disable more than the limit; 64 for bad options
  ///   or an unreadable file; 75 while another import runs, or when the accounts it changes
  ///   were changed by someone else at every one of its `tries`; 77 without the batch tier.
  public static func run(
    _ feed: RosterFeed, options: RosterImportOptions, on db: Connection
  ) throws(DeskError) -> RosterImportResult {
    guard (0...1).contains(options.maxDisableFraction) else {
      throw .usage("the largest fraction to disable is between 0 and 1, e.g. 0.05")
    }
    if options.force && options.ticket == nil && !options.dryRun {
      throw .usage("--force overrides the disable limit and needs --ticket")
    }
    return try desk(action, on: db) {
      var feed = feed
      var tried = 1
      while true {
        // The copy of the roster this try writes, removed unless the import is committed.
        let kept = KeptCopy()
        defer { kept.discard() }
        do {
          var result = try db.transaction {
            let result = try load(feed, options: options, keeping: kept, on: db)
            // A dry run has changed nothing; rolling back says so to the database too.
            if options.dryRun { throw DryRunFinished(result: result) }
            return result
          }
          result.tries = tried
          kept.commit(in: &result, on: db)
          return result
        } catch let finished as DryRunFinished {
          var result = finished.result
          result.tries = tried
          return result
        } catch let error as PostgresError
          where [SQLState.serializationFailure, SQLState.deadlockDetected].contains(error.sqlState) && tried < tries
        {
          // Someone changed an account this import changes, after it read the roster (an agent's
          // reset sets login_action): nothing was applied. Read the file and the roster again.
          usleep(UInt32(tried) * 200_000)
          tried += 1
          feed = try feed.reopened()
        }
      }
    }
  }

  /// An import that finds an account it changes changed by someone else since it read the roster
  /// (a serialization failure: nothing was applied) starts again from the file, up to this many
  /// tries in all; then it exits 75, "try again".
  public static let tries = 3

  /// At most this many rows to send are held while the server counts the registry.
  static let waitingRows = 100_000

  /// Rows of the feed into the staging table (`CopyInWriter.append(_:)` writes them).
  static let feedCopy =
    "COPY pg_temp.roster_feed (line, account_id, display_name, email, status, high_risk) FROM STDIN"

  private struct DryRunFinished: Error {
    var result: RosterImportResult
  }

  /// The copy of the roster an import writes while the server applies the feed, put in place
  /// once the import is committed.
  private final class KeptCopy {
    var copy: RosterCopy?
    var pending: RosterCopy.Pending?
    /// The copy compared with, if any.
    var loaded: RosterCopy.Loaded?
    /// The roster's version: as the copy compared with was kept, then as the import leaves it.
    var version: RosterCopy.Version?
    /// The copy compared with is still the roster's (the import changed nothing).
    var unchanged = false

    /// Puts the copy in place and notes its digest in the registry; a copy that can't be kept
    /// is said in the result, and the import stands.
    func commit(in result: inout RosterImportResult, on db: Connection) {
      guard let copy, let version else { return }
      if unchanged {
        result.copyKept = loaded?.path
        return
      }
      guard let pending else { return }
      self.pending = nil
      do {
        try copy.commit(pending, version: version.version)
        let (at, digest) = (version.version, pending.digest)
        let note: Query = "SELECT hms2fa_api.note_roster_copy(\(at)::uuid, decode(\(digest), 'hex')) AS noted"
        let noted = try db.queryFirst(note)
        // Not noted: someone changed the roster since this import committed; the copy is out of
        // date already, and the next import reads the registry.
        if try noted?.decode("noted", as: Bool.self) == true { result.copyKept = pending.path }
      } catch let error as RosterCopy.Unusable {
        result.copyProblem = error.reason + "; the next import reads the roster from the registry"
      } catch {
        result.copyProblem =
          "the copy of the roster was not noted (\(error)); the next import reads the roster from the registry"
      }
    }

    func discard() {
      if let copy, let pending { copy.discard(pending) }
      pending = nil
    }
  }

  private static func load(
    _ feed: RosterFeed, options: RosterImportOptions, keeping kept: KeptCopy, on db: Connection
  ) throws -> RosterImportResult {
    // The roster read below and the changes applied after must be of one snapshot.
    try db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try db.execute("SELECT hms2fa_api.open_roster_delta()")
    // The first row tells how the feed writes its rows, and so how to write the accounts to
    // recognise them.
    let first = try feed.next()
    let style = first == nil ? nil : feed.style
    let copy = options.copyDirectory.map(RosterCopy.init(directory:))
    var copyProblem: String?
    var fromCopy: RosterSnapshot?
    var registry: String?
    if let copy, let style {
      // The copy the last import kept, if the roster is still as it left it (in this snapshot).
      let version = try RosterCopy.Version(on: db)
      registry = version.registry
      do throws(RosterCopy.Unusable) {
        if let loaded = try copy.load(version, style: style) {
          let check = RosterCopy.Loaded.Check(loaded)
          let snapshot = RosterSnapshot(stored: loaded.stored, style: style, alongside: check.run)
          if let problem = check.problem { throw problem }
          fromCopy = snapshot
          kept.version = version
          kept.loaded = loaded
        }
      } catch {
        copyProblem = error.reason + "; the roster was read from the registry"
      }
    }
    let comparedWithCopy = fromCopy != nil
    let roster = try fromCopy ?? RosterSnapshot(reading: db, style: style, expectedBytes: feed.size)
    // The feed's next row to send (its account claimed), past the records recognised.
    func nextToSend() throws -> RosterEntry? {
      while let record = try feed.nextRecord(recognising: roster) {
        switch record {
        case .entry(let entry):
          if let account = roster.account(id: entry.accountID.value),
            let before = roster.list(account, line: entry.line, recognised: false)
          {
            throw feed.repeated(entry.accountID.value, line: entry.line, first: before)
          }
          return entry
        case .recognised(let account, let line):
          if let before = roster.list(account, line: line, recognised: true) {
            throw feed.repeated(roster.id(of: account), line: line, first: before)
          }
        }
      }
      return nil
    }
    var absentCount = 0
    do {
      // The server counts the registry (a full scan) while the feed is read; the rows to send
      // wait here until it's done, up to `waitingRows` of them (a nightly feed sends a few
      // thousand, an initial load all).
      var waiting: [RosterEntry] = []
      if let first {
        // The first row was read before the roster: claim its account now.
        if let account = roster.account(id: first.accountID.value) {
          _ = roster.list(account, line: first.line, recognised: false)
        }
        waiting.append(first)
      }
      try db.sendWithoutWaiting("SELECT hms2fa_api.count_roster()")
      var more = first != nil
      do {
        while more, waiting.count < waitingRows {
          if let entry = try nextToSend() { waiting.append(entry) } else { more = false }
        }
      } catch {
        _ = try? db.finishSent()
        throw error
      }
      try db.finishSent()
      let keeps = copy != nil && style != nil && !options.dryRun
      try db.copyIn(feedCopy) { writer in
        for entry in waiting {
          try writer.append(entry)
          if keeps { roster.noteSent(entry) }
        }
        waiting = []
        while more, let entry = try nextToSend() {
          try writer.append(entry)
          if keeps { roster.noteSent(entry) }
        }
      }
      let absent = roster.unlisted
      absentCount = absent.count
      if !absent.isEmpty {
        try db.copyIn("COPY pg_temp.roster_absent (account_id) FROM STDIN", rows: absent.lazy.map { [$0] })
      }
    } catch let error as PostgresError
      where [SQLState.checkViolation, SQLState.uniqueViolation, SQLState.notNullViolation].contains(error.sqlState)
    {
      // The staging table holds the same rules as the checks above; this is a row they let by.
      throw DeskError.badData("the database refused a row of the feed: \(error.message); nothing was imported")
    }
    let apply: Query = """
      SELECT * FROM hms2fa_api.apply_roster_delta(
        \(roster.recognised), \(options.disableMissing), \(String(options.maxDisableFraction))::numeric,
        \(options.force), \(options.dryRun), \(feed.path), \(options.ticket?.value))
      """
    let rows: [Row]
    if let copy, let style, let registry, !options.dryRun {
      kept.copy = copy
      if comparedWithCopy && roster.sentChanges == 0 && (absentCount == 0 || !options.disableMissing) {
        // Nothing to change: the copy compared with stays the roster's.
        kept.unchanged = true
        rows = try db.query(apply)
      } else {
        // The copy of the roster as the import leaves it is written while the server applies the
        // feed, and put in place once the import is committed.
        try db.sendWithoutWaiting(apply)
        do throws(RosterCopy.Unusable) {
          kept.pending = try copy.prepare(
            roster.successor(disableMissing: options.disableMissing), style: style, registry: registry,
            after: kept.loaded)
        } catch {
          copyProblem = error.reason + "; the next import reads the roster from the registry"
        }
        rows = try db.finishSent()
      }
    } else {
      rows = try db.query(apply)
    }
    guard let row = rows.first else {
      throw DeskError(.software, "internal error: apply_roster_delta returned nothing")
    }
    var result = RosterImportResult(
      source: feed.path, dryRun: options.dryRun, rows: try row.decode("feed_rows"),
      added: try row.decode("added"), changed: try row.decode("changed"), disabled: try row.decode("disabled"),
      unchanged: try row.decode("unchanged"), activeBefore: try row.decode("active_before"),
      wouldDisable: try row.decode("would_disable"), overLimit: try row.decode("over_limit"),
      eventID: try row.decode("event_id"), changes: [])
    result.comparedWithCopy = comparedWithCopy
    result.copyProblem = copyProblem
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
    if kept.copy != nil {
      // The version this import leaves the roster at (its own, if it changed anything).
      let version = try RosterCopy.Version(on: db)
      if version != kept.version { kept.unchanged = false }
      kept.version = version
    }
    return result
  }
}

extension CopyInWriter {
  /// Writes `entry` as a row of `RosterImport.feedCopy`.
  func append(_ entry: RosterEntry) throws(PostgresError) {
    append(entry.line)
    try append(entry.accountID.value)
    try append(entry.displayName)
    try append(entry.email.value)
    try append(entry.status)
    append(entry.highRisk)
    try endRow()
  }
}
