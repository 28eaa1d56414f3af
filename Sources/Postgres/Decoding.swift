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

package func bigEndianInteger(_ bytes: ArraySlice<UInt8>) -> Int64 {
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

/// A state the database names in text (`'pending'`, `'active'`…), read into a Swift enum once:
/// a name the enum doesn't know is a decoding failure, not a string compared later.
public protocol PostgresTextState: RawRepresentable, PostgresDecodable where RawValue == String {}

extension PostgresTextState {
  public static func decode(_ bytes: ArraySlice<UInt8>, type: UInt32) throws(DecodingFailure) -> Self {
    let name = try String.decode(bytes, type: type)
    guard let state = Self(rawValue: name) else { throw DecodingFailure("\(name) is not a known state") }
    return state
  }
}
