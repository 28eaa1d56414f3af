#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A JSON document with explicit nulls: what `--json` prints (written by `JSONEncoder`).
public indirect enum JSONValue: Sendable, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
  ExpressibleByBooleanLiteral
{
  case null
  case bool(Bool)
  case int(Int64)
  case double(Double)
  case string(String)
  case array([JSONValue])
  case object([(String, JSONValue)])
  /// JSON text produced elsewhere (by the database), embedded as it is.
  case raw(String)

  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int64) { self = .int(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }

  public static func string(_ value: String?) -> JSONValue { value.map { .string($0) } ?? .null }
  public static func int(_ value: Int?) -> JSONValue { value.map { .int(Int64($0)) } ?? .null }

  /// Compact JSON text, written by Foundation's `JSONEncoder` (members in name order), then with
  /// every character a terminal or a reader would be misled by written as a `\u` escape.
  public var text: String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    guard let data = try? encoder.encode(self) else { return "null" }
    var out = ""
    JSONValue.escapingControls(String(decoding: data, as: UTF8.self), into: &out)
    return out
  }

  /// JSON text with DEL, the C1 controls and the invisible characters, which can only stand
  /// inside its strings, written as `\u` escapes: the same document to a JSON reader, nothing a
  /// terminal acts on.
  private static func escapingControls(_ text: String, into out: inout String) {
    guard text.unicodeScalars.contains(where: { actsOnTerminal($0.value) }) else {
      out += text
      return
    }
    for scalar in text.unicodeScalars {
      if actsOnTerminal(scalar.value) { unicodeEscape(scalar, into: &out) } else { out.unicodeScalars.append(scalar) }
    }
  }

  /// DEL, the C1 controls, the line and paragraph separators, and the characters that hide or
  /// reorder text (zero-width, bidirectional marks, overrides and isolates, the byte order
  /// mark): what JSON allows raw inside a string but a terminal, a JavaScript reader or a person
  /// reading it would be misled by.
  private static func actsOnTerminal(_ value: UInt32) -> Bool {
    (0x7F...0x9F).contains(value) || value == 0x061C || (0x200B...0x200F).contains(value)
      || (0x2028...0x202E).contains(value) || (0x2060...0x2069).contains(value) || value == 0xFEFF
  }

  /// `\u` and four hex digits (every scalar escaped here is in the Basic Multilingual Plane).
  private static func unicodeEscape(_ scalar: Unicode.Scalar, into out: inout String) {
    let hex = String(scalar.value, radix: 16)
    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
  }
}

extension JSONValue {
  /// A JSON document that is not valid JSON text.
  public struct SyntaxError: Error, Sendable, CustomStringConvertible {
    public var problem: String
    public var description: String { problem }
  }

  /// Reads JSON text with Foundation's `JSONDecoder`: the documents the database composes (the
  /// card, a reset's outcome, a phone's owners), read through `JSONFields`. An object's members
  /// come back in name order.
  public static func parse(_ text: String) throws(SyntaxError) -> JSONValue {
    do {
      return try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    } catch {
      throw SyntaxError(problem: "not a JSON document (\(error))")
    }
  }

  /// The member `name` of an object, nil when absent or when this is not an object.
  public subscript(name: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.0 == name }?.1
  }
}

extension JSONValue: Encodable {
  private struct Key: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
  }

  public func encode(to encoder: any Encoder) throws {
    switch self {
    case .array(let items):
      var container = encoder.unkeyedContainer()
      for item in items { try container.encode(item) }
    case .object(let members):
      var container = encoder.container(keyedBy: Key.self)
      for (name, value) in members { try container.encode(value, forKey: Key(stringValue: name)) }
    case .raw(let text):
      // A document the database composed: read, then written like the rest.
      try ((try? JSONValue.parse(text)) ?? .null).encode(to: encoder)
    default:
      var container = encoder.singleValueContainer()
      switch self {
      case .bool(let flag): try container.encode(flag)
      case .int(let number): try container.encode(number)
      case .double(let number) where number.isFinite: try container.encode(number)
      case .string(let text): try container.encode(text)
      default: try container.encodeNil()
      }
    }
  }
}

