import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// `user show` ends with the next step for what it shows, with the call's ticket filled in.
@Suite("the card's next step")
struct NextStepCLITests {
  @Test("each state names its next command, with the ticket; a disabled account never shows \"Start setup\"")
  func nextSteps() throws {
    let desk = try CLIDesk()
    let db = try desk.database.connect()
    try Fixtures.account("pd100", on: db)
    try Fixtures.device("pd100", activated: false, on: db)
    try Fixtures.account("ne200", on: db)
    try Fixtures.account("xo404", status: "disabled", on: db)
    try Fixtures.account("rc300", on: db)
    try Fixtures.device("rc300", isDefault: true, lastUsedHoursAgo: 2, on: db)
    try Fixtures.account("ol400", on: db)
    try Fixtures.device("ol400", isDefault: true, lastUsedHoursAgo: 24 * 400, on: db)
    let expected = [
      ("pd100", "a phone waits for activation", "hms2fa-admin activation send pd100 --ticket INC0012345"),
      ("ne200", "nothing to reset: \"Start setup\" is shown", nil),
      ("xo404", "the account is disabled", nil),
      (
        "rc300", "enrolled and in use",
        "hms2fa-admin enrollment reset rc300 --verified-via code-on-file --ticket INC0012345"
      ),
      ("ol400", "not used for 90 days or more", "hms2fa-admin identity check ol400 --via sms --ticket INC0012345"),
    ]
    for (account, words, command) in expected {
      let text = try desk.run(["user", "show", account, "--ticket", "INC0012345"], as: desk.tier1)
      #expect(text.status == 0, "\(text.stderr)")
      let last = text.stdout.split(separator: "\n").last.map(String.init) ?? ""
      #expect(last.hasPrefix("next: ") && last.contains(words), "\(account): \(last)")
      if let command { #expect(last.contains(command), "\(account): \(last)") }
      // The ticket from the environment, and the same step in JSON.
      let json = try desk.run(
        ["user", "show", account, "--json"], as: desk.tier1, environment: ["HMS2FA_TICKET": "INC0012345"])
      let document = try jsonObject(json.stdout)
      #expect(document["next_step"] as? String == String(last.dropFirst("next: ".count)), "\(account)")
    }
    let disabled = try desk.run(["user", "show", "xo404"], as: desk.tier1)
    #expect(!disabled.stdout.contains("\"Start setup\" is shown"), "\(disabled.stdout)")
    #expect(
      try jsonObject(try desk.run(["user", "show", "xo404", "--json"], as: desk.tier1).stdout)["start_setup_visible"]
        as? Bool == false)
    let found = try jsonObject(try desk.run(["user", "find", "xo404", "--json"], as: desk.tier1).stdout)
    #expect((found["accounts"] as? [[String: Any]])?.first?["start_setup_visible"] as? Bool == false)
    // Without a ticket the command shows where it goes; a bad one is refused.
    let placeholder = try desk.run(["user", "show", "pd100"], as: desk.tier1)
    #expect(placeholder.stdout.hasSuffix("--ticket TICKET\n"), "\(placeholder.stdout)")
    #expect(try desk.run(["user", "show", "pd100", "--ticket", "banana"], as: desk.tier1).status == 64)
  }
}

/// Times on screen in the agent's zone with an age; UTC ISO 8601 in JSON.
@Suite("times on screen")
struct TimesCLITests {
  @Test("text output follows TZ and says how long ago; --json stays UTC ISO 8601")
  func zones() throws {
    let desk = try CLIDesk()
    let db = try desk.database.connect()
    try db.execute("UPDATE hms2fa.devices SET last_used_at = now() - interval '3 days' WHERE account_id = 'jd123'")
    let boston = try desk.run(["user", "show", "jd123"], as: desk.tier1, environment: ["TZ": "America/New_York"])
    #expect(
      boston.stdout.contains(" EST (3 days ago)") || boston.stdout.contains(" EDT (3 days ago)"), "\(boston.stdout)")
    #expect(!boston.stdout.contains("UTC"))
    let tokyo = try desk.run(["user", "show", "jd123"], as: desk.tier1, environment: ["TZ": "Asia/Tokyo"])
    #expect(tokyo.stdout.contains(" GMT+9 (3 days ago)"), "\(tokyo.stdout)")
    let json = try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1, environment: ["TZ": "Asia/Tokyo"])
    let devices = try #require(try jsonObject(json.stdout)["devices"] as? [[String: Any]])
    #expect((devices.first?["last_used_at"] as? String)?.hasSuffix("Z") == true, "\(devices)")
  }
}
