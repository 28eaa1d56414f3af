import Foundation
import TestSupport
import Testing

@testable import HelpDesk

@Suite("mail and SMS transports")
struct DeliveryTests {
  let from = Mailbox(name: "HMS IT Service Desk", address: "itservicedesk@hms.harvard.edu")

  @Test("a message is RFC 5322: Date, Message-ID, From, To, MIME UTF-8, CRLF line ends")
  func rendering() throws {
    let date = Date(timeIntervalSince1970: 1_796_068_800)  // 2026-11-30 20:00:00 UTC
    let message = MailMessage(
      from: from, to: Mailbox(name: "Jane Doe", address: "jd@hms.harvard.edu"), subject: "Hello",
      body: "line one\nline two", date: date)
    let text = String(decoding: message.rendered(), as: UTF8.self)
    let (head, body) = try #require(text.range(of: "\r\n\r\n").map { (text[..<$0.lowerBound], text[$0.upperBound...]) })
    let headers = head.components(separatedBy: "\r\n")
    #expect(headers.contains("Date: Mon, 30 Nov 2026 20:00:00 +0000"))
    #expect(headers.contains("From: \"HMS IT Service Desk\" <itservicedesk@hms.harvard.edu>"))
    #expect(headers.contains("To: \"Jane Doe\" <jd@hms.harvard.edu>"))
    #expect(headers.contains("Content-Type: text/plain; charset=UTF-8"))
    #expect(headers.contains { $0.hasPrefix("Message-ID: <") && $0.hasSuffix("@hms.harvard.edu>") })
    #expect(body == "line one\r\nline two\r\n")
    #expect(!text.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
  }

  @Test("non-ASCII names and subjects are RFC 2047 encoded words; line breaks can't add headers")
  func headerSafety() {
    let message = MailMessage(
      from: from, to: Mailbox(name: "José Ñúñez\r\nBcc: attacker@example.com", address: "jn@hms.harvard.edu"),
      subject: "Überprüfung: your link", body: "x")
    let text = String(decoding: message.rendered(), as: UTF8.self)
    let headers = text.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
    #expect(!headers.contains { $0.hasPrefix("Bcc:") })
    let to = headers.first { $0.hasPrefix("To: ") } ?? ""
    #expect(to.hasPrefix("To: =?UTF-8?B?"))
    #expect(headers.first { $0.hasPrefix("Subject: ") }?.hasPrefix("Subject: =?UTF-8?B?") == true)
    let headerBlock = text.components(separatedBy: "\r\n\r\n")[0]
    let allASCII = headerBlock.unicodeScalars.allSatisfy { $0.isASCII }
    #expect(allASCII)
    // The encoded name decodes back to the name, the line break turned into a space.
    let encoded = to.dropFirst(4).components(separatedBy: " <")[0]
    let words = encoded.components(separatedBy: "\r\n ").map { $0.dropFirst(10).dropLast(2) }
    let decoded = words.compactMap { Data(base64Encoded: String($0)) }.reduce(Data(), +)
    #expect(String(decoding: decoded, as: UTF8.self) == "José Ñúñez  Bcc: attacker@example.com")
  }

  @Test("a display name of any length: header lines within 78, encoded words within 75, and it reads back")
  func longNames() throws {
    let combining = "e" + String(repeating: "\u{301}", count: 30)  // one character, 61 bytes
    for name in [
      String(repeating: "Maria Guadalupe ", count: 150), String(repeating: "Ñúñez ", count: 300), combining,
      "José Ñúñez",
    ] {
      let message = MailMessage(
        from: from, to: Mailbox(name: name, address: "mg@hms.harvard.edu"), subject: "x", body: "x")
      let text = String(decoding: message.rendered(), as: UTF8.self)
      let head = text.components(separatedBy: "\r\n\r\n")[0]
      let lines = head.components(separatedBy: "\r\n")
      #expect(lines.allSatisfy { $0.utf8.count <= 78 }, "\(name.prefix(20)): \(lines.map(\.utf8.count).max() ?? 0)")
      // The To header, unfolded, is encoded words (or a quoted name) and the address.
      let start = try #require(lines.firstIndex { $0.hasPrefix("To: ") })
      var to = String(lines[start].dropFirst(4))
      for line in lines[(start + 1)...] {
        guard line.hasPrefix(" ") else { break }
        to += line
      }
      #expect(to.hasSuffix("<mg@hms.harvard.edu>"))
      let words = to.components(separatedBy: " ").filter { $0.hasPrefix("=?UTF-8?B?") }
      #expect(words.allSatisfy { $0.count <= 75 })
      let decoded = words.compactMap { Data(base64Encoded: String($0.dropFirst(10).dropLast(2))) }.reduce(Data(), +)
      let readBack =
        words.isEmpty ? String(to.dropFirst().prefix { $0 != "\"" }) : String(decoding: decoded, as: UTF8.self)
      #expect(readBack == name.trimmingCharacters(in: .whitespaces), "\(name.prefix(20))")
    }
  }

