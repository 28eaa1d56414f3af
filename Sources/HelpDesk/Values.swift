import Postgres

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
    // Every allowed character is ASCII, so the check and the lowercasing go byte by byte; the
    // string is rebuilt only when it changes.
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

/// An email address as typed to find a person by their email of record: an address under the
/// rule of `EmailAddress.flaw(in:)`, as typed (look-ups ignore case).
public struct EmailAddress: Hashable, Sendable, CustomStringConvertible {
  public let value: String

  /// - Throws: a usage `DeskError` saying what keeps the text from being an address.
  public init(parsing text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    if let flaw = Self.flaw(in: Array(trimmed.utf8)) { throw .usage("\(quoted(trimmed)) \(flaw)") }
    value = trimmed
  }

  public var description: String { value }
}

extension EmailAddress {
  /// The one address rule of the registry, the roster import and the mailer (the database's
  /// `hms2fa.is_email_address` is the same): a single RFC 5322 addr-spec in dot-atom form, ASCII
  /// only. The local part is atext (letters, digits and ``!#$%&'*+/=?^_`{|}~-``) with single
  /// dots, none at either end; then one `@`; then a domain of two or more dot-separated labels
  /// of letters, digits and `-`, none starting or ending with `-`; at most 254 bytes in all. So
  /// no display name, comma, angle bracket, quote, parenthesis, space or control character:
  /// such text could name a second recipient to a mail program.
  ///
  /// - Returns: nil for an address; otherwise what is wrong, worded to follow the quoted text.
  @inlinable
  package static func flaw<Bytes: RandomAccessCollection<UInt8>>(in bytes: Bytes) -> String?
  where Bytes.Index == Int {
    guard !bytes.isEmpty else { return "is empty, not an email address" }
    guard bytes.count <= 254 else { return "is too long for an email address (at most 254 bytes)" }
    var at: Int?
    // The start of the current dot-separated part (of the local part, then of a label).
    var partStart = bytes.startIndex
    var labels = 0
    for index in bytes.indices {
      let byte = bytes[index]
      if byte == 0x40 {  // @
        guard at == nil else { return "has more than one '@'" }
        guard index > bytes.startIndex else { return "has nothing before the '@'" }
        guard index > partStart else { return "has a '.' right before the '@'" }
        at = index
        partStart = index + 1
      } else if byte == 0x2E {  // .
        guard index > partStart else {
          return at == nil
            ? "has a '.' at the start, or two in a row, before the '@'"
            : "has no valid domain (e.g. hms.harvard.edu) after the '@'"
        }
        if at != nil {
          guard bytes[index - 1] != 0x2D else { return "has a domain label ending in '-'" }
          labels += 1
        }
        partStart = index + 1
      } else if at == nil {
        guard isAtext(byte) else { return unusable(byte, inDomain: false) }
      } else {
        guard isLabelByte(byte) else { return unusable(byte, inDomain: true) }
        guard byte != 0x2D || index > partStart else { return "has a domain label starting with '-'" }
      }
    }
    guard at != nil else { return "is not an email address (no '@')" }
    guard bytes.endIndex > partStart, labels >= 1 else {
      return "has no valid domain (e.g. hms.harvard.edu) after the '@'"
    }
    guard bytes[bytes.endIndex - 1] != 0x2D else { return "has a domain label ending in '-'" }
    return nil
  }

  /// Letters, digits and ``!#$%&'*+/=?^_`{|}~-`` (RFC 5322 atext, ASCII).
  @inlinable
  package static func isAtext(_ byte: UInt8) -> Bool {
    switch byte {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
    case 0x21, 0x23...0x27, 0x2A, 0x2B, 0x2D, 0x2F, 0x3D, 0x3F, 0x5E...0x60, 0x7B...0x7E: true
    default: false
    }
  }

  /// Letters, digits and `-`.
  @inlinable
  package static func isLabelByte(_ byte: UInt8) -> Bool {
    switch byte {
    case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, 0x2D: true
    default: false
    }
  }

  /// Why `byte` has no place where it is.
  @usableFromInline
  package static func unusable(_ byte: UInt8, inDomain: Bool) -> String {
    if byte >= 0x80 {
      return "is not plain ASCII: an email address here has no accented letters or other scripts"
    }
    if byte <= 0x20 || byte == 0x7F { return "contains a space or a control character" }
    let shown = "'\(Character(Unicode.Scalar(byte)))'"
    if inDomain && isAtext(byte) {
      return "has \(shown) after the '@', where only letters, digits, '-' and '.' may be"
    }
    return "contains \(shown): only a bare address is allowed (no display name, comma, angle bracket, "
      + "quote or parenthesis)"
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

  /// The account this key names: an account id as it is, an email of record looked up (one
  /// account's, in any case).
  ///
  /// - Throws: `DeskError` 67 when nobody has the email, 65 when several accounts have it.
  public func accountID(on db: Connection) throws(DeskError) -> AccountID {
    switch self {
    case .id(let id): return id
    case .email(let email):
      let found = try desk(.lookup, on: db) {
        let lookup: Query = "SELECT hms2fa_api.account_id_of(\(email.value)) AS id"
        return try db.queryFirst(lookup)?.decode("id", as: String.self)
      }
      guard let found else { throw NoSuchAccount.error(email.value, on: db) }
      return try AccountID(parsing: found)
    }
  }
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

extension Ticket {
  /// The desk's ticket pattern unless `HMS2FA_TICKET_PATTERN` says otherwise: `INC0012345`,
  /// `HELP-123`.
  public static let defaultPattern = "^[A-Z]{2,10}-?[0-9]{1,12}$"

  /// A ticket as an agent gives it at the desk: `text` (`--ticket`), else `HMS2FA_TICKET`, typed
  /// once for the whole call; printable ASCII (`init(parsing:)`) and matching the desk's pattern,
  /// so that a typo never stays in the audit record.
  ///
  /// - Throws: a usage `DeskError` (64) for no ticket or one that doesn't match, naming the
  ///   pattern; a configuration one (78) when `HMS2FA_TICKET_PATTERN` isn't a regular expression.
  public init(desk text: String?, environment: (String) -> String? = environmentVariable) throws(DeskError) {
    let given = text ?? environment("HMS2FA_TICKET").flatMap { $0.isEmpty ? nil : $0 }
    guard let given else {
      throw .usage(
        "a change needs its service-desk ticket: --ticket INC0012345, or HMS2FA_TICKET set once for the call")
    }
    let pattern = environment("HMS2FA_TICKET_PATTERN").flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultPattern
    let rule: Regex<AnyRegexOutput>
    do {
      rule = try Regex(pattern)
    } catch {
      throw DeskError(
        .configuration,
        "HMS2FA_TICKET_PATTERN \(quoted(pattern, limit: 80)) is not a regular expression; fix it, or unset it for "
          + "the default \(Self.defaultPattern)")
    }
    let source = text == nil ? "HMS2FA_TICKET " : ""
    guard given.firstMatch(of: rule) != nil else {
      throw .usage(
        "\(source)\(quoted(given)) is not a ticket here: tickets match \(pattern) (HMS2FA_TICKET_PATTERN), "
          + "e.g. INC0012345 or HELP-123")
    }
    try self.init(parsing: given)
  }
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
