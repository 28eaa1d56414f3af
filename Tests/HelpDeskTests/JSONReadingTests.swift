import Foundation
import PropertyBased
import Testing

@testable import HelpDesk

/// `JSONValue.parse` (Foundation's `JSONDecoder`), which reads the documents the database
/// composes, and `JSONFields`, which reads their members by type.
@Suite("reading JSON")
struct JSONReadingTests {
  @Test("what the tool writes reads back: strings with escapes, controls, separators, astral characters; integers")
  func stringsRoundTrip() async {
    await propertyCheck(count: 300, input: trickyText, trickyText, Gen.int64(in: .min ... .max)) { a, b, n in
      let document = JSONValue.object([
        ("name", .string(a)), ("n", .int(n)), ("null", .null), ("flags", .array([true, false])),
        ("nested", .object([("list", .array([.string(b), .object([])])), ("empty", .array([]))])),
      ])
      let read = try #require(try? JSONValue.parse(document.text), "\(document.text)")
      // Foundation drops a byte order mark that starts a string, as CFString does.
      let withoutMarks = { (text: String?) in text?.replacingOccurrences(of: "\u{FEFF}", with: "") }
      #expect(withoutMarks(read["name"].flatMap(JSONValue.stringValue)) == withoutMarks(a))
      #expect(read["n"].flatMap(JSONValue.intValue) == n)
      #expect(read["flags"].map(\.text) == "[true,false]")
      #expect(read["null"].map(\.text) == "null")
    }
  }

  @Test("escapes other writers use: \\u with surrogate pairs, \\/, \\b, \\f; numbers as integers or not")
  func escapesAndNumbers() throws {
    let read = try JSONValue.parse(#" { "a" : "\ud83d\ude00 \u00e9\/\b\f\u2028" , "b":[ -0 , 12.5e-1, 7 ] } "#)
    #expect(read["a"].flatMap(JSONValue.stringValue) == "😀 é/\u{8}\u{C}\u{2028}")
    #expect(read["b"].map(\.text) == "[0,1.25,7]")
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

  @Test("text that is not JSON is refused")
  func refused() {
    for bad in ["", "   ", "{", "{\"a\" 1}", "{a:1}", "tru", "\"open", "'a'"] {
      #expect(throws: JSONValue.SyntaxError.self, "\(bad.prefix(20))") { try JSONValue.parse(bad) }
    }
  }
}

/// Text mixing what needs escaping in JSON, what a terminal acts on, and what is outside ASCII.
private let pieces = [
  "a", "Z", "0", " ", "\"", "\\", "/", "\n", "\r", "\t", "\u{0}", "\u{1B}", "\u{7F}", "\u{85}", "\u{9B}", "é", "ß",
  "\u{2028}", "\u{2029}", "\u{200E}", "\u{FEFF}", "王", "ע", "🙂", "👩‍⚕️", "e\u{301}", "\u{FFFD}",
]
private let trickyText = Gen.int(in: 0...(pieces.count - 1)).map { pieces[$0] }.array(of: 0...24).map { $0.joined() }
