import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The rules the database holds against its own clients: a section of tests for each hole
/// found by reading the schema as an attacker with each role would, with raw SQL where psql is
/// the way in.
@Suite("rules the database holds against its own clients")
struct HardeningTests {
  /// Waiting codes whose code the test knows.
  enum Codes {
    static let code = "123456"
    static let salt: [UInt8] = Array(repeating: 0xAB, count: 16)

    /// A waiting ownership code for `account` on `phone` whose code is `code`; returns its id.
    static func add(
      _ account: String, phone: String, expiresIn: String = "10 minutes", on admin: Connection
    ) throws -> Int64 {
      let row = try admin.queryFirst(
        """
        INSERT INTO hms2fa.phone_verifications
               (purpose, account_id, phone, channel, code_hash, salt, ticket, expires_at)
        VALUES ('ownership', \(account), \(phone), 'sms', sha256(\(salt) || convert_to(\(code), 'UTF8')), \(salt),
                'T0', now() + \(expiresIn)::interval)
        RETURNING verification_id
        """)
      return try #require(try row?.decode("verification_id", as: Int64.self))
    }

    /// A raw try at cd222's waiting code on +16175550188, as psql would make it: the right code,
    /// or a wrong one; its id.
    static func attempt(wrongGuess: Int? = nil) -> Query {
      let digits = wrongGuess.map { String(format: "%06d", 900_000 + $0) } ?? code
      return "SELECT hms2fa_api.try_code('cd222', 'ownership', '+16175550188', \(digits), 'T1') AS try_id"
    }

    /// A raw call for the verdict on try `id`.
    static func verdict(_ id: Int64) -> Query {
      "SELECT outcome FROM hms2fa_api.confirm_verification(\(id), 'T1')"
    }

    /// A committed try (the connection is outside a transaction), then its verdict.
    static func guess(wrongGuess: Int? = nil, on db: Connection) throws -> String? {
      let id = try #require(try db.queryFirst(attempt(wrongGuess: wrongGuess))?.decode("try_id", as: Int64.self))
      return try db.queryFirst(verdict(id))?.decode("outcome", as: String.self)
    }

    static func attempts(on admin: Connection) throws -> Int? {
      try admin.queryFirst("SELECT attempts FROM hms2fa.phone_verifications")?.decode("attempts", as: Int.self)
    }
  }

  /// Waits until a backend of `login` waits for a lock (a row another session holds).
  // 1. The sign-in service's column grants ---------------------------------------------------

