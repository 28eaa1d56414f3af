import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// `jobs expire-remembered`, the built binary end to end.
@Suite("hms2fa-admin jobs expire-remembered end to end")
struct JobsCLITests {
  /// A database with `expired` and `live` remember-me rows and a batch login.
  struct Job {
    let database: TestDatabase
    let admin: Connection
    let batch: String

    init(expired: Int, live: Int) throws {
      database = try TestDatabase.create()
      admin = try database.connect()
      try Fixtures.account("jd123", on: admin)
      for (count, days, prefix) in [(expired, -2, "expired"), (live, 2, "live")] where count > 0 {
        try admin.execute(
          """
          INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
          SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'jd123', \(prefix) || '-' || i,
                 now() + make_interval(days => \(days)::int, secs => i)
            FROM generate_series(1, \(count)) i
          """)
      }
      batch = try database.createLogin(.batch)
    }

    func run(_ arguments: [String], as login: String? = nil) throws -> Tool.Outcome {
      try Tool.run(
        ["jobs", "expire-remembered"] + arguments + ["--database", try database.conninfo(user: login ?? batch)])
    }

    func count(_ condition: String) throws -> Int {
      let query = Query(verbatim: "SELECT count(*) AS n FROM hms2fa.remembered_browsers WHERE \(condition)")
      return try admin.queryFirst(query)?.decode("n", as: Int.self) ?? -1
    }
  }

  @Test("prints deleted, batches, duration_seconds, complete; logs progress off a terminal")
  func output() throws {
    let job = try Job(expired: 12, live: 30)
    let dry = try job.run(["--dry-run", "--json"])
    #expect(dry.status == 0, "\(dry.stderr)")
    let counted = try jsonObject(dry.stdout)
    #expect(counted["would_delete"] as? Int == 12)
    #expect(counted["deleted"] as? Int == 0)
    #expect(try job.count("expires_at < now()") == 12)

    let out = try job.run(["--batch-size", "5", "--log-every", "1", "--json"])
    #expect(out.status == 0, "\(out.stderr)")
    let result = try jsonObject(out.stdout)
    #expect(result["deleted"] as? Int == 12)
    #expect(result["batches"] as? Int == 3)
    #expect(result["complete"] as? Bool == true)
    #expect(result["duration_seconds"] is Double || result["duration_seconds"] is Int)
    // The longest batch transaction, as the server timed it: more than nothing, far under 1 s.
    let longest = try #require((result["longest_batch_ms"] as? NSNumber)?.doubleValue)
    #expect(longest > 0 && longest < 1_000)
    #expect(out.stderr.split(separator: "\n").filter { $0.hasPrefix("expire-remembered: deleted") }.count == 3)
    #expect(try job.count("true") == 30)

    let text = try job.run([])
    #expect(text.status == 0)
    #expect(text.stdout.contains("deleted 0 expired"))
    #expect(text.stdout.contains("complete"))
  }

  @Test("usage 64, no tier 77, lock held 75, guard 65: each one line on stderr")
  func refusals() throws {
    let job = try Job(expired: 8, live: 2)
    for bad in [
      ["--batch-size", "0"], ["--batch-size", "100001"], ["--max-fraction", "2"], ["--max-runtime", "soon"],
    ] {
      let out = try job.run(bad)
      #expect(out.status == 64, "\(bad)")
      #expect(out.stderr.split(separator: "\n").count == 1, "\(bad)")
    }
    let tier1 = try job.run([], as: try job.database.createLogin(.tier1))
    #expect(tier1.status == 77)
    #expect(tier1.stderr.contains("hms2fa_batch"))
    #expect(tier1.stderr.split(separator: "\n").count == 1)

    let holder = try job.database.connect(as: job.batch)
    try holder.execute("SELECT hms2fa_api.expire_remembered_lock()")
    let busy = try job.run(["--force", "--json"])
    #expect(busy.status == 75)
    #expect(busy.stderr.split(separator: "\n").count == 1)
    #expect((try jsonObject(busy.stdout)["error"] as? [String: Any])?["exit_code"] as? Int == 75)
    try holder.execute("SELECT hms2fa_api.expire_remembered_unlock()")

    let refused = try job.run([])
    #expect(refused.status == 65)
    #expect(refused.stderr.contains("--force"))
    #expect(refused.stderr.split(separator: "\n").count == 1)
    #expect(try job.count("expires_at < now()") == 8)
    let forced = try job.run(["--force"])
    #expect(forced.status == 0)
    #expect(try job.count("true") == 2)
  }

  @Test("--metrics-file: Prometheus text written whole; a failed run keeps the last success")
  func metricsFile() throws {
    let job = try Job(expired: 4, live: 10)
    let path = TestCluster.scratch + "/metrics-" + UUID().uuidString.prefix(8) + ".prom"
    let ok = try job.run(["--metrics-file", path])
    #expect(ok.status == 0, "\(ok.stderr)")
    let first = try String(contentsOfFile: path, encoding: .utf8)
    #expect(first.contains("hms2fa_expire_remembered_deleted_rows 4\n"))
    #expect(first.contains("hms2fa_expire_remembered_exit_status 0\n"))
    #expect(first.contains("hms2fa_expire_remembered_complete 1\n"))
    let success = try #require(
      first.split(separator: "\n").first { $0.hasPrefix("hms2fa_expire_remembered_last_success_timestamp_seconds ") })