extension JSONValue: Decodable {
  public init(from decoder: any Decoder) throws {
    let container = try decoder.singleValueContainer()
    if container.decodeNil() {
      self = .null
    } else if let flag = try? container.decode(Bool.self) {
      self = .bool(flag)
    } else if let number = try? container.decode(Int64.self) {
      self = .int(number)
    } else if let number = try? container.decode(Double.self) {
      self = .double(number)
    } else if let text = try? container.decode(String.self) {
      self = .string(text)
    } else if let items = try? container.decode([JSONValue].self) {
      self = .array(items)
    } else {
      let members = try container.decode([String: JSONValue].self)
      self = .object(members.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
    }
  }
}

/// Typed reading of the members of a JSON document from the database (the card, the reset's
/// outcome, a phone's owners), naming the member that is missing or of the wrong type. Optional
/// members may be null or absent.
package struct JSONFields {
  package struct Mismatch: Error, CustomStringConvertible {
    package var description: String
  }

  package let value: JSONValue
  package let path: String

  package init(_ value: JSONValue, at path: String) {
    self.value = value
    self.path = path
  }

  /// The document in `text`, called `name` in messages.
  package init(_ text: String, named name: String) throws {
    self.init(try JSONValue.parse(text), at: name)
  }

  package func string(_ name: String) throws(Mismatch) -> String {
    try required(name, "a string", JSONValue.stringValue)
  }
  package func optionalString(_ name: String) throws(Mismatch) -> String? {
    try optional(name, "a string", JSONValue.stringValue)
  }
  package func bool(_ name: String) throws(Mismatch) -> Bool {
    try required(name, "true or false", JSONValue.boolValue)
  }
  package func optionalBool(_ name: String) throws(Mismatch) -> Bool? {
    try optional(name, "true or false", JSONValue.boolValue)
  }
  package func int(_ name: String) throws(Mismatch) -> Int64 { try required(name, "an integer", JSONValue.intValue) }
  package func optionalInt(_ name: String) throws(Mismatch) -> Int64? {
    try optional(name, "an integer", JSONValue.intValue)
  }

  package func object(_ name: String) throws(Mismatch) -> JSONFields {
    JSONFields(try required(name, "an object") { if case .object = $0 { $0 } else { nil } }, at: "\(path).\(name)")
  }

  package func array(_ name: String) throws(Mismatch) -> [JSONFields] {
    try JSONFields(required(name, "an array") { $0 }, at: "\(path).\(name)").items
  }

  package func optionalArray(_ name: String) throws(Mismatch) -> [JSONFields]? {
    try optional(name, "an array") { $0 }.map { value throws(Mismatch) in
      try JSONFields(value, at: "\(path).\(name)").items
    }
  }

  /// The items of this value, an array.
  package var items: [JSONFields] {
    get throws(Mismatch) {
      guard case .array(let items) = value else { throw Mismatch(description: "\(path) is not an array") }
      return items.enumerated().map { JSONFields($1, at: "\(path)[\($0)]") }
    }
  }

  /// This value itself, a string (an item of an array of them).
  package var asString: String {
    get throws(Mismatch) {
      guard let text = JSONValue.stringValue(value) else { throw Mismatch(description: "\(path) is not a string") }
      return text
    }
  }

  /// This value itself, an integer (an item of an array of them).
  package var asInt: Int64 {
    get throws(Mismatch) {
      guard let number = JSONValue.intValue(value) else { throw Mismatch(description: "\(path) is not an integer") }
      return number
    }
  }

  /// The member `name`, present and of the type `extract` accepts.
  private func required<T>(_ name: String, _ expected: String, _ extract: (JSONValue) -> T?) throws(Mismatch) -> T {
    guard case .object = value else { throw Mismatch(description: "\(path) is not an object") }
    guard let member = value[name] else { throw Mismatch(description: "\(path).\(name) is missing") }
    guard let typed = extract(member) else { throw Mismatch(description: "\(path).\(name) is not \(expected)") }
    return typed
  }

  /// The member `name`, nil when absent or null, else of the type `extract` accepts.
  private func optional<T>(_ name: String, _ expected: String, _ extract: (JSONValue) -> T?) throws(Mismatch) -> T? {
    switch value[name] {
    case .none, .null?: return nil
    case let member?:
      guard let typed = extract(member) else {
        throw Mismatch(description: "\(path).\(name) is not \(expected) or null")
      }
      return typed
    }
  }
}

extension JSONValue {
  package static func stringValue(_ value: JSONValue) -> String? {
    if case .string(let text) = value { text } else { nil }
  }
  package static func boolValue(_ value: JSONValue) -> Bool? { if case .bool(let flag) = value { flag } else { nil } }
  package static func intValue(_ value: JSONValue) -> Int64? {
    if case .int(let number) = value { number } else { nil }
  }
}
