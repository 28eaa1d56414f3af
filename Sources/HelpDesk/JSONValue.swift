/// A JSON document built in order, with explicit nulls: what `--json` prints.
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

  /// Compact JSON text.
  public var text: String {
    var out = ""
    write(to: &out)
    return out
  }

  private func write(to out: inout String) {
    switch self {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .int(let i): out += String(i)
    case .double(let d): out += d.isFinite ? String(d) : "null"
    case .string(let s): JSONValue.quote(s, into: &out)
    case .raw(let text): JSONValue.escapingControls(text, into: &out)
    case .array(let items):
      out += "["
      for (i, item) in items.enumerated() {
        if i > 0 { out += "," }
        item.write(to: &out)
      }
      out += "]"
    case .object(let members):
      out += "{"
      for (i, (key, value)) in members.enumerated() {
        if i > 0 { out += "," }
        JSONValue.quote(key, into: &out)
        out += ":"
        value.write(to: &out)
      }
      out += "}"
    }
  }

  /// JSON text from elsewhere (PostgreSQL's jsonb output escapes only C0 controls), with DEL,
  /// C1 controls and the line separators, which can only stand inside its strings, written as
  /// `\u` escapes: the same document to a JSON reader, nothing a terminal acts on.
  private static func escapingControls(_ text: String, into out: inout String) {
    guard text.unicodeScalars.contains(where: { actsOnTerminal($0.value) }) else {
      out += text
      return
    }
    for scalar in text.unicodeScalars {
      if actsOnTerminal(scalar.value) { unicodeEscape(scalar, into: &out) } else { out.unicodeScalars.append(scalar) }
    }
  }

  private static func quote(_ s: String, into out: inout String) {
    out += "\""
    for scalar in s.unicodeScalars {
      switch scalar {
      case "\"": out += "\\\""
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      // Controls (C0, DEL, C1: a terminal acts on ESC and CSI even inside a JSON string) and the
      // line separators, written as \u escapes: the same string to a JSON reader.
      case _ where scalar.value < 0x20 || actsOnTerminal(scalar.value): unicodeEscape(scalar, into: &out)
      default: out.unicodeScalars.append(scalar)
      }
    }
    out += "\""
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
  /// A JSON document that is not valid RFC 8259 text, with the byte offset of the problem.
  public struct SyntaxError: Error, Sendable, CustomStringConvertible {
    public var offset: Int
    public var problem: String
    public var description: String { "\(problem) at byte \(offset)" }
  }

  /// Reads JSON text (RFC 8259: one value, surrounded by optional white space; strings with
  /// every escape, surrogate pairs joined; integers that fit 64 bits as `.int`, other numbers as
  /// `.double`; nesting at most 64 deep). Member order is kept; a repeated member name is kept
  /// twice, as jsonb never produces one.
  ///
  /// The documents the database composes (the card, a reset's outcome, a phone's owners) are
  /// read with this and `JSONFields`, not `JSONDecoder`, whose type-metadata look-ups cost more
  /// than a millisecond at every start (README, Benchmarks).
  public static func parse(_ text: String) throws(SyntaxError) -> JSONValue {
    var copy = text
    let result = copy.withUTF8 { bytes in
      Result { () throws(SyntaxError) -> JSONValue in
        var reader = Reader(bytes: bytes)
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.offset == bytes.count else { throw reader.error("text after the JSON value") }
        return value
      }
    }
    return try result.get()
  }

  /// The member `name` of an object, nil when absent or when this is not an object.
  public subscript(name: String) -> JSONValue? {
    guard case .object(let members) = self else { return nil }
    return members.first { $0.0 == name }?.1
  }

  private struct Reader {
    let bytes: UnsafeBufferPointer<UInt8>
    var offset = 0

    init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    func error(_ problem: String) -> SyntaxError { SyntaxError(offset: offset, problem: problem) }

    mutating func skipSpace() {
      while offset < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[offset]) { offset += 1 }
    }

    mutating func value(depth: Int) throws(SyntaxError) -> JSONValue {
      guard depth < 64 else { throw error("nesting deeper than 64") }
      skipSpace()
      guard offset < bytes.count else { throw error("a value expected") }
      switch bytes[offset] {
      case UInt8(ascii: "{"):
        offset += 1
        var members: [(String, JSONValue)] = []
        if consume(UInt8(ascii: "}")) { return .object(members) }
        repeat {
          skipSpace()
          guard offset < bytes.count, bytes[offset] == UInt8(ascii: "\"") else { throw error("a member name expected") }
          let name = try string()
          guard consume(UInt8(ascii: ":")) else { throw error("':' expected") }
          members.append((name, try value(depth: depth + 1)))
        } while try !endOrComma(UInt8(ascii: "}"))
        return .object(members)
      case UInt8(ascii: "["):
        offset += 1
        var items: [JSONValue] = []
        if consume(UInt8(ascii: "]")) { return .array(items) }
        repeat {
          items.append(try value(depth: depth + 1))
        } while try !endOrComma(UInt8(ascii: "]"))
        return .array(items)
      case UInt8(ascii: "\""): return .string(try string())
      case UInt8(ascii: "t"): return try literal("true", .bool(true))
      case UInt8(ascii: "f"): return try literal("false", .bool(false))
      case UInt8(ascii: "n"): return try literal("null", .null)
      default: return try number()
      }
    }

    /// Skips white space, then takes `byte` if it comes next.
    mutating func consume(_ byte: UInt8) -> Bool {
      skipSpace()
      guard offset < bytes.count, bytes[offset] == byte else { return false }
      offset += 1
      return true
    }

    /// After a member or an item: true when `closer` ends the container, false after a comma.
    mutating func endOrComma(_ closer: UInt8) throws(SyntaxError) -> Bool {
      if consume(UInt8(ascii: ",")) { return false }
      if consume(closer) { return true }
      throw error("',' or '\(Character(Unicode.Scalar(closer)))' expected")
    }

    mutating func literal(_ word: StaticString, _ value: JSONValue) throws(SyntaxError) -> JSONValue {
      let count = word.utf8CodeUnitCount
      guard offset + count <= bytes.count,
        (0..<count).allSatisfy({ bytes[offset + $0] == word.utf8Start[$0] })
      else { throw error("a value expected") }
      offset += count
      return value
    }

    mutating func number() throws(SyntaxError) -> JSONValue {
      let start = offset
      func digits() -> Int {
        let from = offset
        while offset < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[offset]) { offset += 1 }
        return offset - from
      }
      if offset < bytes.count, bytes[offset] == UInt8(ascii: "-") { offset += 1 }
      let leading = offset
      guard digits() > 0 else { throw error("a value expected") }
      if bytes[leading] == UInt8(ascii: "0"), offset - leading > 1 { throw error("a number with a leading zero") }
      var integral = true
      if offset < bytes.count, bytes[offset] == UInt8(ascii: ".") {
        offset += 1
        integral = false
        guard digits() > 0 else { throw error("digits expected after '.'") }
      }
      if offset < bytes.count, bytes[offset] == UInt8(ascii: "e") || bytes[offset] == UInt8(ascii: "E") {
        offset += 1
        integral = false
        if offset < bytes.count, bytes[offset] == UInt8(ascii: "+") || bytes[offset] == UInt8(ascii: "-") {
          offset += 1
        }
        guard digits() > 0 else { throw error("digits expected in the exponent") }
      }
      let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<offset]), as: UTF8.self)
      if integral, let int = Int64(text) { return .int(int) }
      guard let double = Double(text) else { throw error("a number out of range") }
      return .double(double)
    }

    /// A string, the opening quote at `offset`.
    mutating func string() throws(SyntaxError) -> String {
      offset += 1
      var out = ""
      var runStart = offset
      func flush(_ end: Int) {
        out += String(decoding: UnsafeBufferPointer(rebasing: bytes[runStart..<end]), as: UTF8.self)
      }
      while offset < bytes.count {
        let byte = bytes[offset]
        if byte == UInt8(ascii: "\"") {
          flush(offset)
          offset += 1
          return out
        }
        if byte < 0x20 { throw error("a control character inside a string") }
        if byte != UInt8(ascii: "\\") {
          offset += 1
          continue
        }
        flush(offset)
        offset += 1
        guard offset < bytes.count else { break }
        let escape = bytes[offset]
        offset += 1
        switch escape {
        case UInt8(ascii: "\""): out += "\""
        case UInt8(ascii: "\\"): out += "\\"
        case UInt8(ascii: "/"): out += "/"
        case UInt8(ascii: "b"): out += "\u{08}"
        case UInt8(ascii: "f"): out += "\u{0C}"
        case UInt8(ascii: "n"): out += "\n"
        case UInt8(ascii: "r"): out += "\r"
        case UInt8(ascii: "t"): out += "\t"
        case UInt8(ascii: "u"):
          var scalar = try hex4()
          if (0xD800...0xDBFF).contains(scalar), offset + 1 < bytes.count, bytes[offset] == UInt8(ascii: "\\"),
            bytes[offset + 1] == UInt8(ascii: "u")
          {
            let resume = offset
            offset += 2
            let low = try hex4()
            if (0xDC00...0xDFFF).contains(low) {
              scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else {
              offset = resume
            }
          }
          // A lone surrogate is no character: U+FFFD, as String(decoding:) reads bad UTF-8.
          out.unicodeScalars.append(Unicode.Scalar(scalar) ?? "\u{FFFD}")
        default: throw error("an unknown escape")
        }
        runStart = offset
      }
      throw error("a string never closed")
    }

    mutating func hex4() throws(SyntaxError) -> UInt32 {
      guard offset + 4 <= bytes.count else { throw error("four hex digits expected after \\u") }
      var value: UInt32 = 0
      for _ in 0..<4 {
        let byte = bytes[offset]
        let digit: UInt8
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
        default: throw error("four hex digits expected after \\u")
        }
        value = value << 4 | UInt32(digit)
        offset += 1
      }
      return value
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
