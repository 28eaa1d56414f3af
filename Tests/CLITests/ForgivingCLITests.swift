import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// Typos at the desk get the closest command, any-case choices, one "no such account" message
/// with the close ids, and never the server's SQL words.
@Suite("forgiving input, one voice for errors")
struct ForgivingCLITests {
  @Test("an unknown command suggests the closest one and lists them (64); the parser's words never show")
  func commandTypos() throws {
    for (arguments, expected) in [
      (
        ["user", "shwo", "jd123"],
        "'shwo' is not a command of hms2fa-admin user; did you mean 'show'? (commands: show, find)"
      ),
      (["usr", "show", "jd123"], "'usr' is not a command of hms2fa-admin; did you mean 'user'?"),
      (["phone", "verfiy", "jd123"], "did you mean 'verify'?"),
      (["frobnicate"], "'frobnicate' is not a command of hms2fa-admin (commands: user, phone,"),
    ] {
      let out = try Tool.run(arguments)
      #expect(out.status == 64, "\(arguments)")
      #expect(out.stderr.hasPrefix("hms2fa-admin: '") && out.stderr.contains(expected), "\(out.stderr)")
      #expect(out.stderr.split(separator: "\n").count == 1)
      #expect(!out.stderr.contains("unexpected argument"))
    }
  }

  @Test("choices are taken in any case; a wrong one is refused with the list on one line")
  func choices() throws {
    let desk = try CLIDesk()
    let plan = try desk.run(
      ["enrollment", "reset", "jd123", "--verified-via", "In-Person", "--ticket", "INC1", "--dry-run"], as: desk.tier2)
    #expect(plan.status == 0, "\(plan.stderr)")
    let role = try desk.run(["staff", "grant", desk.tier1, "--role", "boss", "--ticket", "INC1"])
    #expect(role.status == 64)
    #expect(role.stderr.contains("'tier1', 'tier2', 'batch', 'auditor', 'signin', 'delivery'"), "\(role.stderr)")
    #expect(role.stderr.split(separator: "\n").count == 1)
    let via = try desk.run(["identity", "check", "jd123", "--via", "fax", "--ticket", "INC1"], as: desk.tier1)
    #expect(via.status == 64)
    #expect(via.stderr.contains("'sms' and 'voice'"), "\(via.stderr)")
  }

  @Test("\"no such account\" is one message everywhere, with up to three close ids")
  func noSuchAccount() throws {
    let desk = try CLIDesk()
    let db = try desk.database.connect()
    for id in ["jd124", "jd12", "xy999"] { try Fixtures.account(id, on: db) }
    let shown = try desk.run(["user", "show", "jd125"], as: desk.tier1)
    #expect(shown.status == 67)
    #expect(
      shown.stderr
        == "hms2fa-admin: no account has the HMS Account ID 'jd125'; close: jd12, jd123, jd124 "
        + "(hms2fa-admin user show jd12)\n", "\(shown.stderr)")
    // Found missing by the database, in a change: the same words.
    let revoked = try desk.run(
      ["remembered", "revoke", "jd125", "--ticket", "INC1", "--reason", "x"], as: desk.tier2)
    #expect(revoked.status == 67)
    #expect(revoked.stderr == shown.stderr, "\(revoked.stderr)")
    let none = try desk.run(["user", "show", "qq001"], as: desk.tier1)
    #expect(
      none.stderr
        == "hms2fa-admin: no account has the HMS Account ID 'qq001'; look for them with hms2fa-admin user find\n")
  }

  @Test("db status as a desk login: 77 in the desk's words, no SQL")
  func permissionWords() throws {
    let desk = try CLIDesk()
    let out = try desk.run(["db", "status"], as: desk.tier1)
    #expect(out.status == 77)
    #expect(out.stderr.contains("only the login that migrates may read"), "\(out.stderr)")
    #expect(!out.stderr.contains("permission denied") && !out.stderr.contains("hms2fa_meta"))
  }
}
