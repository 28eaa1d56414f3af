import CPhoneNumber
import Foundation

/// A telephone number as people write it (`(617) 432-2000`, `+44 20 7946 0000`, `011 44 …`),
/// parsed once at the edge and kept in E.164 form. Only numbers that libphonenumber holds valid
/// for their country are accepted; vanity letters, extensions and partial numbers are not.
public struct PhoneNumber: Sendable, Hashable, CustomStringConvertible {
  /// The environment variable naming the region whose numbers may be given without a country
  /// code: an ISO 3166 alpha-2 code such as `US` or `GB`.
  public static let defaultRegionVariable = "HMS2FA_DEFAULT_REGION"

  /// The region assumed when `HMS2FA_DEFAULT_REGION` is not set.
  public static let fallbackRegion = "US"

  /// The longest text accepted, in Unicode scalars, after trimming spaces.
  public static let maximumLength = 64

  /// The number in E.164 form: `+`, the country calling code and the national number, e.g.
  /// `+16174322000`.
  public let e164: String

  /// The region the number belongs to (ISO 3166 alpha-2, e.g. `US`; `001` for non-geographic
  /// numbers such as +800 freephone).
  public let region: String

  /// Parses and validates a number; a number without a country code is read as one of
  /// `defaultRegion`.
  ///
  /// - Throws: a `PhoneNumberError` saying what is wrong with the text.
  public init(parsing text: String, defaultRegion: String = PhoneNumber.defaultRegion()) throws(PhoneNumberError) {
    let trimmed = text.trimmingASCIISpaces()
    guard !trimmed.isEmpty else {
      throw PhoneNumberError(
        .empty, "the phone number is empty; give the full number with its area code, e.g. (617) 432-2000")
    }
    guard trimmed.unicodeScalars.count <= Self.maximumLength else {
      throw PhoneNumberError(
        .tooLong,
        "\(quoted(trimmed)) is too long to be a phone number (at most \(Self.maximumLength) characters); "
          + "give just the number")
    }
    if trimmed.unicodeScalars.contains(where: { [.control, .format].contains($0.properties.generalCategory) }) {
      throw PhoneNumberError(
        .controlCharacters,
        "\(quoted(trimmed)) contains control or invisible characters; type the number plainly")
    }
    // libphonenumber would read 1-800-FLOWERS as 1-800-356-9377 and "ext. 12" as an extension;
    // a number on record is digits only.
    if trimmed.unicodeScalars.contains(where: { $0.properties.isAlphabetic }) {
      throw PhoneNumberError(
        .letters,
        "\(quoted(trimmed)) contains letters; give the number in digits only, without an extension")
    }
    let region = defaultRegion.trimmingASCIISpaces().uppercased()
    guard Self.isKnownRegion(region) else { throw .unknownRegion(region) }
    var e164 = [CChar](repeating: 0, count: CPhoneE164Capacity)
    var numberRegion = [CChar](repeating: 0, count: CPhoneRegionCapacity)
    var input = trimmed
    let status = input.withUTF8 { utf8 in
      utf8.withMemoryRebound(to: CChar.self) { bytes in
        cphone_parse(
          bytes.baseAddress, bytes.count, region, &e164, CPhoneE164Capacity, &numberRegion, CPhoneRegionCapacity)
      }
    }
    if let error = PhoneNumberError(status: status, text: trimmed, defaultRegion: region) { throw error }
    self.e164 = string(fromCString: e164)
    self.region = string(fromCString: numberRegion)
  }

  /// The number in international format for display, e.g. `+1 617-432-2000`.
  public var international: String {
    var formatted = [CChar](repeating: 0, count: CPhoneFormattedCapacity)
    guard cphone_format_international(e164, &formatted, CPhoneFormattedCapacity) == .OK else { return e164 }
    return string(fromCString: formatted)
  }

  public var description: String { e164 }

  /// Whether `text` is written like a phone number rather than an account id or a name: at least
  /// seven digits, and nothing but digits, spaces, `+`, `-`, `.` and parentheses.
  public static func looksLikeOne(_ text: String) -> Bool {
    let digits = text.unicodeScalars.filter { ("0"..."9").contains($0) }.count
    return digits >= 7
      && text.unicodeScalars.allSatisfy { ("0"..."9").contains($0) || " +-.()".unicodeScalars.contains($0) }
  }

