import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

// Timestamps as Foundation's `Date`, here rather than in the Postgres layer, which knows nothing of
// the domain's types.

/// Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
private let postgresEpochOffset: Double = 946_684_800

extension Date: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Date {
    guard type == PostgresType.timestamptz || type == PostgresType.timestamp, bytes.count == 8 else {
      throw DecodingFailure("not a timestamp")
    }
    let micros = bigEndianInteger(bytes)
    if micros == Int64.max { return .distantFuture }
    if micros == Int64.min { return .distantPast }
    return Date(timeIntervalSince1970: postgresEpochOffset + Double(micros) / 1_000_000)
  }
}

extension Date: PostgresEncodable {
  /// Sent as ISO 8601 text in UTC with microseconds, which the server reads in any DateStyle.
  public var postgresValue: PostgresValue { .text(iso8601UTC(fractionalDigits: 6)) }

  /// `2026-11-29T11:58:39Z` (or with `fractionalDigits` digits of the second, up to the
  /// microseconds PostgreSQL keeps), always UTC: Foundation's ISO 8601 format for the date and
  /// time, the fraction added to it (the format itself stops at milliseconds).
  public func iso8601UTC(fractionalDigits: Int = 0) -> String {
    var whole = Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.down))
    var micros = Int64(((timeIntervalSince1970 - whole.timeIntervalSince1970) * 1_000_000).rounded())
    if micros >= 1_000_000 {
      whole = whole.addingTimeInterval(1)
      micros -= 1_000_000
    }
    let text = whole.formatted(Date.ISO8601FormatStyle())
    guard fractionalDigits > 0 else { return text }
    let digits = min(fractionalDigits, 6)
    var fraction = micros
    for _ in digits..<6 { fraction /= 10 }
    let written = String(fraction)
    return text.dropLast() + "." + String(repeating: "0", count: digits - written.count) + written + "Z"
  }
}
