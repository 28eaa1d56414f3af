import Foundation
import HelpDesk
import Testing

@Suite("values parsed at the edge")
struct ValueTests {
  @Test(
    "tickets are 1 to 64 printable ASCII characters",
    arguments: ["INC0012345", "SD-1", "#4521", String(repeating: "x", count: 64), "a b"])
  func goodTickets(_ text: String) throws {
    #expect(try Ticket(parsing: text).value == text)
  }

  @Test(
    "anything else is not a ticket",
    arguments: ["", " INC1", "INC1 ", String(repeating: "x", count: 65), "INC\n1", "INC\u{200F}1", "ÍNC1"])
  func badTickets(_ text: String) {
    let error = #expect(throws: DeskError.self) { try Ticket(parsing: text) }
    #expect(error?.status == .usage)
  }

  @Test(
    "account ids are trimmed and lowercased (ASCII letters only), then checked",
    arguments: [
      ("jd123", "jd123"), (" JD123 ", "jd123"), ("Mk456", "mk456"), ("a.b_c-d", "a.b_c-d"), ("0abc", "0abc"),
      (String(repeating: "X", count: 64), String(repeating: "x", count: 64)),
    ])
  func goodAccountIDs(_ text: String, _ expected: String) throws {
    #expect(try AccountID(parsing: text).value == expected)
  }

  @Test(
    "anything else is not an account id, non-ASCII letters included",
    arguments: [
      "", "   ", "_jd", ".jd", "-jd", "j d", "jd@1", "jé1", "\u{130}x", "\u{212A}x", "jd\u{0}1",
      String(repeating: "x", count: 65),
    ])
  func badAccountIDs(_ text: String) {
    let error = #expect(throws: DeskError.self) { try AccountID(parsing: text) }
    #expect(error?.status == .usage)
  }

  @Test("durations")
  func durations() throws {
    #expect(try DeskDuration(parsing: "24h").seconds == 86_400)
    #expect(try DeskDuration(parsing: "1h30m").seconds == 5_400)
    #expect(try DeskDuration(parsing: "7d").description == "7d")
    for bad in ["", "24", "h", "-5m", "1.5h", "999999999999d", "5 m", "0s"] {
      #expect(throws: DeskError.self, "\(bad)") { try DeskDuration(parsing: bad) }
    }
  }

  @Test("points in time: a duration back from now or an ISO date")
  func pointsInTime() throws {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    #expect(try PointInTime(parsing: "1h", now: now).date == now.addingTimeInterval(-3_600))
    #expect(try PointInTime(parsing: "2026-11-01").date.iso8601UTC() == "2026-11-01T00:00:00Z")
    #expect(try PointInTime(parsing: "2026-11-01T09:30:00Z").date.iso8601UTC() == "2026-11-01T09:30:00Z")
    #expect(throws: DeskError.self) { try PointInTime(parsing: "yesterday") }
  }

  @Test("JSON output escapes control characters, writes members in name order, and keeps nulls")
  func json() {
    let value = JSONValue.object([("b", "x\"\n\u{1}"), ("a", .null), ("n", 3), ("list", .array([true]))])
    #expect(value.text == #"{"a":null,"b":"x\"\n\u0001","list":[true],"n":3}"#)
  }
}
