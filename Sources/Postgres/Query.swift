/// A value bound to a `$n` placeholder of a statement.
public enum PostgresValue: Sendable, Hashable {
  case null
  /// Sent in text format; the server infers the type from the statement (cast it there).
  case text(String)
  /// Sent in binary format as `bytea`.
  case bytea([UInt8])
}

/// A Swift value that can be bound to a statement parameter.
public protocol PostgresEncodable {
  var postgresValue: PostgresValue { get }
}

/// A statement and its parameters, built by interpolation: each `\(value)` becomes `$n`.
///
/// There is deliberately no way to interpolate raw SQL text: statements are literals in the
/// source, and every value is a bound parameter.
public struct Query: Sendable, ExpressibleByStringInterpolation {
  public private(set) var sql: String
  public private(set) var binds: [PostgresValue]

  /// A statement with explicit parameters for `$1`, `$2`, …
  public init(_ sql: String, binds: [PostgresValue] = []) {
    self.sql = sql
    self.binds = binds
  }

  /// A statement whose text was composed elsewhere: by the server (`format('%I', …)`) or by
  /// trusted code such as a test fixture; never by splicing in input.
  public init(verbatim sql: String) {
    self.init(sql)
  }

  public init(stringLiteral value: String) {
    self.init(value)
  }

  public init(stringInterpolation: StringInterpolation) {
    self.init(stringInterpolation.sql, binds: stringInterpolation.binds)
  }

  public struct StringInterpolation: StringInterpolationProtocol {
    var sql = ""
    var binds: [PostgresValue] = []

    public init(literalCapacity: Int, interpolationCount: Int) {
      sql.reserveCapacity(literalCapacity + interpolationCount * 3)
    }

    public mutating func appendLiteral(_ literal: String) {
      sql += literal
    }

    public mutating func appendInterpolation(_ value: some PostgresEncodable) {
      binds.append(value.postgresValue)
      sql += "$\(binds.count)"
    }

    public mutating func appendInterpolation(_ value: (some PostgresEncodable)?) {
      binds.append(value?.postgresValue ?? .null)
      sql += "$\(binds.count)"
    }
  }
}

extension String: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(self) }
}

extension Substring: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Int: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Int64: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Int32: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Double: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(String(self)) }
}

extension Bool: PostgresEncodable {
  public var postgresValue: PostgresValue { .text(self ? "true" : "false") }
}

extension Array: PostgresEncodable where Element == UInt8 {
  public var postgresValue: PostgresValue { .bytea(self) }
}

extension PostgresValue: PostgresEncodable {
  public var postgresValue: PostgresValue { self }
}
