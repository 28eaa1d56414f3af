#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// Type OIDs of the built-in types this layer decodes (from `pg_type`).
public enum PostgresType {
  public static let bool: UInt32 = 16
  public static let bytea: UInt32 = 17
  public static let char: UInt32 = 18
  public static let name: UInt32 = 19
  public static let int8: UInt32 = 20
  public static let int2: UInt32 = 21
  public static let int4: UInt32 = 23
  public static let text: UInt32 = 25
  public static let oid: UInt32 = 26
  public static let json: UInt32 = 114
  public static let float4: UInt32 = 700
  public static let float8: UInt32 = 701
  public static let unknown: UInt32 = 705
  public static let bpchar: UInt32 = 1042
  public static let varchar: UInt32 = 1043
  public static let timestamp: UInt32 = 1114
  public static let timestamptz: UInt32 = 1184
  public static let jsonb: UInt32 = 3802

  static func name(of oid: UInt32) -> String {
    switch oid {
    case bool: "boolean"
    case bytea: "bytea"
    case char: "\"char\""
    case name: "name"
    case int8: "bigint"
    case int2: "smallint"
    case int4: "integer"
    case text: "text"
    case oid: "oid"
    case json: "json"
    case float4: "real"
    case float8: "double precision"
    case unknown: "unknown"
    case bpchar: "character"
    case varchar: "character varying"
    case timestamp: "timestamp"
    case timestamptz: "timestamptz"
    case jsonb: "jsonb"
    default: "type oid \(oid)"
    }
  }
}

/// Why a column could not become the requested Swift type.
public struct DecodingFailure: Error, Sendable {
  public var reason: String
  public init(_ reason: String) { self.reason = reason }
}

/// A Swift type that can be read from a column sent in PostgreSQL's binary format.
public protocol PostgresDecodable {
  /// Decodes a non-NULL value of the column type `type`.
  static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Self
  /// The value for SQL NULL; throws unless the type can represent it (Optional can).
  static func decodeNull() throws(DecodingFailure) -> Self
}

extension PostgresDecodable {
  public static func decodeNull() throws(DecodingFailure) -> Self {
    throw DecodingFailure("the column is NULL")
  }
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Self {
    try Wrapped.decode(bytes, type: type)
  }

  public static func decodeNull() throws(DecodingFailure) -> Self { nil }
}

func bigEndianInteger(_ bytes: ArraySlice<UInt8>) -> Int64 {
  var value: Int64 = 0
  for byte in bytes { value = (value << 8) | Int64(byte) }
  let width = bytes.count * 8
  if width < 64, width > 0, value & (1 << (width - 1)) != 0 {
    value -= 1 << width  // sign-extend
  }
  return value
}

extension String: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> String {
    switch type {
    case PostgresType.text, PostgresType.varchar, PostgresType.bpchar, PostgresType.name,
      PostgresType.unknown, PostgresType.json, PostgresType.char:
      return String(decoding: bytes, as: UTF8.self)
    case PostgresType.jsonb:
      guard bytes.first == 1 else { throw DecodingFailure("unknown jsonb version") }
      return String(decoding: bytes.dropFirst(), as: UTF8.self)
    default:
      throw DecodingFailure("not a text type")
    }
  }
}

extension Int64: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Int64 {
    switch (type, bytes.count) {
    case (PostgresType.int2, 2), (PostgresType.int4, 4), (PostgresType.int8, 8):
      return bigEndianInteger(bytes)
    case (PostgresType.oid, 4):
      return bigEndianInteger(bytes) & 0xFFFF_FFFF
    default:
      throw DecodingFailure("not an integer type")
    }
  }
}

extension Int: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Int {
    Int(try Int64.decode(bytes, type: type))
  }
}

extension Int32: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Int32 {
    let wide = try Int64.decode(bytes, type: type)
    guard let narrow = Int32(exactly: wide) else { throw DecodingFailure("value out of range") }
    return narrow
  }
}

extension Double: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Double {
    switch (type, bytes.count) {
    case (PostgresType.float8, 8):
      return Double(bitPattern: UInt64(bitPattern: bigEndianInteger(bytes)))
    case (PostgresType.float4, 4):
      return Double(Float(bitPattern: UInt32(truncatingIfNeeded: bigEndianInteger(bytes))))
    case (PostgresType.int2, _), (PostgresType.int4, _), (PostgresType.int8, _):
      return Double(try Int64.decode(bytes, type: type))
    default:
      throw DecodingFailure("not a floating-point type")
    }
  }
}

extension Bool: PostgresDecodable {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Bool {
    guard type == PostgresType.bool, bytes.count == 1, let byte = bytes.first else {
      throw DecodingFailure("not a boolean")
    }
    return byte != 0
  }
}

extension Array: PostgresDecodable where Element == UInt8 {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> [UInt8] {
    guard type == PostgresType.bytea else { throw DecodingFailure("not bytea") }
    return Array(bytes)
  }
}

/// Seconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
let postgresEpochOffset: Double = 946_684_800

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
