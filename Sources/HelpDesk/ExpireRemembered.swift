import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif
#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// What one run of the nightly expiry is asked to do.
public struct ExpiryPlan: Sendable {
  /// Rows deleted per transaction.
  public var batchSize: Int
  /// Stop (with `complete: false`) once this much time has passed; the next run continues.
  public var maxRuntime: DeskDuration?
  /// Count what would go and change nothing.
  public var dryRun: Bool
  /// Refuse when more than this fraction of all rows would go, unless `force`.
  public var maxFraction: Double
  public var force: Bool
  /// How long a batch may wait for a lock before it gives up (and is retried).
  public var lockTimeoutMilliseconds: Int
  /// Batches the server runs per call, one after another, each its own transaction; the run's
  /// time budget is checked between calls (and bounds each call too).
  public var batchesPerCall: Int
  /// The longest a call runs before it hands back, when the budget doesn't end sooner.
  public var millisecondsPerCall: Int
  /// Seconds to wait before the first retry after a lock timeout (then twice, three times…).
  public var retryPauseSeconds: Double

  public init(
    batchSize: Int = 5_000, maxRuntime: DeskDuration? = nil, dryRun: Bool = false, maxFraction: Double = 0.5,
    force: Bool = false, lockTimeoutMilliseconds: Int = 2_000, batchesPerCall: Int = 200,
    millisecondsPerCall: Int = 250, retryPauseSeconds: Double = 1
  ) {
    self.batchSize = batchSize
    self.maxRuntime = maxRuntime
    self.dryRun = dryRun
    self.maxFraction = maxFraction
    self.force = force
    self.lockTimeoutMilliseconds = lockTimeoutMilliseconds
    self.batchesPerCall = batchesPerCall
    self.millisecondsPerCall = millisecondsPerCall
    self.retryPauseSeconds = retryPauseSeconds
  }
}

/// Where a run is, for a progress display or a log line.
public struct ExpiryProgress: Sendable {
  public enum Phase: Sendable { case counting, deleting }
  public var phase: Phase
  /// Rows counted so far (counting) or deleted so far (deleting).
  public var rows: Int64
  /// Expired rows found by the count: what the run expects to delete.
  public var expected: Int64
  public var batches: Int
  /// Seconds since the run started.
  public var elapsed: Double
}

/// What a run did.
public struct ExpiryRun: Sendable {
  public enum Outcome: String, Sendable {
    case complete, stopped, refused, busy, failed
    case connectionLost = "connection_lost"
    case dryRun = "dry_run"
  }

  public var outcome: Outcome
  public var deleted: Int64 = 0
  public var batches = 0
  /// Rows whose `expires_at` had passed at the cutoff, and all rows, when the run counted them.
  public var expiredAtStart: Int64 = 0
  public var rowsAtStart: Int64 = 0
  /// The database's time when the run started: rows expiring before it are this run's work.
  public var cutoff: String?
  public var durationSeconds: Double = 0
  /// The longest transaction among the batches, as the server timed it (commit to commit).
  public var longestBatchSeconds: Double = 0
  /// The run stopped because it was asked to (a signal), not at its time budget.
  public var interrupted = false
  public var batchSize = 0
  public var dryRun = false

  public init(outcome: Outcome) {
    self.outcome = outcome
  }

  /// True when no row that had expired at the cutoff was left: a batch that finds its rows
  /// changed by a sign-in takes them again by key (0015), so it ends only when none is found.
  public var complete: Bool { outcome == .complete }

  /// The share of all rows that had expired.
  public var expiredFraction: Double { rowsAtStart == 0 ? 0 : Double(expiredAtStart) / Double(rowsAtStart) }
}

/// A run that ended in an error, with what it had done by then (committed batches stay).
public struct ExpiryFailure: Error, CustomStringConvertible, Sendable {
  public var run: ExpiryRun
  public var error: DeskError
  public var description: String { error.message }
}

/// The nightly job that deletes remember-me rows whose `expires_at` has passed: many short
/// transactions, one run at a time per database, one audit event per run.
public enum RememberedExpiry {
  static let action = DeskAction("expiring remembered browsers (the nightly job)", tier: .batch)
  /// Rows per census call: a few tens of milliseconds of index-only scan each.
  static let censusChunk = 200_000
  /// Batches retried after a lock timeout before the run gives up (exit 75).
  static let lockRetries = 3
  /// The SQLSTATE of the notice `expire_remembered_batches` sends after each batch commits.
  static let batchNotice = "H2I01"