  @Test("a body line over 998 octets goes quoted-printable, lines within 76, and decodes back; others stay 8bit")
  func longBodyLines() throws {
    let greeting = "Hello " + String(repeating: "Ñúñez-Maria = Guadalupe ", count: 60) + ","
    let body = greeting + "\n\nYour link: https://hms.example/a?b=c \nHMS IT Service Desk"
    let text = String(decoding: MailMessage(from: from, to: from, subject: "x", body: body).rendered(), as: UTF8.self)
    let parts = text.components(separatedBy: "\r\n\r\n")
    #expect(parts[0].components(separatedBy: "\r\n").contains("Content-Transfer-Encoding: quoted-printable"))
    let encoded = parts.dropFirst().joined(separator: "\r\n\r\n")
    #expect(encoded.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 76 })
    // Decoding: soft breaks removed, =XX back to bytes.
    var bytes: [UInt8] = []
    let raw = Array(encoded.replacingOccurrences(of: "=\r\n", with: "").utf8)
    var i = 0
    while i < raw.count {
      if raw[i] == UInt8(ascii: "="), i + 2 < raw.count,
        let byte = UInt8(String(decoding: raw[(i + 1)...(i + 2)], as: UTF8.self), radix: 16)
      {
        bytes.append(byte)
        i += 3
      } else {
        bytes.append(raw[i])
        i += 1
      }
    }
    #expect(String(decoding: bytes, as: UTF8.self) == body.replacingOccurrences(of: "\n", with: "\r\n") + "\r\n")
    let short = String(
      decoding: MailMessage(from: from, to: from, subject: "x", body: "Hello Jane").rendered(), as: UTF8.self)
    #expect(short.contains("Content-Transfer-Encoding: 8bit\r\n"))
    #expect(short.hasSuffix("\r\n\r\nHello Jane\r\n"))
  }

  @Test("maildir: one file in new/, nothing left in tmp/")
  func maildir() throws {
    let dir = try scratchDirectory("maildir") + "/Maildir"
    let mailer = Mailer.maildir(directory: dir)
    let message = MailMessage(from: from, to: Mailbox(address: "a@hms.harvard.edu"), subject: "s", body: "b")
    try mailer.deliver(message, bounce: from.address, timeout: 5)
    try mailer.deliver(message, bounce: from.address, timeout: 5)
    let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/new")
    #expect(files.count == 2)
    #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/tmp").isEmpty)
    let stored = try Data(contentsOf: URL(fileURLWithPath: dir + "/new/" + files[0]))
    #expect(Array(stored) == message.rendered())
  }

