import Foundation
import PropertyBased
import Testing

@testable import HelpDesk

/// `JSONValue.parse`, which reads the account card: it must read what PostgreSQL and Foundation
/// read, and refuse what is not JSON.
@Suite("reading JSON")
struct JSONReadingTests {
  @Test("strings with escapes, controls, separators and characters outside the BMP read back unchanged")
  func stringsRoundTrip() async {
    await propertyCheck(count: 500, input: trickyText, trickyText, Gen.int64(in: .min ... .max)) { a, b, n in
      let document = JSONValue.object([
        ("name", .string(a)), ("n", .int(n)), ("null", .null), ("flags", .array([true, false])),
        ("nested", .object([("list", .array([.string(b), .object([])])), ("empty", .array([]))])),
      ])
      let text = document.text
      let read = try #require(try? JSONValue.parse(text), "\(text)")
      #expect(read.text == text)
      #expect(read["name"].flatMap { if case .string(let s) = $0 { s } else { nil } } == a)
      // Foundation reads the same strings from the same text, byte order marks aside: it drops
      // one that starts a run of text, as CFString does (PostgreSQL keeps it, and so does parse).
      let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
      let withoutMarks = { (text: String?) in text?.replacingOccurrences(of: "\u{FEFF}", with: "") }
      #expect(withoutMarks(a) == withoutMarks(object["name"] as? String))
      #expect(read["n"].flatMap { if case .int(let i) = $0 { i } else { nil } } == n)
    }
  }

  @Test("escapes PostgreSQL and other writers use: \\u with surrogate pairs, \\/, \\b, \\f; numbers")
  func escapesAndNumbers() throws {
    let read = try JSONValue.parse(
      #" { "a" : "\ud83d\ude00 \u00e9\/\b\f\u2028" , "b":[ -0 , 12.5e-1, 1E2, -9223372036854775808, 1e400 ] } "#)
    #expect(
      read["a"].map(\.text)
        == #""😀 é/\b\f\u2028""#.replacingOccurrences(of: #"\b"#, with: "\\u0008")
        .replacingOccurrences(of: #"\f"#, with: "\\u000c"))
    guard case .array(let numbers) = try #require(read["b"]) else {
      Issue.record("b is not an array")
      return
    }
    #expect(numbers.map(\.text) == ["0", "1.25", "100.0", "-9223372036854775808", "null"])
    // A lone surrogate is no character: it reads as U+FFFD.
    #expect(try JSONValue.parse(#""\ud800x""#).text == "\"\u{FFFD}x\"")
  }

  @Test("typed members: a missing or mistyped one is named by its path; optional ones may be null or absent")
  func fields() throws {
    let doc = try JSONFields(#"{"a":"x","n":3,"b":true,"z":null,"list":[{"k":"v"},{"k":7}],"ids":[1,2]}"#, named: "doc")
    #expect(try doc.string("a") == "x")
    #expect(try doc.int("n") == 3)
    #expect(try doc.bool("b"))
    #expect(try doc.optionalString("z") == nil)
    #expect(try doc.optionalString("absent") == nil)
    #expect(try doc.optionalInt("n") == 3)
    #expect(try doc.array("ids").map { try $0.asInt } == [1, 2])
    #expect(try doc.optionalArray("z") == nil)
    func problem(_ body: () throws -> Void) -> String {
      do {
        try body()
        return "no problem"
      } catch {
        return "\(error)"
      }
    }
    #expect(problem { _ = try doc.string("absent") } == "doc.absent is missing")
    #expect(problem { _ = try doc.string("n") } == "doc.n is not a string")
    #expect(problem { _ = try doc.optionalBool("a") } == "doc.a is not true or false or null")
    #expect(problem { _ = try doc.array("list").map { try $0.string("k") } } == "doc.list[1].k is not a string")
    #expect(problem { _ = try doc.object("a") } == "doc.a is not an object")
    #expect(problem { _ = try JSONFields(#"[1]"#, named: "top").string("a") } == "top is not an object")
  }

  @Test("text that is not JSON is refused with the offset of the problem")
  func refused() {
    for bad in [
      "", "   ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "01", "1.", "-", "1e", ".5", "tru", "nul",
      "\"open", "\"tab\there\"", "\"\\x\"", "\"\\u12\"", "[1] [2]", "{\"a\":1}}", "'a'", "NaN",
      String(repeating: "[", count: 65) + String(repeating: "]", count: 65),
    ] {
      #expect(throws: JSONValue.SyntaxError.self, "\(bad.prefix(20))") { try JSONValue.parse(bad) }
    }
    #expect((try? JSONValue.parse(String(repeating: "[", count: 64) + String(repeating: "]", count: 64))) != nil)
  }
}

/// Text mixing what needs escaping in JSON, what a terminal acts on, and what is outside ASCII.
private let pieces = [
  "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{0}", "\u{1B}", "\u{7F}", "\u{85}", "\u{9B}", "é", "ß",
  "\u{2028}", "\u{2029}", "\u{200E}", "\u{FEFF}", "王", "ע", "🙂", "👩‍⚕️", "e\u{301}", "\u{FFFD}",
]
private let trickyText = Gen.int(in: 0...(pieces.count - 1)).map { pieces[$0] }.array(of: 0...24).map { $0.joined() }
