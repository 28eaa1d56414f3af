import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.
@Suite("hms2fa-admin end to end")
struct CLITests {
  /// A migrated database with one person, and a tier1 and a tier2 login.
  struct Desk {
    let database: TestDatabase
    let tier1: String
    let tier2: String

    init() throws {
      database = try TestDatabase.create()
      let db = try database.connect()
      try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", on: db)
      try Fixtures.device("jd123", isDefault: true, on: db)
      try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: db)
      tier1 = try database.createLogin(.tier1)
      tier2 = try database.createLogin(.tier2)
    }

    func run(
      _ arguments: [String], as login: String? = nil, stdin: String? = nil, environment: [String: String] = [:]
    ) throws -> Tool.Outcome {
      try Tool.run(
        arguments + ["--database", try database.conninfo(user: login)], environment: environment, stdin: stdin)
    }
  }

  private func json(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
  }

  @Test("user show prints the card; --json prints exactly one document with the contract's fields")
  func userShow() throws {
    let desk = try Desk()
    let text = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(text.status == 0)
    #expect(text.stdout.contains("Jane Doe"))
    #expect(text.stdout.contains("enrolled (\"Start setup\" is hidden)"))
    #expect(text.stderr.isEmpty)
    let out = try desk.run(["user", "show", "JANE_DOE@hms.harvard.edu", "--json"], as: desk.tier1)
    #expect(out.status == 0)
    let card = try json(out.stdout)
    #expect(card["account_id"] as? String == "jd123")
    #expect(card["enrollment"] as? String == "enrolled")
    #expect(card["start_setup_visible"] as? Bool == false)
    #expect((card["devices"] as? [[String: Any]])?.count == 1)
    #expect((card["remembered_browsers"] as? [String: Any])?["active"] as? Int == 1)
  }

  @Test("exit 67 for nobody, 64 for a malformed id, each with one line on stderr")
  func lookupErrors() throws {
    let desk = try Desk()
    let missing = try desk.run(["user", "show", "zz999"], as: desk.tier1)
    #expect(missing.status == 67)
    #expect(missing.stderr.split(separator: "\n").count == 1)
    #expect(missing.stdout.isEmpty)
    let missingJSON = try desk.run(["user", "show", "zz999", "--json"], as: desk.tier1)
    #expect(missingJSON.status == 67)
    #expect((try json(missingJSON.stdout)["error"] as? [String: Any])?["exit_code"] as? Int == 67)
    for hostile in ["jd'123", "a;b", "ümlaut", "", String(repeating: "x", count: 4096), "jd%", "$(reboot)"] {
      let out = try desk.run(["user", "show", hostile], as: desk.tier1)
      #expect(out.status == 64, "\(hostile.prefix(12))")
      #expect(out.stderr.split(separator: "\n").count == 1, "\(hostile.prefix(12))")
      #expect(out.stderr.count < 300)
    }
    let find = try desk.run(["user", "find", "nomatch"], as: desk.tier1)
    #expect(find.status == 67)
  }

  @Test("user find lists matches as a table or JSON")
  func userFind() throws {
    let desk = try Desk()
    let out = try desk.run(["user", "find", "jane", "--json"], as: desk.tier1)
    #expect(out.status == 0)
    let accounts = try #require(try json(out.stdout)["accounts"] as? [[String: Any]])
    #expect(accounts.map { $0["account_id"] as? String } == ["jd123"])
  }

  @Test("an unreachable database is exit 69 within the timeout, naming socket and port")
  func unreachable() throws {
    let started = Date()
    let out = try Tool.run(["user", "show", "jd123", "--database", "host=/nonexistent/dir port=6543 connect_timeout=2"])
    #expect(out.status == 69)
    #expect(out.stderr.contains("/nonexistent/dir"))
    #expect(out.stderr.contains("6543"))
    #expect(out.stderr.split(separator: "\n").count == 1)
    #expect(Date().timeIntervalSince(started) < 10)
  }

  @Test("a missing database is 69; a refused password is 77; a password in argv is refused")
  func connectionProblems() throws {
    let desk = try Desk()
    let missing = try Tool.run(["user", "show", "jd123", "--database", try TestCluster.conninfo(database: "nope_db")])
    #expect(missing.status == 69)
    #expect(missing.stderr.contains("nope_db"))
    let login = try desk.database.createLogin(.tier1, password: "s3cret-pass")
    let wrong = try Tool.run(
      ["user", "show", "jd123", "--database", try desk.database.conninfo(user: login)],
      environment: ["PGPASSWORD": "not-it"])
    #expect(wrong.status == 77)
    #expect(!wrong.stderr.contains("not-it"))
    let right = try Tool.run(
      ["user", "show", "jd123", "--database", try desk.database.conninfo(user: login)],
      environment: ["PGPASSWORD": "s3cret-pass"])
    #expect(right.status == 0)
    let inArgv = try Tool.run(["user", "show", "jd123", "--database", "postgresql://u:hunter2@localhost/db"])
    #expect(inArgv.status == 64)
    #expect(!inArgv.stderr.contains("hunter2"))
    let env = try Tool.run(
      ["user", "show", "jd123"], environment: ["HMS2FA_DATABASE_URL": try desk.database.conninfo(user: desk.tier1)])
    #expect(env.status == 0)
    let bad = try Tool.run(["user", "show", "jd123"], environment: ["HMS2FA_DATABASE_URL": "host=x nonsense=1"])
    #expect(bad.status == 78)
  }

  @Test("changes need a valid --ticket (64) and the right tier (77, naming it)")
  func ticketsAndTiers() throws {
    let desk = try Desk()
    let noTicket = try desk.run(["remembered", "revoke", "jd123"], as: desk.tier2)
    #expect(noTicket.status == 64)
    #expect(noTicket.stderr.contains("--ticket"))
    let badTicket = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", String(repeating: "t", count: 65)], as: desk.tier2)
    #expect(badTicket.status == 64)
    let tier1 = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1"], as: desk.tier1)
    #expect(tier1.status == 77)
    #expect(tier1.stderr.contains("hms2fa_tier2"))
    let tier2 = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1", "--json"], as: desk.tier2)
    #expect(tier2.status == 0)
    #expect(try json(tier2.stdout)["revoked"] as? Int == 1)
    let again = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1"], as: desk.tier2)
    #expect(again.status == 0)
    #expect(again.stdout.contains("nothing to revoke"))
    let unknown = try desk.run(["remembered", "revoke", "zz999", "--ticket", "INC1"], as: desk.tier2)
    #expect(unknown.status == 67)
    let flag = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1", "--bogus"], as: desk.tier2)
    #expect(flag.status == 64)
  }

  @Test("audit log shows who did what; audit verify exits 65 naming a tampered event")
  func audit() throws {
    let desk = try Desk()
    _ = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", "INC7", "--reason", "laptop stolen"], as: desk.tier2)
    let log = try desk.run(["audit", "log", "--account", "jd123", "--json"], as: desk.tier1)
    #expect(log.status == 0)
    let events = try #require(try json(log.stdout)["events"] as? [[String: Any]])
    #expect(events.count == 1)
    #expect(events.first?["actor"] as? String == desk.tier2)
    #expect(events.first?["action"] as? String == "remembered.revoked")
    #expect(events.first?["ticket"] as? String == "INC7")
    #expect(events.first?["reason"] as? String == "laptop stolen")
    #expect((events.first?["details"] as? [String: Any])?["revoked"] as? Int == 1)
    let auditor = try desk.database.createLogin(.auditor)
    // The desk's logins were granted their tiers by hand: reported until an operator records them.
    let unrecorded = try desk.run(["audit", "verify", "--json"], as: auditor)
    #expect(unrecorded.status == 65)
    #expect(try json(unrecorded.stdout)["chain_ok"] as? Bool == true)
    #expect(unrecorded.stderr.contains("nobody recorded"))
    for (login, role) in [(desk.tier1, "tier1"), (desk.tier2, "tier2"), (auditor, "auditor")] {
      #expect(try desk.run(["staff", "grant", login, "--role", role, "--ticket", "OPS-1"]).status == 0)
    }
    let ok = try desk.run(["audit", "verify", "--json"], as: auditor)
    #expect(ok.status == 0, "\(ok.stderr)")
    #expect(try json(ok.stdout)["events"] as? Int == 4)
    let notAuditor = try desk.run(["audit", "verify"], as: desk.tier1)
    #expect(notAuditor.status == 77)
    try desk.database.connect().runScript(
      "SET session_replication_role = replica; UPDATE hms2fa.audit_events SET actor = 'someone' WHERE event_id = 1")
    let tampered = try desk.run(["audit", "verify"], as: auditor)
    #expect(tampered.status == 65)
    #expect(tampered.stderr.contains("event 1"))
  }

  @Test("staff grant/revoke/list manage tiers and are audited under the operator's login")
  func staff() throws {
    let desk = try Desk()
    let admin = try desk.database.connect()
    let login = "\(desk.database.name)_newagent"
    try admin.execute(Query(verbatim: "CREATE ROLE \(login) LOGIN"))
    try admin.execute(Query(verbatim: "GRANT CONNECT ON DATABASE \(desk.database.name) TO \(login)"))
    let grant = try desk.run(["staff", "grant", login, "--role", "tier1", "--ticket", "OPS-9"])
    #expect(grant.status == 0)
    let list = try desk.run(["staff", "list", "--json"])
    let staff = try #require(try json(list.stdout)["staff"] as? [[String: Any]])
    #expect(staff.contains { $0["login"] as? String == login && $0["role"] as? String == "tier1" })
    #expect(try desk.run(["user", "show", "jd123"], as: login).status == 0)
    let byAgent = try desk.run(["staff", "grant", login, "--role", "tier2", "--ticket", "OPS-9"], as: desk.tier2)
    #expect(byAgent.status == 77)
    #expect(try desk.run(["staff", "revoke", login, "--role", "tier1", "--ticket", "OPS-10"]).status == 0)
    #expect(try desk.run(["user", "show", "jd123"], as: login).status == 77)
    #expect(try desk.run(["staff", "grant", "no_such_login", "--role", "tier1", "--ticket", "OPS-9"]).status == 65)
    let events = try AuditLog.events(AuditFilter(), on: admin).filter { $0.action.hasPrefix("staff.") }
    #expect(events.map(\.action) == ["staff.granted", "staff.revoked"])
    #expect(events.allSatisfy { $0.actor == TestCluster.superuser })
  }

  @Test("db migrate and db status through the tool")
  func migrate() throws {
    let database = try TestDatabase.create(migrated: false)
    let first = try Tool.run(["db", "migrate", "--json", "--database", try database.conninfo()])
    #expect(first.status == 0)
    #expect((try json(first.stdout)["applied"] as? [String])?.count == Migrations.all.count)
    let second = try Tool.run(["db", "migrate", "--database", try database.conninfo()])
    #expect(second.status == 0)
    #expect(second.stdout.contains("up to date"))
    let status = try Tool.run(["db", "status", "--json", "--database", try database.conninfo()])
    #expect(try json(status.stdout)["pending"] as? Int == 0)
    let fresh = try TestDatabase.create(migrated: false)
    let unmigrated = try Tool.run(["user", "show", "jd123", "--database", try fresh.conninfo()])
    #expect(unmigrated.status == 78)
    #expect(unmigrated.stderr.contains("db migrate"))
  }

  @Test("accounts import: a batch login imports; a dry run prints the diff; bad rows 65 with line and column; tier1 77")
  func accountsImport() throws {
    let desk = try Desk()
    let batch = try desk.database.createLogin(.batch)
    func feed(_ text: String) throws -> String {
      let path = TestCluster.scratch + "/cli-feed-" + UUID().uuidString.prefix(8) + ".csv"
      try text.write(toFile: path, atomically: true, encoding: .utf8)
      return path
    }
    let path = try feed(
      "account_id,display_name,email,status,high_risk\r\nJD123,Jane Doe,jane_doe@HMS.harvard.edu,active,true\r\n"
        + "new1,\"New, Person\",new1@hms.harvard.edu,active,false\r\n")
    let dry = try desk.run(["accounts", "import", path, "--dry-run"], as: batch)
    #expect(dry.status == 0, "\(dry.stderr)")
    #expect(dry.stdout.contains("~ jd123 (line 2): high_risk false → true"), "\(dry.stdout)")
    #expect(dry.stdout.contains("+ new1 (line 3): New, Person <new1@hms.harvard.edu> active"), "\(dry.stdout)")
    #expect(dry.stdout.contains("would add 1, change 1, disable 0; 0 unchanged; nothing was changed"))
    let out = try desk.run(["accounts", "import", path, "--json"], as: batch)
    #expect(out.status == 0, "\(out.stderr)")
    let result = try json(out.stdout)
    #expect(result["rows"] as? Int == 2)
    #expect(result["added"] as? Int == 1)
    #expect(result["changed"] as? Int == 1)
    #expect(result["disabled"] as? Int == 0)
    #expect(result["unchanged"] as? Int == 0)
    #expect(result["event_id"] as? Int != nil)
    #expect(result["tries"] as? Int == 1)

    let refused = try desk.run(["accounts", "import", path], as: desk.tier1)
    #expect(refused.status == 77)
    #expect(refused.stderr.contains("hms2fa_batch"))
    let bad = try feed(
      "account_id,display_name,email,status,high_risk\nab1,A B,ab1@hms.harvard.edu,active,no\nzz9,Z,zz9,active,no\n")
    let badOut = try desk.run(["accounts", "import", bad, "--json"], as: batch)
    #expect(badOut.status == 65)
    #expect(badOut.stderr.split(separator: "\n").count == 1)
    #expect(badOut.stderr.contains("line 3, column 3 (email)"), "\(badOut.stderr)")
    #expect((try json(badOut.stdout)["error"] as? [String: Any])?["exit_code"] as? Int == 65)
    let truncated = try feed(
      "account_id,display_name,email,status,high_risk\nnew1,\"New, Person\",new1@hms.harvard.edu,active,0\n")
    let guardOut = try desk.run(["accounts", "import", truncated, "--disable-missing"], as: batch)
    #expect(guardOut.status == 65)
    #expect(guardOut.stderr.contains("would disable 1 of 2 active accounts"), "\(guardOut.stderr)")
    #expect(try desk.run(["accounts", "import", truncated, "--disable-missing", "--force"], as: batch).status == 64)
    #expect(try desk.run(["accounts", "import", path, "--max-disable-fraction", "2"], as: batch).status == 64)
    #expect(try desk.run(["accounts", "import", path + ".missing"], as: batch).status == 64)
    let forced = try desk.run(
      ["accounts", "import", truncated, "--disable-missing", "--force", "--ticket", "CHG1", "--json"], as: batch)
    #expect(forced.status == 0, "\(forced.stderr)")
    #expect(try json(forced.stdout)["disabled"] as? Int == 1)
  }

  @Test(
    "accounts import --roster-copy: the copy kept, then compared with; HMS2FA_ROSTER_COPY; a copy it can't keep is a warning"
  )
  func accountsImportRosterCopy() throws {
    let desk = try Desk()
    let batch = try desk.database.createLogin(.batch)
    let path = TestCluster.scratch + "/cli-copy-feed-" + UUID().uuidString.prefix(8) + ".csv"
    try "account_id,display_name,email,status,high_risk\njd123,Jane Doe,jd123@hms.harvard.edu,active,false\n"
      .write(toFile: path, atomically: true, encoding: .utf8)
    let directory = TestCluster.scratch + "/cli-copy-" + UUID().uuidString.prefix(8)
    let first = try desk.run(["accounts", "import", path, "--roster-copy", directory], as: batch)
    #expect(first.status == 0, "\(first.stderr)")
    #expect(
      first.stdout.contains("(kept a copy of the roster for the next import: \(directory)/roster-"), "\(first.stdout)")
    #expect(!first.stdout.contains("compared with the copy"))
    let second = try desk.run(
      ["accounts", "import", path, "--json"], as: batch, environment: ["HMS2FA_ROSTER_COPY": directory])
    #expect(second.status == 0, "\(second.stderr)")
    let result = try json(second.stdout)
    #expect(result["compared_with"] as? String == "copy")
    #expect((result["roster_copy"] as? String)?.hasPrefix(directory + "/roster-") == true)
    #expect(result["roster_copy_problem"] is NSNull)
    #expect(second.stderr.isEmpty, "\(second.stderr)")
    // Without the option or the variable, no copy: the roster is read from the registry.
    let plain = try json(try desk.run(["accounts", "import", path, "--json"], as: batch).stdout)
    #expect(plain["compared_with"] as? String == "registry")
    #expect(plain["roster_copy"] is NSNull)

    // A directory it can't make: the import is done, exit 0, and stderr says so in one line.
    let blocked = try desk.run(["accounts", "import", path, "--roster-copy", path + "/copies"], as: batch)
    #expect(blocked.status == 0, "\(blocked.stderr)")
    #expect(blocked.stdout.contains("imported "))
    let warning = blocked.stderr.split(separator: "\n")
    #expect(warning.count == 1)
    #expect(warning.first?.hasPrefix("warning: can't ") == true, "\(blocked.stderr)")
    #expect(warning.first?.contains("the next import reads the roster from the registry") == true)
    #expect(try desk.run(["accounts", "import", path, "--roster-copy", ""], as: batch).status == 64)
  }

  @Test("accounts import --metrics-file: the last run's figures; a refused or missing feed keeps the last success")
  func accountsImportMetrics() throws {
    let desk = try Desk()
    let batch = try desk.database.createLogin(.batch)
    let feed = TestCluster.scratch + "/metrics-feed-" + UUID().uuidString.prefix(8) + ".csv"
    try "account_id,display_name,email,status,high_risk\nnw1,New Person,nw1@hms.harvard.edu,active,false\n"
      .write(toFile: feed, atomically: true, encoding: .utf8)
    let path = TestCluster.scratch + "/roster-metrics-" + UUID().uuidString.prefix(8) + ".prom"
    let prefix = "hms2fa_roster_import_"
    func metrics() throws -> [String: String] {
      var values: [String: String] = [:]
      for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
      where line.hasPrefix(prefix) {
        let parts = line.dropFirst(prefix.count).split(separator: " ")
        values[String(parts[0])] = String(parts[1])
      }
      return values
    }
    let dry = try desk.run(["accounts", "import", feed, "--dry-run", "--metrics-file", path], as: batch)
    #expect(dry.status == 0, "\(dry.stderr)")
    #expect(!FileManager.default.fileExists(atPath: path))

    let ok = try desk.run(["accounts", "import", feed, "--metrics-file", path], as: batch)
    #expect(ok.status == 0, "\(ok.stderr)")
    let first = try metrics()
    #expect(first["exit_status"] == "0")
    #expect(first["rows"] == "1" && first["added_accounts"] == "1" && first["tries"] == "1")
    #expect(first["compared_with_copy"] == "0")
    let success = try #require(first["last_success_timestamp_seconds"])
    #expect(success != "0")

    let bad = TestCluster.scratch + "/metrics-bad-" + UUID().uuidString.prefix(8) + ".csv"
    try "account_id,display_name,email,status,high_risk\nnw2,X,not-an-email,active,false\n"
      .write(toFile: bad, atomically: true, encoding: .utf8)
    let refused = try desk.run(["accounts", "import", bad, "--metrics-file", path], as: batch)
    #expect(refused.status == 65)
    #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
    let second = try metrics()
    #expect(second["exit_status"] == "65")
    #expect(second["last_success_timestamp_seconds"] == success)
    #expect(second["rows"] == "0")
    let missing = try desk.run(["accounts", "import", bad + ".gone", "--metrics-file", path], as: batch)
    #expect(missing.status == 64)
    #expect(try metrics()["exit_status"] == "64")

    // A file it can't write: the import is done, and the tool says so with 78.
    let unwritable = try desk.run(["accounts", "import", feed, "--metrics-file", "/nonexistent-dir/x.prom"], as: batch)
    #expect(unwritable.status == 78)
    #expect(unwritable.stderr.contains("/nonexistent-dir/x.prom"))
  }

  @Test("every command has --help with an example, and completion scripts generate")
  func help() throws {
    let commands: [[String]] = [
      [], ["user", "show"], ["user", "find"], ["remembered", "list"], ["remembered", "revoke"],
      ["audit", "log"], ["audit", "verify"], ["staff", "grant"], ["staff", "revoke"], ["staff", "list"],
      ["db", "migrate"], ["db", "status"], ["activation", "send"], ["activation", "list"], ["activation", "revoke"],
      ["phone", "owner"], ["phone", "verify"], ["phone", "confirm"], ["identity", "check"], ["identity", "confirm"],
      ["enrollment", "reset"], ["enrollment", "approve"], ["enrollment", "requests"],
      ["jobs", "expire-remembered"], ["jobs", "purge-secrets"], ["delivery", "run"], ["delivery", "status"],
      ["accounts", "import"],
    ]
    for command in commands {
      let out = try Tool.run(command + ["--help"])
      #expect(out.status == 0, "\(command)")
      #expect(out.stdout.contains("Example"), "\(command)")
    }
    for shell in ["bash", "zsh", "fish"] {
      let out = try Tool.run(["--generate-completion-script", shell])
      #expect(out.status == 0)
      #expect(out.stdout.contains("hms2fa-admin"))
    }
  }

  @Test("activation send: the service emails the link to the email of record; the agent never sees it; no tier is 77")
  func activationSend() throws {
    let desk = try Desk()
    try Fixtures.device("jd123", activated: false, on: try desk.database.connect())
    let delivery = try DeliveryProcess(desk.database)
    let service = try delivery.start()
    defer { service.stop() }
    // The agent's own transport settings are not read: nothing goes where the agent points.
    let mine = try scratchDirectory("agent-maildir")
    let environment = ["HMS2FA_MAILER": "maildir:\(mine)", "HMS2FA_SMS": "spool:\(mine)"]
    let out = try desk.run(
      ["activation", "send", "jd123", "--ticket", "INC1", "--json"], as: desk.tier1, environment: environment)
    #expect(out.status == 0, "\(out.stderr)")
    let result = try json(out.stdout)
    #expect(result["link_id"] as? Int != nil)
    #expect(result["device_id"] as? Int != nil)
    #expect(result["expires_at"] as? String != nil)
    #expect(result["sent_to"] as? String == "jane_doe@hms.harvard.edu")
    #expect(result["delivery"] as? String == "sent")
    #expect(result["message_id"] as? Int != nil)
    let mails = try delivery.mails()
    try #require(mails.count == 1)
    let token = try #require(DeliveryProcess.token(in: mails[0]))
    #expect(token.count == 43)
    #expect(try FileManager.default.contentsOfDirectory(atPath: mine).isEmpty)

    let text = try desk.run(["activation", "send", "jd123", "--ticket", "INC1"], as: desk.tier1)
    #expect(text.status == 0)
    #expect(text.stdout.contains("to jane_doe@hms.harvard.edu, the email of record"))
    #expect(text.stdout.hasSuffix("delivery: sent\n"), "\(text.stdout)")
    let list = try desk.run(["activation", "list", "jd123"], as: desk.tier1)
    #expect(list.stdout.contains("superseded") && list.stdout.contains("outstanding"))
    for output in [out.stdout, out.stderr, text.stdout, text.stderr, list.stdout] {
      #expect(!output.contains(token))
    }

    let nobody = try desk.database.createLogin(nil)
    let refused = try desk.run(["activation", "send", "jd123", "--ticket", "INC1"], as: nobody)
    #expect(refused.status == 77)
    #expect(refused.stderr.contains("needs hms2fa_tier1"))
    let noTicket = try desk.run(["activation", "send", "jd123"], as: desk.tier1)
    #expect(noTicket.status == 64)
    let tooLong = try desk.run(
      ["activation", "send", "jd123", "--ticket", "INC1", "--valid-for", "8d"], as: desk.tier1)
    #expect(tooLong.status == 64)
    let badWait = try desk.run(["activation", "send", "jd123", "--ticket", "INC1", "--wait", "soon"], as: desk.tier1)
    #expect(badWait.status == 64)
    let revoke = try desk.run(
      ["activation", "revoke", "jd123", "--ticket", "INC1", "--reason", "e-mail re-sent", "--json"], as: desk.tier1)
    #expect(try json(revoke.stdout)["revoked"] as? Int == 1)
    let listed = try desk.run(["activation", "list", "jd123"], as: desk.tier1)
    #expect(listed.stdout.contains("e-mail re-sent"), "\(listed.stdout)")
  }

  @Test("no delivery service running: the link is queued, the command warns and exits 0; the service sends it later")
  func activationQueued() throws {
    let desk = try Desk()
    try Fixtures.device("jd123", activated: false, on: try desk.database.connect())
    let out = try desk.run(["activation", "send", "jd123", "--ticket", "INC1", "--wait", "1s"], as: desk.tier1)
    #expect(out.status == 0)
    #expect(out.stdout.hasSuffix("delivery: queued\n"), "\(out.stdout)")
    #expect(out.stderr.contains("warning: message") && out.stderr.contains("delivery status"))
    let status = try desk.run(["delivery", "status", "--json"], as: desk.tier1)
    let messages = try #require(try json(status.stdout)["messages"] as? [[String: Any]])
    #expect(messages.map { $0["state"] as? String } == ["queued"])
    #expect(messages.first?["recipient"] as? String == "jane_doe@hms.harvard.edu")
    let delivery = try DeliveryProcess(desk.database)
    #expect(try delivery.runOnce().status == 0)
    #expect(try delivery.mails().count == 1)
    let after = try desk.run(["delivery", "status"], as: desk.tier1)
    #expect(after.stdout.contains("no message is waiting"))
  }

  @Test("activation send with a sendmail that refuses: exit 69, one line, and the link no longer works")
  func activationDeliveryFailure() throws {
    let desk = try Desk()
    try Fixtures.device("jd123", activated: false, on: try desk.database.connect())
    let dir = try scratchDirectory("cli-sendmail")
    let program = try script(
      "cat > \(dir)/message\necho 'sendmail: fatal: recipient refused' >&2\nexit 1", in: dir, name: "sendmail")
    let delivery = try DeliveryProcess(desk.database, environment: ["HMS2FA_MAILER": "sendmail:\(program)"])
    let service = try delivery.start()
    defer { service.stop() }
    let out = try desk.run(["activation", "send", "jd123", "--ticket", "INC1"], as: desk.tier1)
    #expect(out.status == 69)
    #expect(out.stderr.split(separator: "\n").count == 1)
    #expect(out.stderr.contains("recipient refused") && out.stderr.contains("was revoked"), "\(out.stderr)")
    #expect(out.stdout.contains("delivery: failed"))
    let message = try String(contentsOfFile: dir + "/message", encoding: .utf8)
    let token = try #require(
      message.components(separatedBy: "\r\n").first { $0.hasPrefix("https://") }?.split(separator: "/").last)
    #expect(!out.stderr.contains(token) && !out.stdout.contains(token))
    let signin = try desk.database.connect(as: try desk.database.createLogin(.signin))
    let redeemed = try signin.queryFirst("SELECT hms2fa_api.redeem_activation_link(\(String(token))) AS d")
    #expect(try redeemed?.decode("d", as: Int64?.self) == nil)
  }

  @Test("phone verify and confirm: codes through the spool, the code on stdin, the contract's fields and exits")
  func phone() throws {
    let desk = try Desk()
    let admin = try desk.database.connect()
    try Fixtures.account("tl321", on: admin)
    try Fixtures.device("tl321", phone: "+16175550188", on: admin)
    // A service with no SMS gateway: the code fails, and is cancelled.
    let noGateway = try DeliveryProcess(desk.database, environment: ["HMS2FA_SMS": ""])
    let first = try noGateway.start()
    let unset = try desk.run(
      ["phone", "verify", "jd123", "617-555-0188", "--via", "sms", "--ticket", "T1"], as: desk.tier1)
    first.stop()
    #expect(unset.status == 69)
    #expect(unset.stderr.contains("HMS2FA_SMS"))
    let delivery = try DeliveryProcess(desk.database)
    let service = try delivery.start()
    defer { service.stop() }
    for bad in ["617-555", "1-800-FLOWERS", "+999 1234567", "12345678901234567890", ""] {
      let out = try desk.run(["phone", "owner", bad], as: desk.tier1)
      #expect(out.status == 65, "\(bad)")
      #expect(out.stderr.split(separator: "\n").count == 1, "\(bad)")
    }

    let sent = try desk.run(
      ["phone", "verify", "jd123", "(617) 555-0188", "--via", "sms", "--ticket", "T1", "--json"], as: desk.tier1)
    #expect(sent.status == 0, "\(sent.stderr)")
    let document = try json(sent.stdout)
    #expect(document["verification_id"] as? Int != nil)
    #expect(document["expires_at"] as? String != nil)
    #expect(document["delivery"] as? String == "sent")
    let code = try #require(try delivery.lastCode())
    #expect(!sent.stdout.contains(code) && !sent.stderr.contains(code))

    let tier1Release = try desk.run(
      ["phone", "confirm", "jd123", "+16175550188", "--ticket", "T1", "--release"], as: desk.tier1, stdin: code + "\n")
    #expect(tier1Release.status == 77)
    #expect(tier1Release.stderr.contains("hms2fa_tier2"))

    let confirmed = try desk.run(
      ["phone", "confirm", "jd123", "617.555.0188", "--ticket", "T1", "--release", "--json"], as: desk.tier2,
      stdin: code + "\n")
    #expect(confirmed.status == 0, "\(confirmed.stderr)")
    let result = try json(confirmed.stdout)
    #expect(result["verified"] as? Bool == true)
    #expect(result["released_from"] as? [String] == ["tl321"])
    let notices = try #require(result["notices"] as? [[String: Any]])
    #expect(notices.map { $0["delivery"] as? String } == ["sent"])
    #expect(try delivery.mails().count == 1)

    let owner = try json(try desk.run(["phone", "owner", "+1 617 555 0188", "--json"], as: desk.tier1).stdout)
    #expect(owner["phone"] as? String == "+16175550188")
    #expect((owner["accounts"] as? [Any])?.isEmpty == true)
    #expect((owner["history"] as? [[String: Any]])?.first?["account_id"] as? String == "tl321")
    #expect((owner["verifications"] as? [[String: Any]])?.first?["state"] as? String == "verified")
  }

  @Test("enrollment reset: --yes off a terminal, the contract's fields, a notice, a request for high risk")
  func enrollmentReset() throws {
    let desk = try Desk()
    let admin = try desk.database.connect()
    let delivery = try DeliveryProcess(desk.database)
    let service = try delivery.start()
    let mail: [String: String] = [:]
    let base = ["enrollment", "reset", "jd123", "--ticket", "INC5", "--verified-via", "in-person"]

    let noYes = try desk.run(base, as: desk.tier2, environment: mail)
    #expect(noYes.status == 64)
    #expect(noYes.stderr.contains("--yes"))
    let dry = try desk.run(base + ["--dry-run", "--json"], as: desk.tier2, environment: mail)
    #expect(dry.status == 0)
    #expect((try json(dry.stdout)["devices"] as? [Any])?.count == 1)
    let tier1 = try desk.run(base + ["--yes"], as: desk.tier1, environment: mail)
    #expect(tier1.status == 77)
    let card = try json(try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1).stdout)
    #expect(card["enrollment"] as? String == "enrolled", "nothing changed so far")
    let badVia = try desk.run(
      ["enrollment", "reset", "jd123", "--ticket", "INC5", "--verified-via", "trust-me", "--yes"], as: desk.tier2)
    #expect(badVia.status == 64)

    let done = try desk.run(base + ["--yes", "--json"], as: desk.tier2, environment: mail)
    #expect(done.status == 0, "\(done.stderr)")
    let result = try json(done.stdout)
    #expect(result["status"] as? String == "reset")
    #expect(result["devices_retired"] as? Int == 1)
    #expect(result["links_revoked"] as? Int == 0)
    #expect(result["browsers_revoked"] as? Int == 1)
    #expect(result["enrollment"] as? String == "not_enrolled")
    #expect(result["start_setup_visible"] as? Bool == true)
    #expect(result["notice_sent"] as? Bool == true)
    #expect(result["delivery"] as? String == "sent")
    #expect(try delivery.mails().count == 1)
    let nothing = try desk.run(base + ["--yes"], as: desk.tier2, environment: mail)
    #expect(nothing.status == 0)
    #expect(nothing.stdout.contains("nothing to reset"))

    try Fixtures.account("dean01", highRisk: true, on: admin)
    try Fixtures.device("dean01", on: admin)
    let request = try desk.run(
      ["enrollment", "reset", "dean01", "--ticket", "INC6", "--verified-via", "in-person", "--yes", "--json"],
      as: desk.tier2, environment: mail)
    #expect(request.status == 0)
    let pending = try json(request.stdout)
    #expect(pending["status"] as? String == "pending_approval")
    let id = try #require(pending["request_id"] as? Int)
    let own = try desk.run(
      ["enrollment", "approve", String(id), "--ticket", "INC6", "--yes"], as: desk.tier2, environment: mail)
    #expect(own.status == 77)
    let second = try desk.database.createLogin(.tier2)
    service.stop()
    let broken = try DeliveryProcess(desk.database, environment: ["HMS2FA_MAILER": "sendmail:/bin/false"]).start()
    defer { broken.stop() }
    let unconfirmed = try desk.run(["enrollment", "approve", String(id), "--ticket", "INC6"], as: second)
    #expect(unconfirmed.status == 64, "off a terminal, an approval needs --yes")
    let approved = try desk.run(["enrollment", "approve", String(id), "--ticket", "INC6", "--yes"], as: second)
    #expect(
      approved.stderr.contains("reset request \(id) for dean01") && approved.stderr.contains("caller verified by"))
    #expect(approved.status == 69, "a notice that can't be delivered is reported")
    #expect(approved.stderr.contains("the reset stands"))
    #expect(approved.stdout.contains("\"Start setup\" now shows"))
    #expect(approved.stdout.contains("delivery: failed"))
  }
}