  @Test("sendmail gets the message on stdin, the recipient as an argument and the bounce address with -f")
  func sendmail() throws {
    let dir = try scratchDirectory("sendmail")
    let program = try script("echo \"$@\" > \(dir)/args; cat > \(dir)/message", in: dir)
    let message = MailMessage(from: from, to: Mailbox(address: "a@hms.harvard.edu"), subject: "s", body: "b")
    try Mailer.sendmail(program: program).deliver(message, bounce: "bounces@hms.harvard.edu", timeout: 5)
    #expect(
      try String(contentsOfFile: dir + "/args", encoding: .utf8)
        == "-oi -f bounces@hms.harvard.edu -- a@hms.harvard.edu\n")
    #expect(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/message"))) == message.rendered())
  }

  @Test("a failing program is a delivery failure that names its status and first error line")
  func failingProgram() throws {
    let dir = try scratchDirectory("failing")
    let program = try script("cat >/dev/null; echo 'mail queue is full' >&2; echo more >&2; exit 75", in: dir)
    let message = MailMessage(from: from, to: Mailbox(address: "a@hms.harvard.edu"), subject: "s", body: "b")
    let error = #expect(throws: DeliveryFailure.self) {
      try Mailer.sendmail(program: program).deliver(message, bounce: from.address, timeout: 5)
    }
    #expect(error?.reason.contains("exited with status 75: mail queue is full") == true)
  }

  @Test("a program that hangs is killed, with what it started, after the timeout")
  func hangingProgram() throws {
    let dir = try scratchDirectory("hanging")
    let program = try script("sleep 60 & echo $! > \(dir)/child; wait", in: dir)
    let started = Date()
    let error = #expect(throws: DeliveryFailure.self) {
      try SMSGateway.command(program: program).deliver(
        PhoneMessage(to: "+16175550100", channel: .sms, body: "x"), timeout: 1)
    }
    #expect(error?.reason.contains("did not finish within 1 s") == true)
    #expect(Date().timeIntervalSince(started) < 20)
    let child = try #require(
      Int32(try String(contentsOfFile: dir + "/child", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines))
    )
    usleep(200_000)
    // Gone, or a zombie waiting for init to reap it: either way no longer running.
    let stat = (try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8)) ?? ""
    let state = stat.split(separator: ")").last?.split(separator: " ").first
    #expect(stat.isEmpty || state == "Z", "the program's own child was left running: \(stat)")
  }

  @Test("SMS: a command gets one JSON object; a spool gets one JSON file per message")
  func sms() throws {
    let dir = try scratchDirectory("sms")
    let program = try script("cat > \(dir)/received", in: dir)
    let message = PhoneMessage(to: "+16175550100", channel: .voice, body: "Your code is 1 2 3")
    try SMSGateway.command(program: program).deliver(message, timeout: 5)
    let received = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/received")))
    #expect(received as? [String: String] == ["to": "+16175550100", "channel": "voice", "body": "Your code is 1 2 3"])
    let spool = dir + "/spool"
    try SMSGateway.spool(directory: spool).deliver(message, timeout: 5)
    let files = try FileManager.default.contentsOfDirectory(atPath: spool)
    #expect(files.count == 1 && files[0].hasSuffix(".json") && !files[0].hasPrefix("."))
  }

  @Test("settings: unknown transports, a missing program, a clear-text URL are configuration errors (78)")
  func configuration() throws {
    for bad in ["smtp://relay", "maildir:", "sendmail:relative/path", "sendmail:/nonexistent/sendmail"] {
      let error = #expect(throws: DeskError.self) { try Mailer.fromEnvironment(["HMS2FA_MAILER": bad]) }
      #expect(error?.status == .configuration, "\(bad)")
    }
    #expect(try Mailer.fromEnvironment(["HMS2FA_MAILER": "maildir:/tmp/x"]) == .maildir(directory: "/tmp/x"))
    #expect((try? SMSGateway.fromEnvironment([:])) == nil)
    let unset = #expect(throws: DeskError.self) { try SMSGateway.fromEnvironment([:]) }
    #expect(unset?.status == .configuration)
    let http = #expect(throws: DeskError.self) {
      try DeliverySettings.fromEnvironment(["HMS2FA_ACTIVATION_URL": "http://example.com/a"])
    }
    #expect(http?.status == .configuration)
    let from = #expect(throws: DeskError.self) {
      try DeliverySettings.fromEnvironment(["HMS2FA_MAIL_FROM": "not an address"])
    }
    #expect(from?.status == .configuration)
    let defaults = try? DeliverySettings.fromEnvironment(["HMS2FA_ACTIVATION_URL": "https://x.example/a/"])
    #expect(defaults?.activationURL == "https://x.example/a")
    #expect(defaults?.timeout == 30)
  }
}
