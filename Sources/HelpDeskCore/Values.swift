/// Describes a value pasted by an agent for an error message: short, printable, and never the
/// whole of a 64 KB paste.
package func quoted(_ text: String, limit: Int = 40) -> String {
  var shown = ""
  for scalar in text.unicodeScalars.prefix(limit) {
    shown +=
      scalar.isASCII && scalar.value >= 0x20 && scalar.value < 0x7F
      ? String(scalar) : "\\u{\(String(scalar.value, radix: 16))}"
  }
  if text.unicodeScalars.count > limit { shown += "…" }
  return "'\(shown)'"
}

/// An HMS Account ID (formerly eCommons ID): lowercase letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit, at most 64 characters. Parsed once at the edge.
public struct AccountID: Hashable, Sendable, CustomStringConvertible, Codable {
  public let value: String

  /// Normalises (trims, lowercases) and validates.
  ///
  /// - Throws: a usage `DeskError` saying what is wrong with the text.
  public init(parsing text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    guard !trimmed.isEmpty else { throw .usage("an account id can't be empty") }
    guard trimmed.utf8.count <= 64 else {
      throw .usage("\(quoted(trimmed)) is too long for an HMS Account ID (at most 64 characters)")
    }
    // Every allowed character is ASCII, so the check and the lowercasing go byte by byte (a
    // roster import parses a million of these); the string is rebuilt only when it changes.
    var bytes = Array(trimmed.utf8)
    var lowered = false
    for index in bytes.indices where (0x41...0x5A).contains(bytes[index]) {
      bytes[index] += 0x20
      lowered = true
    }
    guard bytes.allSatisfy(Self.allowed), let first = bytes.first, Self.alphanumeric(first) else {
      throw .usage(
        "\(quoted(trimmed)) is not an HMS Account ID (letters, digits, '.', '_' or '-', e.g. jd123)")
    }
    value = lowered ? String(decoding: bytes, as: UTF8.self) : trimmed
  }

  private static func alphanumeric(_ byte: UInt8) -> Bool {
    (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
  }

  /// a-z, 0-9, '.', '_' and '-'.
  private static func allowed(_ byte: UInt8) -> Bool {
    alphanumeric(byte) || byte == 0x2E || byte == 0x5F || byte == 0x2D
  }

  public var description: String { value }
}

/// An email address as typed to find a person by their email of record.
public struct EmailAddress: Hashable, Sendable, CustomStringConvertible {
  public let value: String

  /// - Throws: a usage `DeskError` unless the text looks like `local@domain`.
  public init(parsing text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    let parts = trimmed.split(separator: "@", omittingEmptySubsequences: false)
    let printable = trimmed.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value != 0x7F }
    guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty, printable, trimmed.utf8.count <= 254
    else {
      throw .usage("\(quoted(trimmed)) is not an email address")
    }
    value = trimmed
  }

  public var description: String { value }
}

