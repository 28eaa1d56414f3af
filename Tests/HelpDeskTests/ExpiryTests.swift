import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The nightly expiry of remember-me rows, through the library, as a batch login.
@Suite("jobs expire-remembered")
struct ExpiryTests {
  /// A database with two people and a batch login; rows are named by their `browser` column:
  /// `expired-…` and `live-…`.
  struct Table {
    let database: TestDatabase
    let admin: Connection
    let batchLogin: String

    init() throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", on: admin)
      try Fixtures.account("mk456", on: admin)
      batchLogin = try database.createLogin(.batch)
    }

    /// Adds `count` rows whose expires_at is `offset` from now (plus a second per row, or the
    /// same instant for all with `sameInstant`), alternating between the two people.
    func add(
      _ count: Int, named prefix: String, expiresIn offset: String, sameInstant: Bool = false, revoked: Bool = false
    ) throws {
      try admin.execute(
        """
        INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, created_at, expires_at, revoked_at)
        SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
               CASE WHEN i % 2 = 0 THEN 'jd123' ELSE 'mk456' END, \(prefix) || '-' || i,
               now() - interval '40 days',
               now() + \(offset)::interval + CASE WHEN \(sameInstant) THEN interval '0' ELSE i * interval '1 second' END,
               CASE WHEN \(revoked) THEN now() END
          FROM generate_series(1, \(count)) i
        """)
    }

    func names() throws -> Set<String> {
      Set(try admin.query("SELECT browser FROM hms2fa.remembered_browsers").map { try $0.decode("browser") })
    }

    func expiredLeft() throws -> Int {
      try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.remembered_browsers WHERE expires_at < now()")?
        .decode("n", as: Int.self) ?? -1
    }

    func events() throws -> [AuditEvent] {
      try AuditLog.events(AuditFilter(limit: 1_000), on: admin).filter { $0.action == "job.expire_remembered" }
    }

    func batch() throws -> Connection { try database.connect(as: batchLogin) }

