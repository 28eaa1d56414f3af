import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("activation links through the tool")
struct ActivationCLITests {
  @Test("activation send: the service emails the link to the email of record; the agent never sees it; no tier is 77")
  func activationSend() throws {
    let desk = try CLIDesk()
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
    let result = try jsonObject(out.stdout)
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
    #expect(try jsonObject(revoke.stdout)["revoked"] as? Int == 1)
    let listed = try desk.run(["activation", "list", "jd123"], as: desk.tier1)
    #expect(listed.stdout.contains("e-mail re-sent"), "\(listed.stdout)")
  }

  @Test("no delivery service running: the link is queued, the command warns and exits 0; the service sends it later")
  func activationQueued() throws {
    let desk = try CLIDesk()
    try Fixtures.device("jd123", activated: false, on: try desk.database.connect())
    let out = try desk.run(["activation", "send", "jd123", "--ticket", "INC1", "--wait", "1s"], as: desk.tier1)
    #expect(out.status == 0)
    #expect(out.stdout.hasSuffix("delivery: queued\n"), "\(out.stdout)")
    #expect(out.stderr.contains("warning: message") && out.stderr.contains("delivery status"))
    let status = try desk.run(["delivery", "status", "--json"], as: desk.tier1)
    let messages = try #require(try jsonObject(status.stdout)["messages"] as? [[String: Any]])
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
    let desk = try CLIDesk()
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
}
