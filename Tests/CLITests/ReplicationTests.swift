import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// A real primary and streaming standby on loopback (ops/replica-pair): look-ups survive the
/// primary's loss, changes refuse with 69 until a standby is promoted.
@Suite("replicated PostgreSQL")
struct ReplicationTests {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

  /// Runs ops/replica-pair with `system(3)`, which waits for exactly its child (the script
  /// leaves servers running in the background, which Foundation's Process can wait on forever).
  func pair(_ arguments: [String]) throws {
    let log = TestCluster.scratch + "/replica-pair-" + UUID().uuidString.prefix(8) + ".log"
    let bin = TestCluster.serverBinaries.map { "PG_BIN='\($0)' " } ?? ""
    let command =
      "\(bin)/bin/bash '\(Self.root)/ops/replica-pair' "
      + arguments.map { "'\($0)'" }.joined(separator: " ") + " </dev/null >/dev/null 2>'\(log)'"
    let status = system(command)
    guard status == 0 else {
      let message = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      throw TestSetupError("ops/replica-pair \(arguments[0]) failed (\(status)): \(message)")
    }
  }

  @Test("look-ups go to the standby while the primary is down; changes are 69 until promotion")
  func failover() throws {
    let dir = TestCluster.scratch + "/replica-" + UUID().uuidString.prefix(8)
    let base = 20_000 + Int(getpid() % 5_000) * 2
    let (p1, p2) = (base, base + 1)
    try pair(["start", dir, String(p1), String(p2)])
    defer { try? pair(["stop", dir]) }

    let primary = "host=127.0.0.1 port=\(p1) dbname=postgres user=postgres"
    let standby = "host=127.0.0.1 port=\(p2) dbname=postgres user=postgres"
    let both = "host=127.0.0.1,127.0.0.1 port=\(p1),\(p2) dbname=postgres user=postgres connect_timeout=3"
    #expect(try Tool.run(["db", "migrate", "--database", primary]).status == 0)
    let db = try Connection.connect(primary)
    try Fixtures.account("jd123", name: "Jane Doe", on: db)
    try Fixtures.device("jd123", on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 9, on: db)

    // The standby has replayed the fixtures, and refuses writes itself. Until it has replayed
    // the migrations, the table isn't there: that is "not yet", not a failure.
    let replica = try Connection.connect(standby)
    var replayed = false
    for _ in 0..<100 where !replayed {
      let count = try? replica.queryFirst("SELECT count(*)::int AS n FROM hms2fa.accounts")?.decode("n", as: Int.self)
      replayed = count == 1
      if !replayed { usleep(100_000) }
    }
    #expect(replayed)
    let onStandby = try Tool.run(["remembered", "revoke", "jd123", "--ticket", "TK1", "--database", standby])
    #expect(onStandby.status == 69)
    #expect(onStandby.stderr.contains("no writable (primary) server"))
    // With both up, a change finds the primary even when the standby is listed first.
    let reversed = "host=127.0.0.1,127.0.0.1 port=\(p2),\(p1) dbname=postgres user=postgres connect_timeout=3"
    let change = try Tool.run([
      "remembered", "revoke", "jd123", "--ticket", "TK1", "--reason", "r", "--database", reversed,
    ])
    #expect(change.status == 0, "\(change.stderr)")
    #expect(try Tool.run(["user", "show", "jd123", "--read-only", "--database", both]).status == 0)

    try pair(["stop-primary", dir])
    let lookup = try Tool.run(["user", "show", "jd123", "--json", "--database", both])
    #expect(lookup.status == 0, "\(lookup.stderr)")
    #expect(lookup.stdout.contains("\"account_id\":\"jd123\""))
    let readOnly = try Tool.run(
      ["audit", "log", "--json"], environment: ["HMS2FA_READ_ONLY_DATABASE_URL": both])
    #expect(readOnly.status == 0, "\(readOnly.stderr)")
    // user show's quick path reads the same variable (and nothing else tells it where to go).
    let card = try Tool.run(["user", "show", "jd123"], environment: ["HMS2FA_READ_ONLY_DATABASE_URL": both])
    #expect(card.status == 0, "\(card.stderr)")
    #expect(card.stdout.contains("jd123"))
    let refused = try Tool.run(["remembered", "revoke", "jd123", "--ticket", "TK2", "--database", both])
    #expect(refused.status == 69)
    #expect(refused.stderr.split(separator: "\n").count == 1)
    #expect(refused.stderr.contains("nothing was changed"))
    let misuse = try Tool.run(["remembered", "revoke", "jd123", "--ticket", "TK2", "--read-only", "--database", both])
    #expect(misuse.status == 64)

    try pair(["promote", dir])
    var promoted: Tool.Outcome?
    for _ in 0..<50 {
      promoted = try Tool.run(["activation", "revoke", "jd123", "--ticket", "TK3", "--database", both])
      if promoted?.status == 0 { break }
      usleep(200_000)
    }
    #expect(promoted?.status == 0, "\(promoted?.stderr ?? "")")
    let audit = try Tool.run(["audit", "verify", "--database", standby])
    #expect(audit.status == 0, "\(audit.stderr)")
  }