    /// A connection holding the row `browser` locked in an open transaction, as a sign-in
    /// might; a ROLLBACK on it lets go.
    func hold(_ browser: String) throws -> Connection {
      let holder = try database.connect()
      try holder.execute("BEGIN")
      try holder.execute("SELECT 1 FROM hms2fa.remembered_browsers WHERE browser = \(browser) FOR UPDATE")
      return holder
    }
  }

  private func details(_ event: AuditEvent?) throws -> [String: Any] {
    let text = try #require(event?.details)
    return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
  }

  @Test("deletes exactly the expired rows, revoked or not, in batches of the size asked for")
  func deletesExactlyExpired() throws {
    let table = try Table()
    try table.add(23, named: "expired", expiresIn: "-10 days")
    try table.add(4, named: "expired-revoked", expiresIn: "-1 hour", revoked: true)
    try table.add(11, named: "live", expiresIn: "1 hour")
    try table.add(3, named: "live-revoked", expiresIn: "29 days", revoked: true)
    let live = try table.names().filter { $0.hasPrefix("live") }

    let run = try RememberedExpiry.run(ExpiryPlan(batchSize: 5, maxFraction: 0.9), on: try table.batch())
    #expect(run.outcome == .complete)
    #expect(run.complete)
    #expect(run.deleted == 27)
    #expect(run.batches == 6)  // 5+5+5+5+5+2
    #expect(run.expiredAtStart == 27)
    #expect(run.rowsAtStart == 41)
    #expect(try table.names() == live)
  }

  @Test("rows sharing one expires_at across batch boundaries all go; a batch never exceeds its size")
  func tiesAndBatchSize() throws {
    let table = try Table()
    try table.add(17, named: "expired", expiresIn: "-3 days", sameInstant: true)
    try table.add(20, named: "live", expiresIn: "3 days", sameInstant: true)
    let batch = try table.batch()
    let first = try batch.queryFirst("SELECT deleted FROM hms2fa_api.expire_remembered_batch(4)")
    #expect(try first?.decode("deleted", as: Int.self) == 4)
    let run = try RememberedExpiry.run(ExpiryPlan(batchSize: 4), on: batch)
    #expect(run.deleted == 13)
    #expect(run.batches == 4)
    #expect(try table.expiredLeft() == 0)
    #expect(try table.names().count == 20)
    // However far in the future the caller says, only rows expired by now() go.
    let future = try batch.queryFirst(
      "SELECT deleted FROM hms2fa_api.expire_remembered_batch(100, now() + interval '10 days')")
    #expect(try future?.decode("deleted", as: Int.self) == 0)
    #expect(try table.names().count == 20)
  }

  @Test("the census counts every row once: chunks ended by the planner's histogram, and in order past it")
  func censusWithStatistics() throws {
    let table = try Table()
    try table.add(900, named: "expired", expiresIn: "-20 days")
    try table.add(40, named: "expired-tied", expiresIn: "-5 days", sameInstant: true)
    try table.add(700, named: "live", expiresIn: "5 days")
    try table.admin.execute("ANALYZE hms2fa.remembered_browsers")
    // Rows the statistics don't know of: past the histogram's last bound, and at -infinity.
    try table.add(300, named: "live-late", expiresIn: "40 days")
    try table.add(7, named: "expired-never", expiresIn: "-1 day")
    try table.admin.execute(
      "UPDATE hms2fa.remembered_browsers SET expires_at = '-infinity' WHERE browser LIKE 'expired-never-%'")
    let bounds = try table.admin.queryFirst(
      """
      SELECT histogram_bounds::text AS bounds FROM pg_stats
       WHERE schemaname = 'hms2fa' AND tablename = 'remembered_browsers' AND attname = 'expires_at'
      """)
    let histogram = try #require(try bounds?.decode("bounds", as: String?.self))

    let batch = try table.batch()
    var after: String?
    var rows = 0
    var expired = 0
    var ends: [String] = []
    repeat {
      let call: Query = """
        SELECT rows_counted, expired, last_expires_at::text AS last
          FROM hms2fa_api.remembered_expiry_census(now(), \(after)::timestamptz, 100)
        """
      let row = try #require(try batch.queryFirst(call))
      let counted = try row.decode("rows_counted", as: Int.self)
      rows += counted
      expired += try row.decode("expired", as: Int.self)
      after = try row.decode("last", as: String?.self)
      if let after { ends.append(after) }
      #expect(counted <= 400, "a chunk of about 100 rows counted \(counted)")
    } while after != nil && ends.count < 1_000

    #expect(rows == 1_947)
    #expect(expired == 947)
    // Chunks ended on histogram bounds while there were any ahead, then went on in order.
    let first = try #require(ends.first)
    #expect(histogram.contains(first), "the first chunk ended at \(first), not on a histogram bound")
    #expect(ends.count >= 15)

    // The job's own census agrees.
    let run = try RememberedExpiry.run(ExpiryPlan(batchSize: 500, dryRun: true, maxFraction: 0.9), on: batch)
    #expect(run.rowsAtStart == 1_947)
    #expect(run.expiredAtStart == 947)
  }

  @Test("asked to stop: between calls the run stops, recorded, complete false; a dry run asked to stop records nothing")
  func askedToStop() throws {
    let table = try Table()
    try table.add(30, named: "expired", expiresIn: "-2 days")
    try table.add(40, named: "live", expiresIn: "2 days")
    let batch = try table.batch()
    // Asked after the third batch: the call under way (one batch a call here) finishes first.
    var asked = 0
    let plan = ExpiryPlan(batchSize: 5, batchesPerCall: 1)
    let run = try RememberedExpiry.run(
      plan, on: batch, progress: { if $0.phase == .deleting { asked = $0.batches } }, shouldStop: { asked >= 3 })
    #expect(run.outcome == .stopped && run.interrupted && !run.complete)
    #expect(run.deleted == 15)
    #expect(try table.expiredLeft() == 15)
    let events = try table.events()
    #expect(events.count == 1)
    #expect(events.first?.details.contains(#""outcome": "stopped""#) == true, "\(events.first?.details ?? "")")

    // A dry run asked to stop while counting: no event, nothing changed.
    let dry = try RememberedExpiry.run(
      ExpiryPlan(batchSize: 5, dryRun: true), on: batch, shouldStop: { true })
    #expect(dry.interrupted && dry.deleted == 0)
    #expect(try table.events().count == 1)
    #expect(try table.expiredLeft() == 15)
  }

  @Test("--max-runtime stops cleanly with complete false; the next run finishes the work")
  func maxRuntime() throws {
    let table = try Table()
    try table.add(30, named: "expired", expiresIn: "-2 days")
    try table.add(40, named: "live", expiresIn: "2 days")
    var now = 0.0
    // The budget is checked between calls; one batch a call here, so that the test's clock
    // (which the server doesn't see) is read after every batch.
    let plan = ExpiryPlan(batchSize: 5, maxRuntime: DeskDuration(seconds: 60), batchesPerCall: 1)
    // The clock jumps past the budget during the second batch.
    let stopped = try RememberedExpiry.run(
      plan, on: try table.batch(), clock: { now },
      progress: { progress in if progress.phase == .deleting && progress.batches == 2 { now = 61 } })
    #expect(stopped.outcome == .stopped)
    #expect(!stopped.complete)
    #expect(stopped.deleted == 10)
    #expect(try table.expiredLeft() == 20)
    let finished = try RememberedExpiry.run(plan, on: try table.batch())
    #expect(finished.complete)
    #expect(finished.deleted == 20)
    #expect(try table.expiredLeft() == 0)
    #expect(try table.names().count == 40)
    let outcomes = try table.events().map { try details($0)["outcome"] as? String }
    #expect(outcomes == ["stopped", "complete"])
  }

  @Test("a second run while one holds the job's lock gets 75 at once, and changes nothing")
  func secondRunBusy() throws {
    let table = try Table()
    try table.add(5, named: "expired", expiresIn: "-2 days")
    try table.add(5, named: "live", expiresIn: "2 days")
    let holder = try table.batch()
    #expect(
      try holder.queryFirst("SELECT hms2fa_api.expire_remembered_lock() AS ok")?.decode("ok", as: Bool.self) == true)
    let failure = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(ExpiryPlan(), on: try table.batch())
    }
    #expect(failure?.error.status == .tryLater)
    #expect(try table.expiredLeft() == 5)
    #expect(try table.events().isEmpty)
    // Released (here explicitly; a run's end or lost connection does the same), the next run works.
    try holder.execute("SELECT hms2fa_api.expire_remembered_unlock()")
    #expect(try RememberedExpiry.run(ExpiryPlan(), on: try table.batch()).deleted == 5)
  }

  @Test("--dry-run counts what would go and changes nothing, not even the audit log")
  func dryRun() throws {
    let table = try Table()
    try table.add(7, named: "expired", expiresIn: "-2 days")
    try table.add(9, named: "live", expiresIn: "2 days")
    let before = try table.names()
    let run = try RememberedExpiry.run(ExpiryPlan(dryRun: true), on: try table.batch())
    #expect(run.outcome == .dryRun)
    #expect(run.expiredAtStart == 7)
    #expect(run.rowsAtStart == 16)
    #expect(run.deleted == 0)
    #expect(try table.names() == before)
    #expect(try table.events().isEmpty)
  }

  @Test("the guard refuses (65) when more than --max-fraction would go, unless --force")
  func blastRadiusGuard() throws {
    let table = try Table()
    try table.add(6, named: "expired", expiresIn: "-2 days")
    try table.add(4, named: "live", expiresIn: "2 days")
    let refused = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(ExpiryPlan(), on: try table.batch())
    }
    #expect(refused?.error.status == .dataError)
    #expect(refused?.error.message.contains("6 of 10") == true)
    #expect(try table.expiredLeft() == 6)
    let dry = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(ExpiryPlan(dryRun: true), on: try table.batch())
    }
    #expect(dry?.error.status == .dataError)
    #expect(try RememberedExpiry.run(ExpiryPlan(maxFraction: 0.6), on: try table.batch()).deleted == 6)
    try table.add(3, named: "expired-again", expiresIn: "-1 day")
    #expect(try RememberedExpiry.run(ExpiryPlan(force: true), on: try table.batch()).deleted == 3)
    let outcomes = try table.events().map { try details($0)["outcome"] as? String }
    #expect(outcomes == ["refused", "complete", "complete"])
  }

  @Test("each run writes one job.expire_remembered event with its counts, as the login")
  func oneEventPerRun() throws {
    let table = try Table()
    try table.add(12, named: "expired", expiresIn: "-2 days")
    try table.add(20, named: "live", expiresIn: "2 days")
    _ = try RememberedExpiry.run(ExpiryPlan(batchSize: 5), on: try table.batch())
    let events = try table.events()
    #expect(events.count == 1)
    #expect(events.first?.actor == table.batchLogin)
    let fields = try details(events.first)
    #expect(fields["deleted"] as? Int == 12)
    #expect(fields["batches"] as? Int == 3)
    #expect(fields["complete"] as? Bool == true)
    #expect(fields["expired_at_start"] as? Int == 12)
    #expect(fields["rows_at_start"] as? Int == 32)
    #expect(fields["batch_size"] as? Int == 5)
    _ = try RememberedExpiry.run(ExpiryPlan(), on: try table.batch())
    #expect(try table.events().count == 2)
    #expect(try AuditLog.verify(on: table.admin).ok)
  }

  @Test("tier1 and tier2 logins get 77 naming hms2fa_batch; the functions refuse them from raw SQL too")
  func onlyBatch() throws {
    let table = try Table()
    try table.add(3, named: "expired", expiresIn: "-2 days")
    for tier in [Tier.tier1, .tier2, .signin] {
      let db = try table.database.connect(as: try table.database.createLogin(tier))
      let failure = #expect(throws: ExpiryFailure.self) { try RememberedExpiry.run(ExpiryPlan(), on: db) }
      #expect(failure?.error.status == .noPermission)
      #expect(failure?.error.message.contains("hms2fa_batch") == true)
      let raw = #expect(throws: PostgresError.self) {
        try db.execute("SELECT * FROM hms2fa_api.expire_remembered_batch(10)")
      }
      #expect(raw?.sqlState == SQLState.insufficientPrivilege)
    }
    #expect(try table.expiredLeft() == 3)
  }

  @Test("a backend killed mid-run: 69, committed batches kept, no live row lost; the next run finishes")
  func killedMidRun() throws {
    let table = try Table()
    try table.add(40, named: "expired", expiresIn: "-2 days")
    try table.add(50, named: "live", expiresIn: "2 days")
    let live = try table.names().filter { $0.hasPrefix("live") }
    let job = try table.batch()
    let pid = job.backendPID
    // One batch a call: the kill lands while the tool is between calls, the backend idle.
    let failure = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(
        ExpiryPlan(batchSize: 5, batchesPerCall: 1), on: job, reconnect: { try table.batch() },
        progress: { progress in
          if progress.phase == .deleting && progress.batches == 3 {
            _ = try? table.admin.execute("SELECT pg_terminate_backend(\(pid), 10000)")
          }
        })
    }
    #expect(failure?.error.status == .unavailable)
    #expect(failure?.run.deleted == 15)
    #expect(failure?.error.message.contains("15 row(s) in 3 batch(es)") == true)
    #expect(try table.expiredLeft() == 25)
    #expect(try table.names().filter { $0.hasPrefix("live") } == live)
    // The run is still accounted for, from a new connection.
    #expect(try table.events().map { try details($0)["outcome"] as? String } == ["connection_lost"])
    // The dead session's lock went with it.
    let next = try RememberedExpiry.run(ExpiryPlan(batchSize: 5), on: try table.batch())
    #expect(next.complete)
    #expect(next.deleted == 25)
    #expect(try table.expiredLeft() == 0)
    #expect(try table.names() == live)
  }

  @Test("several batches a call: each its own transaction, each reported as it commits")
  func batchesPerCall() throws {
    let table = try Table()
    try table.add(42, named: "expired", expiresIn: "-2 days")
    try table.add(30, named: "live", expiresIn: "2 days")
    let batch = try table.batch()
    var seen: [Int64] = []
    let run = try RememberedExpiry.run(
      ExpiryPlan(batchSize: 5, maxFraction: 0.6), on: batch,
      progress: { progress in if progress.phase == .deleting { seen.append(progress.rows) } })
    #expect(run.complete)
    #expect(run.deleted == 42)
    #expect(run.batches == 9)
    #expect(seen == [5, 10, 15, 20, 25, 30, 35, 40, 42])
    // Each batch's transaction timed by the server, commit to commit.
    #expect(run.longestBatchSeconds > 0)
    #expect(run.longestBatchSeconds < 1)
    #expect(try table.expiredLeft() == 0)
    #expect(try table.names().count == 30)
    // (That each batch is its own transaction shows when a later one fails: see below.)
    // The procedure is the batch role's alone, and checks its bounds.
    let raw = #expect(throws: PostgresError.self) {
      try batch.execute("CALL hms2fa_api.expire_remembered_batches(5, now(), NULL, 0, 100, NULL)")
    }
    #expect(raw?.sqlState == "H2U08")
    for tier in [Tier.tier1, .tier2, .signin, .auditor] {
      let db = try table.database.connect(as: try table.database.createLogin(tier))
      let denied = #expect(throws: PostgresError.self) {
        try db.execute("CALL hms2fa_api.expire_remembered_batches(5, now(), NULL, 10, 100, NULL)")
      }
      #expect(denied?.sqlState == SQLState.insufficientPrivilege)
    }
  }

  @Test("a call that meets a locked row: the batches before it are counted and kept; 75 after the retries")
  func lockedRowMidCall() throws {
    let table = try Table()
    try table.add(20, named: "expired", expiresIn: "-2 days")
    try table.add(20, named: "live", expiresIn: "2 days")
    // The sign-in service (here, the test) holds the 12th expired row: the third batch of five
    // waits for it, the first two have committed.
    let holder = try table.hold("expired-12")
    let plan = ExpiryPlan(batchSize: 5, lockTimeoutMilliseconds: 100, retryPauseSeconds: 0.05)
    let failure = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(plan, on: try table.batch())
    }
    #expect(failure?.error.status == .tryLater)
    #expect(failure?.run.deleted == 10)
    #expect(failure?.run.batches == 2)
    #expect(try table.expiredLeft() == 10)
    #expect(try details(try table.events().last)["deleted"] as? Int == 10)
    try holder.execute("ROLLBACK")
    let next = try RememberedExpiry.run(plan, on: try table.batch())
    #expect(next.complete)
    #expect(next.deleted == 10)
    #expect(try table.expiredLeft() == 0)
    #expect(try table.names().count == 20)
  }

  @Test("a backend killed in the middle of a call: 69, no live row lost, never more counted than deleted")
  func killedMidCall() throws {
    let table = try Table()
    try table.add(60, named: "expired", expiresIn: "-2 days")
    try table.add(70, named: "live", expiresIn: "2 days")
    let live = try table.names().filter { $0.hasPrefix("live") }
    // The seventh batch (rows 31–35) waits for a row the test holds, so that the call is still
    // running when the kill, sent when the third batch's notice arrives, lands.
    let holder = try table.hold("expired-32")
    let job = try table.batch()
    let pid = job.backendPID
    let failure = #expect(throws: ExpiryFailure.self) {
      try RememberedExpiry.run(
        ExpiryPlan(batchSize: 5), on: job, reconnect: { try table.batch() },
        progress: { progress in
          if progress.phase == .deleting && progress.batches == 3 {
            _ = try? table.admin.execute("SELECT pg_terminate_backend(\(pid), 10000)")
          }
        })
    }
    #expect(failure?.error.status == .unavailable)
    let counted = try #require(failure?.run.deleted)
    let gone = 60 - (try table.expiredLeft())
    #expect(counted >= 15)
    #expect(counted <= gone)
    #expect(gone <= 30)
    #expect(try table.names().filter { $0.hasPrefix("live") } == live)
    try holder.execute("ROLLBACK")
    #expect(try table.events().map { try details($0)["outcome"] as? String } == ["connection_lost"])
    let next = try RememberedExpiry.run(ExpiryPlan(batchSize: 5), on: try table.batch())
    #expect(next.complete)
    #expect(next.deleted == Int64(60 - gone))
    #expect(try table.names() == live)
  }

  @Test("the metrics text: every gauge, and the last success carried over a failed run")
  func metricsText() throws {
    var run = ExpiryRun(outcome: .complete)
    run.deleted = 1_234
    run.batches = 3
    run.durationSeconds = 2.5
    run.expiredAtStart = 1_234
    run.rowsAtStart = 5_000
    let ok = ExpiryMetrics.text(
      for: run, exitStatus: 0, finishedAt: Date(timeIntervalSince1970: 1_800_000_000), previous: nil)
    #expect(ok.contains("hms2fa_expire_remembered_deleted_rows 1234\n"))
    #expect(ok.contains("hms2fa_expire_remembered_complete 1\n"))
    #expect(ok.contains("hms2fa_expire_remembered_exit_status 0\n"))
    #expect(ok.contains("hms2fa_expire_remembered_duration_seconds 2.5\n"))
    #expect(ok.contains("hms2fa_expire_remembered_last_success_timestamp_seconds 1800000000\n"))
    #expect(ok.contains("# TYPE hms2fa_expire_remembered_batches gauge\n"))
    #expect(ok.contains("# TYPE hms2fa_expire_remembered_longest_batch_seconds gauge\n"))
    var lost = ExpiryRun(outcome: .connectionLost)
    lost.deleted = 10
    let failed = ExpiryMetrics.text(
      for: lost, exitStatus: 69, finishedAt: Date(timeIntervalSince1970: 1_800_086_400), previous: ok)
    #expect(failed.contains("hms2fa_expire_remembered_last_success_timestamp_seconds 1800000000\n"))
    #expect(failed.contains("hms2fa_expire_remembered_last_run_timestamp_seconds 1800086400\n"))
    #expect(failed.contains("hms2fa_expire_remembered_exit_status 69\n"))
    #expect(failed.contains("hms2fa_expire_remembered_complete 0\n"))
    let never = ExpiryMetrics.text(for: lost, exitStatus: 69, finishedAt: Date(), previous: nil)
    #expect(never.contains("hms2fa_expire_remembered_last_success_timestamp_seconds 0\n"))
  }
}