extension EmailAddress {
  /// An email of record as the identity feed gives it: trimmed; exactly one `@`; a non-empty
  /// local part; a domain of two or more non-empty dot-separated labels; no spaces or control
  /// characters; at most 254 bytes. The domain's letters A–Z are lowercased (domains are
  /// case-insensitive); the local part is kept as it is, since a mail server may tell its cases
  /// apart. `hms2fa.roster_row_problem` checks the same in the database.
  ///
  /// - Throws: a bad-data `DeskError` saying what is wrong.
  public init(ofRecord text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    guard !trimmed.isEmpty else { throw .badData("the email is empty") }
    guard trimmed.utf8.count <= 254 else { throw .badData("\(quoted(trimmed)) is too long for an email address") }
    // Nearly every address is ASCII: checked byte by byte, without Unicode property look-ups
    // (a million-row feed spends most of its checking time here otherwise).
    if let ascii = Self.asciiRecord(trimmed) {
      value = ascii
      return
    }
    var at: String.UnicodeScalarView.Index?
    for index in trimmed.unicodeScalars.indices {
      let scalar = trimmed.unicodeScalars[index]
      if scalar == "@" {
        guard at == nil else { throw .badData("\(quoted(trimmed)) has more than one '@'") }
        at = index
      } else if scalar.properties.isWhitespace || scalar.properties.generalCategory == .control {
        throw .badData("\(quoted(trimmed)) contains a space or a control character")
      }
    }
    guard let at else { throw .badData("\(quoted(trimmed)) is not an email address (no '@')") }
    let local = trimmed.unicodeScalars[..<at]
    let domain = trimmed.unicodeScalars[trimmed.unicodeScalars.index(after: at)...]
    guard !local.isEmpty else { throw .badData("\(quoted(trimmed)) has nothing before the '@'") }
    let labels = domain.split(separator: ".", omittingEmptySubsequences: false)
    guard labels.count >= 2, labels.allSatisfy({ !$0.isEmpty }) else {
      throw .badData("\(quoted(trimmed)) has no valid domain (e.g. hms.harvard.edu) after the '@'")
    }
    var normalised = String.UnicodeScalarView(local)
    normalised.append("@")
    for scalar in domain {
      normalised.append(("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32) ?? scalar : scalar)
    }
    value = String(normalised)
  }

  /// The normalised address when `text` is ASCII and valid; nil for anything else, which the
  /// general path then checks and explains.
  private static func asciiRecord(_ text: String) -> String? {
    var bytes = Array(text.utf8)
    var at: Int?
    var lastDot: Int?
    var previous: UInt8 = 0
    for index in bytes.indices {
      let byte = bytes[index]
      if byte <= 0x20 || byte >= 0x7F { return nil }
      if byte == 0x40 {  // @
        guard at == nil, index > 0 else { return nil }
        at = index
      } else if let at {
        if byte == 0x2E {  // .
          guard index > at + 1, previous != 0x2E else { return nil }
          lastDot = index
        } else if byte >= 0x41 && byte <= 0x5A {  // A-Z in the domain
          bytes[index] = byte + 32
        }
      }
      previous = byte
    }
    guard let lastDot, lastDot < bytes.count - 1 else { return nil }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// How an agent names a person: an account id, or an email of record.
public enum AccountKey: Sendable, CustomStringConvertible {
  case id(AccountID)
  case email(EmailAddress)

  /// An argument containing `@` is an email address, anything else an account id.
  ///
  /// - Throws: a usage `DeskError` when it is neither.
  public init(parsing text: String) throws(DeskError) {
    if text.contains("@") {
      self = .email(try EmailAddress(parsing: text))
    } else {
      self = .id(try AccountID(parsing: text))
    }
  }

  public var text: String {
    switch self {
    case .id(let id): id.value
    case .email(let email): email.value
    }
  }

  public var description: String { text }
}

/// The service-desk ticket a change is made under: 1–64 printable ASCII characters.
public struct Ticket: Hashable, Sendable, CustomStringConvertible {
  public let value: String

  /// - Throws: a usage `DeskError` saying what a ticket may contain.
  public init(parsing text: String) throws(DeskError) {
    let printable = text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F }
    guard !text.isEmpty, text.unicodeScalars.count <= 64, printable,
      text.first != " ", text.last != " "
    else {
      throw .usage(
        "\(quoted(text)) is not a ticket: use 1 to 64 printable ASCII characters, e.g. INC0012345")
    }
    value = text
  }

  public var description: String { value }
}

extension String {
  package func trimmingASCIISpaces() -> String {
    let scalars = unicodeScalars
    let isSpace: (Unicode.Scalar) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
    guard let start = scalars.firstIndex(where: { !isSpace($0) }),
      let end = scalars.lastIndex(where: { !isSpace($0) })
    else { return "" }
    return String(scalars[start...end])
  }
}

/// Free text an agent gives as the reason for a change: up to 500 characters, no control or
/// invisible direction-changing characters (they would make the audit log misleading).
public struct Reason: Hashable, Sendable {
  public let value: String

  /// - Throws: a usage `DeskError`.
  public init(parsing text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    guard !trimmed.isEmpty, trimmed.unicodeScalars.count <= 500 else {
      throw .usage("a reason is 1 to 500 characters")
    }
    let bad = trimmed.unicodeScalars.first { s in
      s.value < 0x20 || s.value == 0x7F || (0x200B...0x200F).contains(s.value)
        || (0x202A...0x202E).contains(s.value) || (0x2066...0x2069).contains(s.value)
    }
    guard bad == nil else {
      throw .usage("the reason contains control or invisible characters; type it plainly")
    }
    value = trimmed
  }
}