  /// What the batches of a run have done so far, as their notices tell.
  final class BatchTally {
    var deleted: Int64
    var batches: Int
    var longestBatchSeconds = 0.0
    /// Where the next batch starts (the last batch's `resume_at`, as text).
    var after: String?

    init(deleted: Int64, batches: Int) {
      self.deleted = deleted
      self.batches = batches
    }
  }

  /// Seconds on a monotonic clock.
  public static func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1_000_000_000
  }

  /// Runs the job on `db` (a login holding `hms2fa_batch`).
  ///
  /// - Parameters:
  ///   - reconnect: opens a new connection, used only to record the run's audit event when `db`
  ///     was lost mid-run.
  ///   - clock: monotonic seconds, for the time budget and the rate.
  ///   - progress: called after each census chunk and each batch.
  ///   - shouldStop: asked between census chunks and between calls of batches; once true, the
  ///     run stops as at its time budget (`stopped`, `interrupted`), committed batches kept and
  ///     the run recorded.
  /// - Throws: `ExpiryFailure` carrying the run so far and a `DeskError`: 75 when another run
  ///   holds the job's lock or locks kept timing out, 65 when the guard refuses, 69 when the
  ///   connection was lost (committed batches are kept), 77 without `hms2fa_batch`.
  public static func run(
    _ plan: ExpiryPlan, on db: Connection, reconnect: (() throws -> Connection)? = nil,
    clock: () -> Double = monotonicSeconds, progress: (ExpiryProgress) -> Void = { _ in },
    shouldStop: () -> Bool = { false }
  ) throws(ExpiryFailure) -> ExpiryRun {
    let start = clock()
    var run = ExpiryRun(outcome: .failed)
    run.batchSize = plan.batchSize
    run.dryRun = plan.dryRun
    func fail(_ error: DeskError) -> ExpiryFailure {
      run.durationSeconds = clock() - start
      return ExpiryFailure(run: run, error: error)
    }

    do {
      _ = try desk(action, on: db) {
        // Timestamps go back and forth as text: ISO output keeps every microsecond. Batches
        // commit without waiting for their WAL to reach the disk: a crash can only undo the
        // last few deletions of rows that had expired, which the next run repeats; the audit
        // event at the end commits synchronously, and so makes them durable.
        // The batches' notices (their counts) must reach the tool whatever the login's
        // client_min_messages.
        try db.execute(
          """
          SELECT set_config('lock_timeout', \("\(plan.lockTimeoutMilliseconds)ms"), false),
                 set_config('DateStyle', 'ISO, MDY', false), set_config('TimeZone', 'UTC', false),
                 set_config('synchronous_commit', 'off', false), set_config('client_min_messages', 'notice', false)
          """)
      }
      let locked = try desk(action, on: db) {
        try db.queryFirst("SELECT hms2fa_api.expire_remembered_lock() AS locked")?.decode("locked", as: Bool.self)
      }
      guard locked == true else {
        throw DeskError(
          .tryLater,
          "another expire-remembered run holds the job's lock on this database; it carries on the work, "
            + "so there is nothing to do now")
      }
    } catch {
      let failure = deskError(error, doing: action, on: db)
      run.outcome = failure.status == .tryLater ? .busy : .failed
      throw fail(failure)
    }
    defer { _ = try? db.execute("SELECT hms2fa_api.expire_remembered_unlock()") }

    do {
      try census(plan, into: &run, on: db, start: start, clock: clock, progress: progress, shouldStop: shouldStop)
      if shouldStop() {
        // Asked to stop while counting: nothing was deleted; a dry run records nothing either.
        run.outcome = .stopped
        run.interrupted = true
        if plan.dryRun {
          run.durationSeconds = clock() - start
        } else {
          record(&run, start: start, clock: clock, on: db, reconnect: reconnect)
        }
        return run
      }
      if run.expiredFraction > plan.maxFraction && !plan.force {
        run.outcome = .refused
        let error = DeskError(
          .dataError,
          "refusing to delete \(run.expiredAtStart) of \(run.rowsAtStart) remembered browsers "
            + "(\(percent(run.expiredFraction)), more than --max-fraction \(plan.maxFraction)): check the "
            + "database's clock and the last import, then run again with --force if it is right")
        if !plan.dryRun { record(&run, start: start, clock: clock, on: db, reconnect: nil) }
        throw error
      }
      if plan.dryRun {
        run.outcome = .dryRun
        run.durationSeconds = clock() - start
        return run
      }
      try deleteBatches(
        plan, into: &run, on: db, start: start, clock: clock, progress: progress, shouldStop: shouldStop)
    } catch {
      let deskError = deskError(error, doing: action, on: db)
      if run.outcome != .refused {
        run.outcome = outcome(for: error)
        if !plan.dryRun { record(&run, start: start, clock: clock, on: db, reconnect: reconnect) }
      }
      if run.outcome == .connectionLost {
        throw fail(
          DeskError(
            .unavailable,
            "the connection to the database was lost after \(run.deleted) row(s) in \(run.batches) batch(es) "
              + "(\(deskError.message)); those batches are kept, the unfinished one changed nothing: "
              + "run the job again to finish"))
      }
      throw fail(deskError)
    }
    record(&run, start: start, clock: clock, on: db, reconnect: reconnect)
    return run
  }

  private static func census(
    _ plan: ExpiryPlan, into run: inout ExpiryRun, on db: Connection, start: Double, clock: () -> Double,
    progress: (ExpiryProgress) -> Void, shouldStop: () -> Bool
  ) throws {
    guard let cutoff = try db.queryFirst("SELECT now()::text AS cutoff")?.decode("cutoff", as: String.self) else {
      throw DeskError(.software, "internal error: the database did not say what time it is")
    }
    run.cutoff = cutoff
    var after: String?
    repeat {
      guard
        let row = try db.queryFirst(
          """
          SELECT rows_counted, expired, last_expires_at::text AS last
            FROM hms2fa_api.remembered_expiry_census(\(cutoff)::timestamptz, \(after)::timestamptz, \(censusChunk))
          """)
      else { break }
      run.rowsAtStart += try row.decode("rows_counted", as: Int64.self)
      run.expiredAtStart += try row.decode("expired", as: Int64.self)
      after = try row.decode("last", as: String?.self)
      progress(
        ExpiryProgress(
          phase: .counting, rows: run.rowsAtStart, expected: run.expiredAtStart, batches: 0,
          elapsed: clock() - start))
    } while after != nil && !shouldStop()
  }

  /// Deletes in calls of several batches (`hms2fa_api.expire_remembered_batches`), each batch
  /// its own transaction in the server, so that no round trip separates two batches within a
  /// call. Counts come from the notice the server sends after each commit, so they stay exact
  /// when a call ends in an error after some of its batches committed.
  private static func deleteBatches(
    _ plan: ExpiryPlan, into run: inout ExpiryRun, on db: Connection, start: Double, clock: () -> Double,
    progress: (ExpiryProgress) -> Void, shouldStop: () -> Bool
  ) throws {
    let tally = BatchTally(deleted: run.deleted, batches: run.batches)
    defer {
      run.deleted = tally.deleted
      run.batches = tally.batches
      run.longestBatchSeconds = tally.longestBatchSeconds
    }
    let expected = run.expiredAtStart
    let report = { (tally: BatchTally) in
      progress(
        ExpiryProgress(
          phase: .deleting, rows: tally.deleted, expected: expected, batches: tally.batches,
          elapsed: clock() - start))
    }
    try withoutActuallyEscaping(report) { report in
      // The handler holds `report`, which must not outlive this call.
      defer { db.onNotice = nil }
      db.onNotice = { notice in
        guard notice.sqlState == batchNotice, let detail = notice.detail else { return }
        // "<rows> <milliseconds> <next batch's start>"
        let parts = detail.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let count = Int64(parts[0]), let milliseconds = Double(parts[1]) else { return }
        tally.deleted += count
        tally.batches += 1
        tally.longestBatchSeconds = max(tally.longestBatchSeconds, milliseconds / 1000)
        tally.after = parts.count > 2 ? String(parts[2]) : nil
        report(tally)
      }
      try callBatches(plan, into: &run, tally: tally, on: db, start: start, clock: clock, shouldStop: shouldStop)
    }
  }

  private static func callBatches(
    _ plan: ExpiryPlan, into run: inout ExpiryRun, tally: BatchTally, on db: Connection, start: Double,
    clock: () -> Double, shouldStop: () -> Bool
  ) throws {
    var timeouts = 0
    while true {
      if shouldStop() {
        run.outcome = .stopped
        run.interrupted = true
        return
      }
      var milliseconds = plan.millisecondsPerCall
      if let budget = plan.maxRuntime {
        let left = Double(budget.seconds) - (clock() - start)
        guard left > 0 else {
          run.outcome = .stopped
          return
        }
        milliseconds = max(1, min(milliseconds, Int(left * 1000)))
      }
      let batchesBefore = tally.batches
      var finished = false
      var timedOut = false
      do {
        finished =
          try db.queryFirst(
            """
            CALL hms2fa_api.expire_remembered_batches(
              \(plan.batchSize), \(run.cutoff)::timestamptz, \(tally.after)::timestamptz,
              \(plan.batchesPerCall), \(milliseconds), NULL)
            """)?.decode("finished", as: Bool.self) ?? false
      } catch {
        if tally.batches > batchesBefore { timeouts = 0 }
        guard error.sqlState == SQLState.lockNotAvailable, timeouts < lockRetries else { throw error }
        timedOut = true
      }
      if timedOut {
        timeouts += 1
        let pause = min(Double(timeouts), 5) * max(plan.retryPauseSeconds, 0)
        usleep(UInt32(min(pause, 60) * 1_000_000))
        continue
      }
      timeouts = 0
      if finished {
        run.outcome = .complete
        return
      }
    }
  }

  private static func outcome(for error: Error) -> ExpiryRun.Outcome {
    if let pg = error as? PostgresError {
      if pg.kind == .connectionLost { return .connectionLost }
      if [SQLState.lockNotAvailable, SQLState.queryCanceled].contains(pg.sqlState) { return .busy }
    }
    if let desk = error as? DeskError, desk.status == .tryLater { return .busy }
    return .failed
  }

  /// Writes the run's audit event; on a lost connection, from a new one. A failure to record is
  /// not the run's failure: the metrics file and the exit status still tell.
  private static func record(
    _ run: inout ExpiryRun, start: Double, clock: () -> Double, on db: Connection,
    reconnect: (() throws -> Connection)?
  ) {
    run.durationSeconds = clock() - start
    let target: Connection?
    if run.outcome == .connectionLost {
      target = try? reconnect?()
    } else {
      target = db
    }
    guard let target, let cutoff = run.cutoff else { return }
    _ = try? target.execute("SELECT set_config('synchronous_commit', 'on', false)")
    let duration = (run.durationSeconds * 1000).rounded() / 1000
    _ = try? target.execute(
      """
      SELECT hms2fa_api.record_expire_remembered_run(
        \(run.outcome.rawValue), \(run.deleted), \(run.batches), \(run.expiredAtStart), \(run.rowsAtStart),
        \(duration)::numeric, \(run.batchSize), \(cutoff)::timestamptz)
      """)
  }

  static func percent(_ fraction: Double) -> String {
    "\((fraction * 1000).rounded() / 10)%"
  }
}

