import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("the tool: look-ups, connections, tickets, help")
struct LookupCLITests {
  @Test("user show prints the card; --json prints exactly one document with the contract's fields")
  func userShow() throws {
    let desk = try CLIDesk()
    let text = try desk.run(["user", "show", "jd123"], as: desk.tier1)
    #expect(text.status == 0)
    #expect(text.stdout.contains("Jane Doe"))
    #expect(text.stdout.contains("enrolled (\"Start setup\" is hidden)"))
    #expect(text.stderr.isEmpty)
    let out = try desk.run(["user", "show", "JANE_DOE@hms.harvard.edu", "--json"], as: desk.tier1)
    #expect(out.status == 0)
    let card = try jsonObject(out.stdout)
    #expect(card["account_id"] as? String == "jd123")
    #expect(card["enrollment"] as? String == "enrolled")
    #expect(card["start_setup_visible"] as? Bool == false)
    #expect((card["devices"] as? [[String: Any]])?.count == 1)
    #expect((card["remembered_browsers"] as? [String: Any])?["active"] as? Int == 1)
  }

  @Test("exit 67 for nobody, 64 for a malformed id, each with one line on stderr")
  func lookupErrors() throws {
    let desk = try CLIDesk()
    let missing = try desk.run(["user", "show", "zz999"], as: desk.tier1)
    #expect(missing.status == 67)
    #expect(missing.stderr.split(separator: "\n").count == 1)
    #expect(missing.stdout.isEmpty)
    let missingJSON = try desk.run(["user", "show", "zz999", "--json"], as: desk.tier1)
    #expect(missingJSON.status == 67)
    #expect((try jsonObject(missingJSON.stdout)["error"] as? [String: Any])?["exit_code"] as? Int == 67)
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
    let desk = try CLIDesk()
    let out = try desk.run(["user", "find", "jane", "--json"], as: desk.tier1)
    #expect(out.status == 0)
    let accounts = try #require(try jsonObject(out.stdout)["accounts"] as? [[String: Any]])
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
    let desk = try CLIDesk()
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
    let desk = try CLIDesk()
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
    #expect(try jsonObject(tier2.stdout)["revoked"] as? Int == 1)
    let again = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1"], as: desk.tier2)
    #expect(again.status == 0)
    #expect(again.stdout.contains("nothing to revoke"))
    let unknown = try desk.run(["remembered", "revoke", "zz999", "--ticket", "INC1"], as: desk.tier2)
    #expect(unknown.status == 67)
    let flag = try desk.run(["remembered", "revoke", "jd123", "--ticket", "INC1", "--bogus"], as: desk.tier2)
    #expect(flag.status == 64)
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
}