    try job.admin.execute(
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, expires_at)
      SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'jd123', now() - interval '1 day'
        FROM generate_series(1, 30)
      """)
    let refused = try job.run(["--metrics-file", path])
    #expect(refused.status == 65)
    let second = try String(contentsOfFile: path, encoding: .utf8)
    #expect(second.contains("hms2fa_expire_remembered_exit_status 65\n"))
    #expect(second.contains(success + "\n"))
    #expect(second.contains("hms2fa_expire_remembered_deleted_rows 0\n"))
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: TestCluster.scratch)
      .filter { $0.hasSuffix(".tmp") }
    #expect(leftovers.isEmpty)

    let unwritable = try job.run(["--metrics-file", "/nonexistent-dir/x.prom", "--force"])
    #expect(unwritable.status == 78)
    #expect(unwritable.stderr.contains("/nonexistent-dir/x.prom"))
  }

  @Test(
    "SIGTERM mid-run: the call under way finishes, the run is recorded and the metrics written, exit 75; the next run finishes"
  )
  func terminated() throws {
    let job = try Job(expired: 60_000, live: 30)
    let dir = TestCluster.scratch + "/sigterm-" + UUID().uuidString.prefix(8)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Tool.binary)
    process.arguments = [
      "jobs", "expire-remembered", "--batch-size", "5", "--max-fraction", "1", "--log-every", "20", "--json",
      "--metrics-file",
      dir + "/job.prom", "--database", try job.database.conninfo(user: job.batch),
    ]
    process.environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"]
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Once it is deleting (a progress line), ask it to stop.
    var seen = ""
    while !seen.contains("expire-remembered: deleted") {
      let chunk = err.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      seen += String(decoding: chunk, as: UTF8.self)
    }
    kill(process.processIdentifier, SIGTERM)
    let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    seen += String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    #expect(process.terminationReason == .exit)
    #expect(process.terminationStatus == 75, "\(seen)")
    #expect(seen.contains("stopped by SIGTERM"))
    let result = try jsonObject(stdout)
    #expect(result["complete"] as? Bool == false)
    let deleted = try #require(result["deleted"] as? Int)
    #expect(deleted > 0 && deleted < 60_000)
    #expect(try job.count("expires_at < now()") == 60_000 - deleted)
    let event = try job.admin.queryFirst(
      "SELECT details->>'outcome' AS outcome, (details->>'deleted')::int AS deleted FROM hms2fa.audit_events WHERE action = 'job.expire_remembered'"
    )
    #expect(try event?.decode("outcome", as: String.self) == "stopped")
    #expect(try event?.decode("deleted", as: Int.self) == deleted)
    let metrics = try String(contentsOfFile: dir + "/job.prom", encoding: .utf8)
    #expect(metrics.contains("hms2fa_expire_remembered_exit_status 75"), "\(metrics)")

    let next = try job.run(["--json", "--max-fraction", "1"])
    #expect(next.status == 0, "\(next.stderr)")
    #expect(try jsonObject(next.stdout)["complete"] as? Bool == true)
    #expect(try job.count("true") == 30)
  }

  @Test("a backend killed mid-run: exit 69, committed batches kept, no live row lost; the next run finishes")
  func killedMidRun() throws {
    let job = try Job(expired: 20, live: 30)
    // The third batch's DELETE waits on an advisory lock this test holds, so the job is
    // certainly mid-run, two batches committed, when its backend is terminated.
    try job.admin.runScript(
      """
      CREATE SEQUENCE public.deletes_seen;
      CREATE FUNCTION public.hold_third_delete() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
      BEGIN
        IF nextval('public.deletes_seen') >= 3 THEN PERFORM pg_advisory_xact_lock(7031); END IF;
        RETURN NULL;
      END $$;
      CREATE TRIGGER hold_third_delete BEFORE DELETE ON hms2fa.remembered_browsers
        FOR EACH STATEMENT EXECUTE FUNCTION public.hold_third_delete();
      """)
    let gate = try job.database.connect()
    try gate.execute("SELECT pg_advisory_lock(7031)")
    let conninfo = try job.database.conninfo()
    let batchLogin = job.batch
    let watcher = Thread {
      guard let killer = try? Connection.connect(conninfo) else { return }
      for _ in 0..<3_000 {
        let killed = try? killer.queryFirst(
          """
          SELECT count(pg_terminate_backend(l.pid, 10000)) AS n
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND NOT l.granted AND a.usename = \(batchLogin)
          """)?.decode("n", as: Int.self)
        if let killed, killed > 0 { return }
        usleep(10_000)
      }
    }
    watcher.start()
    let out = try job.run(["--batch-size", "5", "--json"])
    #expect(out.status == 69, "\(out.stderr)")
    #expect(out.stderr.contains("10 row(s) in 2 batch(es)"))
    #expect(out.stderr.split(separator: "\n").count == 1)
    #expect(try job.count("expires_at < now()") == 10)
    #expect(try job.count("expires_at > now()") == 30)

    try gate.execute("SELECT pg_advisory_unlock(7031)")
    try job.admin.execute("DROP TRIGGER hold_third_delete ON hms2fa.remembered_browsers")
    let next = try job.run(["--batch-size", "5", "--json"])
    #expect(next.status == 0, "\(next.stderr)")
    #expect(try jsonObject(next.stdout)["deleted"] as? Int == 10)
    #expect(try jsonObject(next.stdout)["complete"] as? Bool == true)
    #expect(try job.count("true") == 30)
  }
}