/// The job's figures in Prometheus text format, for node_exporter's textfile collector.
public enum ExpiryMetrics {
  static let prefix = "hms2fa_expire_remembered_"

  /// The file's text after a run that ended with `exitStatus`; the last success carries over
  /// from `previous` (the file as it was) when this run failed.
  public static func text(for run: ExpiryRun, exitStatus: Int32, finishedAt: Date, previous: String?) -> String {
    JobMetrics.text(
      prefix: prefix, exitStatus: exitStatus, finishedAt: finishedAt, previous: previous,
      exitStatuses: "0 ok, 65 refused by the guard, 69 database lost, 75 busy or stopped by a signal",
      figures: [
        ("complete", "1 when the last run deleted every row that had expired when it started.", run.complete ? 1 : 0),
        ("deleted_rows", "Rows the last run deleted.", Double(run.deleted)),
        ("batches", "Transactions the last run committed.", Double(run.batches)),
        ("duration_seconds", "How long the last run took.", (run.durationSeconds * 1000).rounded() / 1000),
        (
          "longest_batch_seconds", "The last run's longest batch transaction, as the server timed it.",
          (run.longestBatchSeconds * 1_000_000).rounded() / 1_000_000
        ),
        ("expired_rows_at_start", "Expired rows the last run found.", Double(run.expiredAtStart)),
        ("rows_at_start", "All remembered-browser rows when the last run started.", Double(run.rowsAtStart)),
      ])
  }

  /// Writes the metrics for a run to `path` atomically (`JobMetrics.write`).
  ///
  /// - Throws: a configuration `DeskError` naming the file when it can't be written.
  public static func write(
    _ run: ExpiryRun, exitStatus: Int32, to path: String, finishedAt: Date = Date()
  ) throws(DeskError) {
    try JobMetrics.write(to: path) { previous in
      text(for: run, exitStatus: exitStatus, finishedAt: finishedAt, previous: previous)
    }
  }
}
