import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("enrollment reset and approval through the tool")
struct EnrollmentCLITests {
  @Test("enrollment reset: --yes off a terminal, the contract's fields, a notice, a request for high risk")
  func enrollmentReset() throws {
    let desk = try CLIDesk()
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
    #expect((try jsonObject(dry.stdout)["devices"] as? [Any])?.count == 1)
    let tier1 = try desk.run(base + ["--yes"], as: desk.tier1, environment: mail)
    #expect(tier1.status == 77)
    let card = try jsonObject(try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1).stdout)
    #expect(card["enrollment"] as? String == "enrolled", "nothing changed so far")
    let badVia = try desk.run(
      ["enrollment", "reset", "jd123", "--ticket", "INC5", "--verified-via", "trust-me", "--yes"], as: desk.tier2)
    #expect(badVia.status == 64)

    let done = try desk.run(base + ["--yes", "--json"], as: desk.tier2, environment: mail)
    #expect(done.status == 0, "\(done.stderr)")
    let result = try jsonObject(done.stdout)
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
    let pending = try jsonObject(request.stdout)
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

  @Test("tier 1 prepares what tier 2 carries out: the plan, a request any tier-2 agent approves, the hand-off words")
  func tier1Prepares() throws {
    let desk = try CLIDesk()
    let delivery = try DeliveryProcess(desk.database)
    let service = try delivery.start()
    defer { service.stop() }
    let base = ["enrollment", "reset", "jd123", "--ticket", "INC5", "--verified-via", "in-person"]
    let plan = try desk.run(base + ["--dry-run"], as: desk.tier1)
    #expect(plan.status == 0, "\(plan.stderr)")
    #expect(plan.stdout.contains("devices to retire") && plan.stdout.contains("(dry run: nothing was changed)"))
    // Without --request: 77, and the command to hand to a tier-2 agent (never the connection string).
    let direct = try desk.run(base + ["--yes"], as: desk.tier1)
    #expect(direct.status == 77)
    let words = direct.stderr.split(separator: "\n").last.map(String.init) ?? ""
    #expect(
      words.contains(
        "hand this to a tier-2 agent: hms2fa-admin enrollment reset jd123 --ticket INC5 --verified-via in-person"),
      "\(direct.stderr)")
    #expect(words.contains("--request") && !words.contains("--database") && !words.contains("ask an operator"))
    // At a terminal, tier 1 hears it before typing a confirmation that couldn't be used.
    let typed = try Tool.runInTerminal(base + ["--database", try desk.database.conninfo(user: desk.tier1)], rows: 100)
    #expect(typed.status == 77)
    #expect(
      typed.stdout.contains("hand this to a tier-2 agent") && !typed.stdout.contains("to reset it"), "\(typed.stdout)")
    // With --request: a pending request with the reason, approved by any tier-2 agent.
    let filed = try desk.run(base + ["--yes", "--request", "--reason", "new phone", "--json"], as: desk.tier1)
    #expect(filed.status == 0, "\(filed.stderr)")
    let request = try jsonObject(filed.stdout)
    #expect(request["status"] as? String == "pending_approval")
    #expect((request["approval_needed"] as? [String])?.first == "requested")
    let id = try #require(request["request_id"] as? Int)
    let card = try jsonObject(try desk.run(["user", "show", "jd123", "--json"], as: desk.tier1).stdout)
    #expect(card["enrollment"] as? String == "enrolled", "nothing reset yet")
    let approved = try desk.run(
      ["enrollment", "approve", String(id), "--ticket", "INC5", "--yes", "--json"], as: desk.tier2)
    #expect(approved.status == 0, "\(approved.stderr)")
    #expect(try jsonObject(approved.stdout)["status"] as? String == "reset")
    let reasons = try desk.database.connect().query(
      "SELECT reason FROM hms2fa.audit_events WHERE action = 'enrollment.reset_requested'")
    #expect(try reasons.map { try $0.decode("reason", as: String.self) } == ["new phone"])
  }
}
