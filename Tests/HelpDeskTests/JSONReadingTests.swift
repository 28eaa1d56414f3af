import Foundation
import HelpDesk
import PropertyBased
import Testing

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
