#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A mailbox: an address with an optional display name, e.g. `Jane Doe <jd123@hms.harvard.edu>`.
public struct Mailbox: Sendable, Hashable {
  public var name: String?
  public var address: String

  public init(name: String? = nil, address: String) {
    self.name = name
    self.address = address
  }

  /// Parses `Name <addr@domain>` or a bare `addr@domain` (the form of HMS2FA_MAIL_FROM).
  public init?(parsing text: String) {
    let trimmed = text.trimmingASCIISpaces()
    if trimmed.hasSuffix(">"), let open = trimmed.lastIndex(of: "<") {
      let address = String(trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)])
      var name = String(trimmed[..<open]).trimmingASCIISpaces()
      if name.hasPrefix("\""), name.hasSuffix("\""), name.count >= 2 {
        name = String(name.dropFirst().dropLast())
      }
      guard Mailbox.isAddress(address) else { return nil }
      self.init(name: name.isEmpty ? nil : name, address: address)
    } else {
      guard Mailbox.isAddress(trimmed) else { return nil }
      self.init(address: trimmed)
    }
  }

  /// An address under the one rule of the registry, the roster import and the mailer
  /// (`EmailAddress.flaw(in:)`): a bare `local@domain`, nothing a mail program could read as a
  /// second recipient.
  static func isAddress(_ text: String) -> Bool {
    addressFlaw(text) == nil
  }

  /// What keeps `text` from being an address, worded to follow it quoted; nil for an address.
  static func addressFlaw(_ text: String) -> String? {
    EmailAddress.flaw(in: Array(text.utf8))
  }

  /// The header form: the name quoted when it is plain ASCII and short enough for one line of
  /// 78 characters, else RFC 2047 encoded words folded onto as many lines as it takes (a
  /// display name has no length limit, and a header line must stay under 998 octets).
  var headerValue: String {
    guard let name = MailMessage.headerSafe(name ?? ""), !name.isEmpty else { return "<\(address)>" }
    if name.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
      let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
      let quoted = "\"\(escaped)\" <\(address)>"
      if quoted.utf8.count <= 72 { return quoted }  // "From: " and "To: " leave 72 of 78
    }
    let words = MailMessage.encodedWords(name)
    // The address after the last word when that line still fits, else on a line of its own.
    let lastLine = words.utf8.split(separator: UInt8(ascii: "\n")).last?.count ?? 0
    return words + (6 + lastLine + 3 + address.utf8.count <= 78 ? " <\(address)>" : "\r\n <\(address)>")
  }
}

/// A plain-text email in RFC 5322 form: Date, Message-ID, From, To, Subject (RFC 2047 when it
/// isn't ASCII), MIME UTF-8 body, CRLF line ends.
///
/// Header values are made safe before use: line breaks and control characters become spaces,
/// so nothing from the database can add a header.
public struct MailMessage: Sendable {
  public var from: Mailbox
  public var to: Mailbox
  public var subject: String
  public var body: String
  public var date: Date
  public var messageID: String

  public init(from: Mailbox, to: Mailbox, subject: String, body: String, date: Date = Date()) {
    self.from = from
    self.to = to
    self.subject = subject
    self.body = body
    self.date = date
    let random = Secrets.hex(Secrets.randomBytes(12))
    let domain = from.address.split(separator: "@").last.map(String.init) ?? "localhost"
    self.messageID = "<\(Int(date.timeIntervalSince1970)).\(random)@\(domain)>"
  }

  /// The message as bytes, ready for sendmail's stdin or a maildir file.
  public func rendered() -> [UInt8] {
    let subjectValue = MailMessage.headerSafe(subject) ?? ""
    let headers = [
      "Date: \(MailMessage.rfc5322Date(date))",
      "From: \(from.headerValue)",
      "To: \(to.headerValue)",
      "Message-ID: \(messageID)",
      "Subject: "
        + (subjectValue.utf8.allSatisfy { $0 < 0x7F } ? subjectValue : MailMessage.encodedWords(subjectValue)),
      "MIME-Version: 1.0",
      "Content-Type: text/plain; charset=UTF-8",
    ]
    // Body lines end in CRLF; a lone "." line is harmless with sendmail -oi and in a maildir.
    var lines: [String] = []
    for line in body.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline) {
      lines.append(String(line))
    }
    // 8bit when every line fits the 998 octets RFC 5322 allows, else quoted-printable.
    let fits = lines.allSatisfy { $0.utf8.count <= 998 }
    let transfer = "Content-Transfer-Encoding: " + (fits ? "8bit" : "quoted-printable")
    let text = fits ? lines.joined(separator: "\r\n") : MailMessage.quotedPrintable(lines)
    return Array(
      ((headers + [transfer, "Auto-Submitted: auto-generated"]).joined(separator: "\r\n") + "\r\n\r\n" + text + "\r\n")
        .utf8)
  }

  /// The text with CR, LF and other control characters replaced by spaces; nil for nil.
  static func headerSafe(_ text: String?) -> String? {
    guard let text else { return nil }
    return String(
      String.UnicodeScalarView(
        text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F || (0x80...0x9F).contains($0.value) ? " " : $0 })
    ).trimmingASCIISpaces()
  }

  /// RFC 2047 "B" encoded words, each at most 75 characters and on a line of its own, never
  /// splitting a character's UTF-8 bytes, nor a grapheme (a letter and its accents) unless it
  /// alone is longer than one word holds.
  static func encodedWords(_ text: String) -> String {
    var words: [String] = []
    var chunk: [UInt8] = []
    func add(_ bytes: [UInt8]) {
      if chunk.count + bytes.count > 45 {  // 45 bytes -> 60 base64 characters + 12 of framing
        words.append("=?UTF-8?B?\(Data(chunk).base64EncodedString())?=")
        chunk = []
      }
      chunk += bytes
    }
    for character in text {
      let bytes = Array(String(character).utf8)
      if bytes.count <= 45 {
        add(bytes)
      } else {
        for scalar in character.unicodeScalars { add(Array(String(scalar).utf8)) }
      }
    }
    if !chunk.isEmpty { words.append("=?UTF-8?B?\(Data(chunk).base64EncodedString())?=") }
    return words.joined(separator: "\r\n ")
  }

  /// RFC 2045 quoted-printable: lines of at most 76 characters with soft breaks, CRLF line ends
  /// kept as they are. For a body with a line too long for 8bit transport (998 octets), which a
  /// long display name in the greeting can make.
  static func quotedPrintable(_ lines: [String]) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    return lines.map { line in
      var out: [UInt8] = []
      var column = 0
      let bytes = Array(line.utf8)
      for (i, byte) in bytes.enumerated() {
        let last = i == bytes.count - 1
        // Printable ASCII but "=" stands as it is; so do space and tab, except at a line's end.
        let plain =
          (byte >= 0x21 && byte <= 0x7E && byte != UInt8(ascii: "=")) || ((byte == 0x20 || byte == 0x09) && !last)
        let piece = plain ? [byte] : [UInt8(ascii: "="), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
        if column + piece.count > 75 {
          out += Array("=\r\n".utf8)
          column = 0
        }
        out += piece
        column += piece.count
      }
      return String(decoding: out, as: UTF8.self)
    }.joined(separator: "\r\n")
  }

  /// `Sun, 29 Nov 2026 19:44:50 +0000`.
  static func rfc5322Date(_ date: Date) -> String {
    var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
    var parts = tm()
    gmtime_r(&seconds, &parts)
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
      + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
  }
}
