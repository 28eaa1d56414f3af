import Foundation
import HelpDeskCore
import PropertyBased
import Testing

@testable import HelpDeskCLI

/// `user show`'s quick path (`FrontEnd.quickUserShow`) is a second reader of the command line: what
/// it takes, the argument parser must read the same way.
@Suite("user show's quick path")
struct QuickPathTests {
  @Test("every command line the quick path takes, the argument parser reads alike")
  func agreesWithTheParser() async {
    let taken = Counter()
    await propertyCheck(count: 3000, input: tails) { tail in
      let arguments = ["user", "show"] + tail
      guard let quick = FrontEnd.quickUserShow(arguments) else { return }
      taken.add()
      let parsed = try #require(
        try? AdminCommand.parseAsRoot(arguments) as? UserCommand.Show, "the parser refuses \(arguments)")
      #expect(parsed.account == quick.account, "\(arguments)")
      #expect(parsed.global.database == quick.target.database, "\(arguments)")
      #expect(parsed.global.readOnly == quick.target.readOnly, "\(arguments)")
      #expect(parsed.global.json == arguments.contains("--json"), "\(arguments)")
    }
    // The generator must reach the quick path often enough for the check to mean something.
    #expect(taken.value > 200)
  }

  @Test("help, --, unknown, repeated and missing pieces are left to the parser")
  func declines() {
    for tail in [
      [], ["--json"], ["jd123", "--help"], ["-h", "jd123"], ["--", "jd123"], ["jd123", "jd124"], ["help"],
      ["jd123", "--json", "--json"], ["jd123", "--database"], ["jd123", "--database", "--json"],
      ["jd123", "--database="], ["jd123", "--database", "a", "--database", "b"], ["-jd123"], ["jd123", "--bogus"],
    ] {
      #expect(FrontEnd.quickUserShow(["user", "show"] + tail) == nil, "\(tail)")
    }
    #expect(FrontEnd.quickUserShow(["user", "find", "jd123"]) == nil)
  }
}

/// Pieces of a command line after `user show`, good and bad; the good ones several times, so
/// that the quick path takes a good share of the lines.
private let good = ["jd123", "JANE_DOE@hms.harvard.edu", "--json", "--read-only", "--database", "dbname=x"]
private let pieces =
  good + good + good + [
    "--database=dbname=y", "ümlaut", "jd 123", " ", "", "help", "-", "--", "-h", "--help", "--database=", "-x",
    "--bogus", "user", "show", "--json=true",
  ]
private let tails = Gen.int(in: 0...(pieces.count - 1)).map { pieces[$0] }.array(of: 0...6)

/// A count shared with the property's closure.
private final class Counter: @unchecked Sendable {
  private var count = 0
  private let lock = NSLock()
  func add() { lock.withLock { count += 1 } }
  var value: Int { lock.withLock { count } }
}