  @Test("a revoked browser stays revoked, whoever tries; revoking again keeps the first time")
  func revocationKept() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 10, on: admin)
    try admin.execute(
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
      VALUES (sha256('laptop'::bytea), 'jd123', 'laptop', now() + interval '10 days')
      """)
    // The desk revokes both.
    let tier2 = try database.connect(as: try database.createLogin(.tier2))
    #expect(
      try tier2.queryFirst("SELECT hms2fa_api.revoke_remembered_browsers('jd123', 'INC1', NULL) AS n")?.decode(
        "n", as: Int.self) == 2)
    let revokedAt = "SELECT string_agg(revoked_at::text, ',' ORDER BY browser) AS r FROM hms2fa.remembered_browsers"
    let before = try admin.queryFirst(Query(verbatim: revokedAt))?.decode("r", as: String.self)

    let signin = try database.connect(as: try database.createLogin(.signin))
    let undo: [Query] = [
      "UPDATE hms2fa.remembered_browsers SET revoked_at = NULL",
      "UPDATE hms2fa.remembered_browsers SET revoked_at = NULL WHERE token_hash = sha256('laptop'::bytea)",
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
      VALUES (sha256('laptop'::bytea), 'jd123', 'laptop', now() + interval '30 days')
      ON CONFLICT (token_hash) DO UPDATE SET revoked_at = NULL
      """,
    ]
    for statement in undo {
      let error = #expect(throws: PostgresError.self, "\(statement.sql)") { try signin.execute(statement) }
      #expect(error?.sqlState == "H2P03", "\(statement.sql)")
      #expect(error.map { deskError($0).status } == .noPermission)
    }
    // Not the owner either (a superuser reaching it), nor a superuser.
    try admin.execute("SET ROLE hms2fa_owner")
    let owner = #expect(throws: PostgresError.self) {
      try admin.execute("UPDATE hms2fa.remembered_browsers SET revoked_at = NULL")
    }
    #expect(owner?.sqlState == "H2P03")
    try admin.execute("RESET ROLE")
    let superuser = #expect(throws: PostgresError.self) {
      try admin.execute("UPDATE hms2fa.remembered_browsers SET revoked_at = NULL")
    }
    #expect(superuser?.sqlState == "H2P03")

    // Revoking again by hash (the sign-in service's right) works and changes nothing.
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = now() WHERE token_hash = sha256('laptop'::bytea)") == 1)
    #expect(try admin.queryFirst(Query(verbatim: revokedAt))?.decode("r", as: String.self) == before)
    #expect(
      try RememberedBrowsers.list(for: try AccountID(parsing: "jd123"), on: tier2).allSatisfy { $0.state == .revoked })
  }

  @Test("the sign-in service revokes by hash; a time far ahead (a wrong clock) revokes as of now")
  func revocationTime() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    for name in ["a", "b", "c"] {
      try admin.execute(
        """
        INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
        VALUES (sha256(\(name)::bytea), 'jd123', \(name), now() + interval '10 days')
        """)
    }
    let signin = try database.connect(as: try database.createLogin(.signin))
    // A sign-in host a day ahead: the browser is revoked all the same, as of the database's clock.
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = now() + interval '1 day' WHERE token_hash = sha256('a'::bytea)"
      ) == 1)
    let a = try admin.queryFirst(
      "SELECT revoked_at <= clock_timestamp() AS now_at_most FROM hms2fa.remembered_browsers WHERE browser = 'a'")
    #expect(try a?.decode("now_at_most", as: Bool.self) == true)
    // A sign-in host's clock a little ahead of the database's.
    #expect(
      try signin.execute(
        "UPDATE hms2fa.remembered_browsers SET revoked_at = clock_timestamp() + interval '2 minutes' WHERE browser = 'b'"
      ) == 1)
    let left = try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.remembered_browsers WHERE revoked_at IS NULL")
    #expect(try left?.decode("n", as: Int.self) == 1)
  }

  @Test("last_used_at only moves forward: the reset's 24-hour rule can't be switched off")
  func lastUseForward() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    let device = try Fixtures.device("jd123", isDefault: true, lastUsedHoursAgo: 2, on: admin)
    let agent = try database.connect(as: try database.createLogin(.tier2))
    let account = try AccountID(parsing: "jd123")
    let ticket = try Ticket(parsing: "INC1")
    func approvalNeeded() throws -> [String] {
      try EnrollmentReset.reset(
        account, ticket: ticket, verifiedVia: .callback, reason: nil, dryRun: true, on: agent
      ).approvalNeeded
    }
    #expect(try approvalNeeded() == ["device_used_in_last_24_hours"])
    let lastUse = "SELECT last_used_at::text AS t FROM hms2fa.devices"
    let before = try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self)

    let signin = try database.connect(as: try database.createLogin(.signin))
    for statement: Query in [
      "UPDATE hms2fa.devices SET last_used_at = now() - interval '3 days' WHERE device_id = \(device)",
      "UPDATE hms2fa.devices SET last_used_at = NULL WHERE device_id = \(device)",
    ] {
      #expect(try signin.execute(statement) == 1)
      #expect(try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self) == before)
    }
    #expect(try approvalNeeded() == ["device_used_in_last_24_hours"])
    // Nor by the owner.
    try admin.execute("SET ROLE hms2fa_owner")
    try admin.execute("UPDATE hms2fa.devices SET last_used_at = '2000-01-01'")
    try admin.execute("RESET ROLE")
    #expect(try admin.queryFirst(Query(verbatim: lastUse))?.decode("t", as: String.self) == before)

    // Two days ahead (a wrong clock) counts as a use now, not as one in two days.
    #expect(try signin.execute("UPDATE hms2fa.devices SET last_used_at = now() + interval '2 days'") == 1)
    let capped = try admin.queryFirst("SELECT last_used_at <= clock_timestamp() AS now_at_most FROM hms2fa.devices")
    #expect(try capped?.decode("now_at_most", as: Bool.self) == true)
    // Forward, and a few minutes ahead (the sign-in host's clock), is what the service does.
    #expect(try signin.execute("UPDATE hms2fa.devices SET last_used_at = now()") == 1)
    #expect(try signin.execute("UPDATE hms2fa.devices SET last_used_at = clock_timestamp() + interval '1 minute'") == 1)
    let moved = try admin.queryFirst("SELECT last_used_at > now() AS ahead FROM hms2fa.devices")
    #expect(try moved?.decode("ahead", as: Bool.self) == true)
  }

  // 2. Audit events last ---------------------------------------------------------------------

  @Test("approving a reset while a device row is held: the holder can still write an event, no deadlock")
  func approveWritesEventsLast() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", highRisk: true, on: admin)
    try Fixtures.device("jd123", isDefault: true, on: admin)
    let requester = try database.connect(as: try database.createLogin(.tier2))
    let approverLogin = try database.createLogin(.tier2)
    let ticket = try Ticket(parsing: "INC1")
    let request = try EnrollmentReset.reset(
      try AccountID(parsing: "jd123"), ticket: ticket, verifiedVia: .inPerson, reason: nil, dryRun: false,
      on: requester)
    let id = try #require(request.requestID)

    // As a reset or a release of one of the account's devices would: the device row, then an event.
    let holder = try database.connect()
    try holder.execute("BEGIN")
    try holder.execute("SELECT 1 FROM hms2fa.devices WHERE account_id = 'jd123' FOR UPDATE")
    let result = Locked<Result<ResetOutcome.Status, Error>?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      let outcome = Result {
        try EnrollmentReset.approve(
          id, ticket: try Ticket(parsing: "INC2"), on: try database.connect(as: approverLogin)
        )
        .status
      }
      result.update { $0 = outcome }
    }
    #expect(try Fixtures.waitForLockWait(of: approverLogin, on: admin))
    // The approval waits for the device without holding the chain's head.
    try holder.execute("SET lock_timeout = '5s'")
    try holder.execute("SELECT hms2fa.audit('test.held_device', 'jd123', 'T1', NULL, '{}')")
    try holder.execute("COMMIT")
    group.wait()
    #expect(try result.value?.get() == .reset)
    #expect(
      try Fixtures.auditActions(on: admin) == [
        "enrollment.reset_requested", "test.held_device", "enrollment.reset_approved", "enrollment.reset",
      ])
    let verified = try AuditLog.verify(on: try database.connect(as: try database.createLogin(.auditor)))
    #expect(verified.ok)
  }

  @Test("a release while the old holder's device row is held: no deadlock, the events after the devices")
  func releaseWritesEventsLast() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    try Fixtures.account("tl321", on: admin)
    let oldDevice = try Fixtures.device("tl321", phone: "+16175550188", isDefault: true, on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", on: admin)
    let agentLogin = try database.createLogin(.tier2)

    let holder = try database.connect()
    try holder.execute("BEGIN")
    try holder.execute("SELECT 1 FROM hms2fa.devices WHERE device_id = \(oldDevice) FOR UPDATE")
    let result = Locked<Result<[String], Error>?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      let outcome = Result {
        try PhoneVerification.confirm(
          try AccountID(parsing: "cd222"), purpose: .ownership,
          phone: try PhoneNumber(parsing: "+16175550188", defaultRegion: "US"), code: Codes.code,
          ticket: try Ticket(parsing: "INC1"), release: true, on: try database.connect(as: agentLogin)
        ).released.map(\.accountId)
      }
      result.update { $0 = outcome }
    }
    #expect(try Fixtures.waitForLockWait(of: agentLogin, on: admin))
    try holder.execute("SET lock_timeout = '5s'")
    try holder.execute("SELECT hms2fa.audit('test.held_device', 'tl321', 'T1', NULL, '{}')")
    try holder.execute("COMMIT")
    group.wait()
    #expect(try result.value?.get() == ["tl321"])
    #expect(try Fixtures.auditActions(on: admin) == ["test.held_device", "phone.verified", "phone.released"])
    let released = try admin.queryFirst(
      "SELECT account_id, details->'device_ids' AS ids FROM hms2fa.audit_events WHERE action = 'phone.released'")
    #expect(try released?.decode("account_id", as: String.self) == "tl321")
    #expect(try released?.decode("ids", as: String.self) == "[\(oldDevice)]")
  }

  // 3. Code guessing -------------------------------------------------------------------------

  @Test("a try is judged only once committed: in its own transaction or a subtransaction it learns nothing")
  func uncommittedTries() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", on: admin)
    let tier1 = try database.connect(as: try database.createLogin(.tier1))
    // Guesses in subtransactions rolled back, as an attacker in psql would try them.
    let refused = #expect(throws: PostgresError.self) {
      try tier1.execute(
        Query(
          verbatim: """
            DO $$
            DECLARE
              v_try bigint;
              v_outcome text;
            BEGIN
              FOR i IN 1..3 LOOP
                BEGIN
                  v_try := hms2fa_api.try_code('cd222', 'ownership', '+16175550188', (900000 + i)::text, 'T1');
                  SELECT outcome INTO v_outcome FROM hms2fa_api.confirm_verification(v_try, 'T1');
                  RAISE EXCEPTION 'take the try back (%)', v_outcome USING ERRCODE = 'P0001';
                EXCEPTION WHEN raise_exception THEN
                  NULL;
                END;
              END LOOP;
            END
            $$
            """))
    }
    #expect(refused?.sqlState == "H2U07", "the verdict is refused before any outcome is known")
    // The same in an explicit transaction.
    try tier1.execute("BEGIN")
    let id = try #require(try tier1.queryFirst(Codes.attempt())?.decode("try_id", as: Int64.self))
    let inside = #expect(throws: PostgresError.self) { try tier1.execute(Codes.verdict(id)) }
    #expect(inside?.sqlState == "H2U07")
    try tier1.execute("ROLLBACK")
    #expect(try Codes.attempts(on: admin) == 0)
    #expect(try Fixtures.auditActions(on: admin).isEmpty)
    // Committed, the right code verifies.
    #expect(try Codes.guess(on: tier1) == "verified")
  }

  @Test("five committed tries end the code, whatever is rolled back afterwards")
  func triesCannotBeTakenBack() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", on: admin)
    let tier1 = try database.connect(as: try database.createLogin(.tier1))
    var tries: [Int64] = []
    for n in 0..<5 {
      tries.append(try #require(try tier1.queryFirst(Codes.attempt(wrongGuess: n))?.decode("try_id", as: Int64.self)))
    }
    // The verdicts asked for in a transaction that is rolled back: the tries still count, and
    // asking again gives the same verdict (each try carries one guess).
    try tier1.execute("BEGIN")
    let verdicts = try tries.map { try tier1.queryFirst(Codes.verdict($0))?.decode("outcome", as: String.self) }
    #expect(verdicts == ["locked", "not_pending", "not_pending", "not_pending", "not_pending"])
    try tier1.execute("ROLLBACK")
    #expect(try Codes.attempts(on: admin) == 5)
    #expect(try tier1.queryFirst(Codes.verdict(tries[0]))?.decode("outcome", as: String.self) == "locked")
    // The right code has no try left.
    let sixth = #expect(throws: PostgresError.self) { try tier1.execute(Codes.attempt()) }
    #expect(sixth?.sqlState == "H2D05")
    let state = try admin.queryFirst("SELECT state FROM hms2fa.phone_verifications")
    #expect(try state?.decode("state", as: String.self) == "failed")
    // A try is judged once.
    let twice = #expect(throws: PostgresError.self) { try tier1.execute(Codes.verdict(tries[0])) }
    #expect(twice?.sqlState == "H2D05")
  }

  @Test("tries from parallel sessions are each counted: five in all, the rest refused")
  func parallelTries() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", on: admin)
    let logins = try (0..<8).map { _ in try database.createLogin(.tier1) }
    let outcomes = Locked<[String]>([])
    let group = DispatchGroup()
    for (n, login) in logins.enumerated() {
      group.enter()
      Thread.detachNewThread {
        defer { group.leave() }
        do {
          let db = try database.connect(as: login)
          let outcome = try Codes.guess(wrongGuess: n, on: db) ?? "none"
          outcomes.update { $0.append(outcome) }
        } catch let error as PostgresError {
          outcomes.update { $0.append(error.sqlState ?? "?") }
        } catch {
          outcomes.update { $0.append("\(error)") }
        }
      }
    }
    group.wait()
    #expect(outcomes.value.filter { $0 == "H2D05" }.count == 3, "\(outcomes.value)")
    // The five tries made are judged: wrong, or over once the fifth wrong one ended the code.
    #expect(
      outcomes.value.filter { ["wrong_code", "locked", "not_pending"].contains($0) }.count == 5, "\(outcomes.value)")
    #expect(try Codes.attempts(on: admin) == 5)
  }

  @Test("a try is judged only for the login that made it")
  func othersTries() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", on: admin)
    let mine = try database.connect(as: try database.createLogin(.tier1))
    let other = try database.connect(as: try database.createLogin(.tier2))
    let id = try #require(try mine.queryFirst(Codes.attempt())?.decode("try_id", as: Int64.self))
    let refused = #expect(throws: PostgresError.self) { try other.execute(Codes.verdict(id)) }
    #expect(refused?.sqlState == "H2D05")
    #expect(try mine.queryFirst(Codes.verdict(id))?.decode("outcome", as: String.self) == "verified")
  }

  @Test("a code that expires during a transaction is refused in it")
  func expiredInTransaction() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("cd222", on: admin)
    _ = try Codes.add("cd222", phone: "+16175550188", expiresIn: "2 seconds", on: admin)
    let tier1 = try database.connect(as: try database.createLogin(.tier1))
    let id = try #require(try tier1.queryFirst(Codes.attempt())?.decode("try_id", as: Int64.self))
    try tier1.execute("BEGIN")
    let started = try #require(try tier1.queryFirst("SELECT now()::text AS t")?.decode("t", as: String.self))
    try tier1.execute("SELECT pg_sleep(2.5)")
    #expect(try tier1.queryFirst(Codes.verdict(id))?.decode("outcome", as: String.self) == "expired")
    try tier1.execute("COMMIT")
    // The transaction began while the code still worked: its now() alone would have let it in.
    let row = try admin.queryFirst(
      "SELECT \(started)::timestamptz < expires_at AS began_before, state FROM hms2fa.phone_verifications")
    #expect(try row?.decode("began_before", as: Bool.self) == true)
    #expect(try row?.decode("state", as: String.self) == "expired")
  }

  // 4. Operators: see TrustTests (since 0026 an operator needs no CREATEROLE) -----------------

  // 0018. One way in for a reset -------------------------------------------------------------

  @Test("tier2 resets only through the six-argument function, and a NULL dry-run flag resets nothing")
  func resetEntryPoint() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", name: "Jane Doe", on: admin)
    try Fixtures.device("jd123", isDefault: true, on: admin)
    let tier2 = try database.connect(as: try database.createLogin(.tier2))
    let fiveArguments = #expect(throws: PostgresError.self) {
      try tier2.execute("SELECT hms2fa_api.reset_enrollment('jd123', 'INC1', 'in-person', NULL, false)")
    }
    #expect(fiveArguments?.sqlState == SQLState.insufficientPrivilege)
    let undecided = #expect(throws: PostgresError.self) {
      try tier2.execute("SELECT hms2fa_api.reset_enrollment('jd123', 'INC1', 'in-person', NULL, NULL, NULL)")
    }
    #expect(undecided?.sqlState == "H2U09")
    let live = try admin.queryFirst("SELECT count(*) AS n FROM hms2fa.devices WHERE retired_at IS NULL")
    #expect(try live?.decode("n", as: Int64.self) == 1)
    #expect(try Fixtures.auditActions(on: admin).isEmpty)
    // The six-argument function still resets.
    let reset = try tier2.queryFirst(
      "SELECT hms2fa_api.reset_enrollment('jd123', 'INC1', 'in-person', NULL, false, NULL)::text AS r")
    #expect(try reset?.decode("r", as: String.self).contains("\"devices_retired\": 1") == true)
  }

  // 5. The expiry doesn't stop early ---------------------------------------------------------

  @Test("a batch whose rows a sign-in moved meanwhile takes them anyway; the run ends complete with none left")
  func expiryNotFinishedEarly() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    try Fixtures.account("jd123", on: admin)
    let batchLogin = try database.createLogin(.batch)
    // Ten rows sharing one expires_at (more than a batch of 4: the ctid path), five after them,
    // twenty live.
    try admin.execute(
      """
      INSERT INTO hms2fa.remembered_browsers (token_hash, account_id, browser, expires_at)
      SELECT sha256(convert_to(gen_random_uuid()::text, 'UTF8')), 'jd123', kind || '-' || i,
             CASE kind WHEN 'tied' THEN now() - interval '3 days'
                       WHEN 'later' THEN now() - interval '2 days' + i * interval '1 second'
                       ELSE now() + interval '2 days' END
        FROM unnest(ARRAY['tied', 'later', 'live']) kind,
             generate_series(1, CASE kind WHEN 'tied' THEN 10 WHEN 'later' THEN 5 ELSE 20 END) i
      """)
    // A sign-in revoking the tied rows, uncommitted: each update moves its row to a new ctid.
    let signin = try database.connect(as: try database.createLogin(.signin))
    try signin.execute("BEGIN")
    #expect(
      try signin.execute("UPDATE hms2fa.remembered_browsers SET revoked_at = now() WHERE browser LIKE 'tied-%'") == 10)
    let result = Locked<Result<ExpiryRun, Error>?>(nil)
    let group = DispatchGroup()
    group.enter()
    Thread.detachNewThread {
      defer { group.leave() }
      let outcome = Result<ExpiryRun, Error> {
        try RememberedExpiry.run(
          ExpiryPlan(batchSize: 4, lockTimeoutMilliseconds: 20_000), on: try database.connect(as: batchLogin))
      }
      result.update { $0 = outcome }
    }
    // The batch has picked the tied rows and waits for the sign-in's transaction.
    #expect(try Fixtures.waitForLockWait(of: batchLogin, on: admin))
    try signin.execute("COMMIT")
    group.wait()
    let run = try #require(try result.value?.get())
    #expect(run.complete)
    #expect(run.deleted == 15)
    let left = try admin.queryFirst(
      "SELECT count(*) FILTER (WHERE expires_at < now()) AS expired, count(*) AS all FROM hms2fa.remembered_browsers")
    #expect(try left?.decode("expired", as: Int.self) == 0)
    #expect(try left?.decode("all", as: Int.self) == 20)
  }
}
