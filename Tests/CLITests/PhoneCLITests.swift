import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("phone verify and confirm through the tool")
struct PhoneCLITests {
  @Test("phone verify and confirm: codes through the spool, the code on stdin, the contract's fields and exits")
  func phone() throws {
    let desk = try CLIDesk()
    let admin = try desk.database.connect()
    try Fixtures.account("tl321", on: admin)
    try Fixtures.device("tl321", phone: "+16175550188", on: admin)
    // A service with no SMS gateway: the code fails, and is cancelled.
    let noGateway = try DeliveryProcess(desk.database, environment: ["HMS2FA_SMS": ""])
    let first = try noGateway.start()
    let unset = try desk.run(
      ["phone", "verify", "jd123", "617-555-0188", "--via", "sms", "--ticket", "TK1"], as: desk.tier1)
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
      ["phone", "verify", "jd123", "(617) 555-0188", "--via", "sms", "--ticket", "TK1", "--json"], as: desk.tier1)
    #expect(sent.status == 0, "\(sent.stderr)")
    let document = try jsonObject(sent.stdout)
    #expect(document["verification_id"] as? Int != nil)
    #expect(document["expires_at"] as? String != nil)
    #expect(document["delivery"] as? String == "sent")
    let code = try #require(try delivery.lastCode())
    #expect(!sent.stdout.contains(code) && !sent.stderr.contains(code))

    let tier1Release = try desk.run(
      ["phone", "confirm", "jd123", "+16175550188", "--ticket", "TK1", "--release"], as: desk.tier1, stdin: code + "\n")
    #expect(tier1Release.status == 77)
    #expect(tier1Release.stderr.contains("hms2fa_tier2"))

    let confirmed = try desk.run(
      ["phone", "confirm", "jd123", "617.555.0188", "--ticket", "TK1", "--release", "--json"], as: desk.tier2,
      stdin: code + "\n")
    #expect(confirmed.status == 0, "\(confirmed.stderr)")
    let result = try jsonObject(confirmed.stdout)
    #expect(result["verified"] as? Bool == true)
    #expect(result["released_from"] as? [String] == ["tl321"])
    let notices = try #require(result["notices"] as? [[String: Any]])
    #expect(notices.map { $0["delivery"] as? String } == ["sent"])
    #expect(try delivery.mails().count == 1)

    let owner = try jsonObject(try desk.run(["phone", "owner", "+1 617 555 0188", "--json"], as: desk.tier1).stdout)
    #expect(owner["phone"] as? String == "+16175550188")
    #expect((owner["accounts"] as? [Any])?.isEmpty == true)
    #expect((owner["history"] as? [[String: Any]])?.first?["account_id"] as? String == "tl321")
    #expect((owner["verifications"] as? [[String: Any]])?.first?["state"] as? String == "verified")
  }

  @Test("a tier-2 release relies on a tier-1 ownership proof of the last 15 minutes: no second code; spent once")
  func releaseOnProof() throws {
    let desk = try CLIDesk()
    let admin = try desk.database.connect()
    try Fixtures.account("tl321", on: admin)
    try Fixtures.device("tl321", phone: "+16175550188", on: admin)
    let delivery = try DeliveryProcess(desk.database)
    let service = try delivery.start()
    defer { service.stop() }
    // No proof yet: refused, nothing changed.
    let early = try desk.run(["phone", "release", "jd123", "617-555-0188", "--ticket", "INC1"], as: desk.tier2)
    #expect(early.status == 65)
    #expect(early.stderr.contains("no proof that jd123 owns +16175550188 in the last 15 minutes"), "\(early.stderr)")
    // Tier 1 sends and confirms; the hint names the release with the ticket.
    #expect(
      try desk.run(["phone", "verify", "jd123", "617-555-0188", "--via", "sms", "--ticket", "INC1"], as: desk.tier1)
        .status == 0)
    let code = try #require(try delivery.lastCode())
    let confirmed = try desk.run(
      ["phone", "confirm", "jd123", "617-555-0188", "--ticket", "INC1"], as: desk.tier1, stdin: code + "\n")
    #expect(confirmed.status == 0, "\(confirmed.stderr)")
    #expect(
      confirmed.stdout.contains("hms2fa-admin phone release jd123 +16175550188 --ticket INC1"), "\(confirmed.stdout)")
    // Tier 1 can't release; tier 2 can, once, on that proof.
    #expect(
      try desk.run(["phone", "release", "jd123", "+16175550188", "--ticket", "INC1"], as: desk.tier1).status == 77)
    let released = try desk.run(
      ["phone", "release", "jd123", "+16175550188", "--ticket", "INC1", "--json"], as: desk.tier2)
    #expect(released.status == 0, "\(released.stderr)")
    let result = try jsonObject(released.stdout)
    #expect(result["released_from"] as? [String] == ["tl321"])
    #expect(result["verified_by"] as? String == desk.tier1)
    #expect((result["notices"] as? [[String: Any]])?.first?["delivery"] as? String == "sent")
    try Fixtures.device("tl321", phone: "+16175550188", on: admin)
    let twice = try desk.run(["phone", "release", "jd123", "+16175550188", "--ticket", "INC1"], as: desk.tier2)
    #expect(twice.status == 65, "the proof was spent: \(twice.stderr)")
    let events = try admin.query("SELECT action FROM hms2fa.audit_events WHERE action = 'phone.released'")
    #expect(events.count == 1)
  }
}