  @Test("the server restarted between two batches of the nightly job: exit 69, the next run completes")
  func restartDuringJob() throws {
    let dir = TestCluster.scratch + "/restart-" + UUID().uuidString.prefix(8)
    let base = 20_000 + Int(getpid() % 5_000) * 2 + 10_000
    try pair(["start", dir, String(base), String(base + 1)])
    defer { try? pair(["stop", dir]) }
    let primary = "host=127.0.0.1 port=\(base) dbname=postgres user=postgres"
    let nightly = "host=127.0.0.1 port=\(base) dbname=postgres user=nightly"
    #expect(try Tool.run(["db", "migrate", "--database", primary]).status == 0)
    let admin = try Connection.connect(primary)
    try Fixtures.account("jd123", on: admin)
    for days in [-3, -2, -1, -3, -2, -1, -4, -5, 7, 8] {
      try Fixtures.rememberedBrowser("jd123", expiresInDays: days, on: admin)
    }
    // The third batch waits on an advisory lock held here, so the restart lands between
    // batches two and three.
    try admin.runScript(
      """
      CREATE SEQUENCE public.deletes_seen;
      CREATE ROLE nightly LOGIN;
      GRANT hms2fa_batch TO nightly;
      CREATE FUNCTION public.hold_third_delete() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
      BEGIN
        IF nextval('public.deletes_seen') >= 3 THEN PERFORM pg_advisory_xact_lock(7032); END IF;
        RETURN NULL;
      END $$;
      CREATE TRIGGER hold_third_delete BEFORE DELETE ON hms2fa.remembered_browsers
        FOR EACH STATEMENT EXECUTE FUNCTION public.hold_third_delete();
      """)
    let gate = try Connection.connect(primary)
    try gate.execute("SELECT pg_advisory_lock(7032)")
    let outcome = Locked<Tool.Outcome?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      let result = try? Tool.run(
        ["jobs", "expire-remembered", "--batch-size", "2", "--max-fraction", "1", "--json", "--database", nightly])
      outcome.update { $0 = result }
    }
    var waiting = false
    for _ in 0..<400 where !waiting {
      waiting =
        try admin.queryFirst(
          "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )?.decode("n", as: Int.self) == 1
      if !waiting { usleep(25_000) }
    }
    #expect(waiting)
    try pair(["restart-primary", dir])
    group.wait()
    let result = try #require(outcome.value)
    #expect(result.status == 69, "\(result.stderr)")
    #expect(result.stderr.contains("4 row(s) in 2 batch(es)"), "\(result.stderr)")

    let after = try Connection.connect(primary)
    try after.execute("DROP TRIGGER hold_third_delete ON hms2fa.remembered_browsers")
    let next = try Tool.run(
      ["jobs", "expire-remembered", "--batch-size", "2", "--max-fraction", "1", "--json", "--database", nightly])
    #expect(next.status == 0, "\(next.stderr)")
    let document = try JSONSerialization.jsonObject(with: Data(next.stdout.utf8)) as? [String: Any]
    #expect(document?["deleted"] as? Int == 4, "\(next.stdout)")
    #expect(document?["complete"] as? Bool == true, "\(next.stdout)")
    let left = try after.queryFirst("SELECT count(*)::int AS n FROM hms2fa.remembered_browsers")
    #expect(try left?.decode("n", as: Int.self) == 2)
  }
}
