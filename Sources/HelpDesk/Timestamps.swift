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

  /// `2026-11-29T11:58:39Z` (or with `fractionalDigits` digits of the second), always UTC.
  public func iso8601UTC(fractionalDigits: Int = 0) -> String {
    let interval = timeIntervalSince1970
    var seconds = Int64(interval.rounded(.down))
    var micros = Int64(((interval - Double(seconds)) * 1_000_000).rounded())
    if micros >= 1_000_000 {
      seconds += 1
      micros -= 1_000_000
    }
    var days = seconds / 86_400
    var secondOfDay = seconds % 86_400
    if secondOfDay < 0 {
      secondOfDay += 86_400
      days -= 1
    }
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    func pad(_ v: Int64, _ width: Int) -> String {
      let s = String(v)
      return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
    var text =
      "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T"
      + "\(pad(secondOfDay / 3_600, 2)):\(pad(secondOfDay % 3_600 / 60, 2)):\(pad(secondOfDay % 60, 2))"
    if fractionalDigits > 0 {
      let digits = min(fractionalDigits, 6)
      var fraction = micros
      for _ in digits..<6 { fraction /= 10 }
      text += "." + pad(fraction, digits)
    }
    return text + "Z"
  }
}