  /// The region for numbers given without a country code: `HMS2FA_DEFAULT_REGION` in upper case,
  /// or `US` when it is unset or empty. The value is not checked here; parsing with an unknown
  /// region fails with a message naming the variable, and `checkedDefaultRegion` checks it up
  /// front.
  public static func defaultRegion(
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> String {
    let configured = (environment[defaultRegionVariable] ?? "").trimmingASCIISpaces().uppercased()
    return configured.isEmpty ? fallbackRegion : configured
  }

  /// `defaultRegion`, checked.
  ///
  /// - Throws: an `.unknownRegion` `PhoneNumberError` when `HMS2FA_DEFAULT_REGION` names no region
  ///   libphonenumber knows.
  public static func checkedDefaultRegion(
    environment: [String: String] = ProcessInfo.processInfo.environment
  ) throws(PhoneNumberError) -> String {
    let region = defaultRegion(environment: environment)
    guard isKnownRegion(region) else { throw .unknownRegion(region) }
    return region
  }

  /// Whether `code` (ISO 3166 alpha-2, upper case) is a region with numbering data.
  public static func isKnownRegion(_ code: String) -> Bool {
    !code.utf8.contains(0) && cphone_is_known_region(code)
  }
}

/// Why a text is not a phone number: one line saying what was wrong and what to do.
public struct PhoneNumberError: Error, Sendable, Hashable, CustomStringConvertible {
  /// What was wrong, for callers that react to it.
  public enum Kind: Sendable, Hashable {
    case empty
    case tooLong
    case controlCharacters
    case letters
    case notANumber
    case invalidCountryCode
    case tooShort
    case invalidNumber
    case hasExtension
    /// The default region (`HMS2FA_DEFAULT_REGION`) is not a known region: a configuration error.
    case unknownRegion
    case internalError
  }

  public let kind: Kind
  /// The one-line message for the person at the desk.
  public let reason: String

  public init(_ kind: Kind, _ reason: String) {
    self.kind = kind
    self.reason = reason
  }

  public var description: String { reason }

  /// The desk's form of this error: a data error (exit 65) for a bad number, a configuration error
  /// (exit 78) for an unknown default region.
  public var deskError: DeskError {
    kind == .unknownRegion ? DeskError(.configuration, reason) : .badData(reason)
  }

  static func unknownRegion(_ region: String) -> PhoneNumberError {
    PhoneNumberError(
      .unknownRegion,
      "the default phone region \(quoted(region)) is not a known country code; set "
        + "\(PhoneNumber.defaultRegionVariable) to a two-letter code such as US or GB")
  }

  /// The error for a status from libphonenumber, or nil for success.
  init?(status: CPhoneStatus, text: String, defaultRegion: String) {
    let shown = quoted(text)
    switch status {
    case .OK:
      return nil
    case .notANumber:
      self.init(.notANumber, "\(shown) is not a phone number; give digits, e.g. (617) 432-2000 or +44 20 7946 0000")
    case .invalidCountryCode:
      self.init(
        .invalidCountryCode,
        "\(shown) does not start with a known country code; check the digits after + (e.g. +1, +44)")
    case .tooShort:
      self.init(.tooShort, "\(shown) is too short to be a phone number; give the full number with its area code")
    case .tooLong:
      self.init(.tooLong, "\(shown) is too long to be a phone number; check for extra or repeated digits")
    case .invalidNumber:
      self.init(
        .invalidNumber,
        "\(shown) is not a valid phone number; check the digits, and give a number from outside "
          + "\(defaultRegion) with + and its country code")
    case .unknownRegion:
      self = .unknownRegion(defaultRegion)
    case .hasExtension:
      self.init(.hasExtension, "\(shown) has an extension; give the number without it")
    case .bufferTooSmall, .internalError:
      self.init(.internalError, "internal error: the phone number library failed on \(shown)")
    }
  }
}

/// The text before the first NUL of a buffer a C function filled.
private func string(fromCString buffer: [CChar]) -> String {
  String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
