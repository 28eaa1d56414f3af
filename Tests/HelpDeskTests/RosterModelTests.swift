import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The roster import against a model of it: random registries and feeds written in every style
/// the identity system might use (quoting, spellings, column order, line ends, padding, order),
/// and after each import exactly the accounts and counts the model expects.
@Suite("roster import against a model")
struct RosterModelTests {
  /// An account as the registry holds it.
  struct Account: Equatable {
    var id: String
    var name: String
    var email: String
    var status: String
    var highRisk: Bool
  }

  /// What importing a feed must do: refuse it, or leave these accounts with these counts.
  struct Expected {
    var text: String
    var disableMissing: Bool
    /// Refused because an id is listed twice.
    var repeated: Bool
    var accounts: [String: Account]
    /// Rows, added, changed, disabled, unchanged.
    var counts: [Int]
  }

  @Test("every import adds, changes, disables and counts what the model says, or refuses a repeated id")
  func matchesTheModel() throws {
    let database = try TestDatabase.create()
    let admin = try database.connect()
    let batch = try database.createLogin(.batch)
    var random = SplitMix(seed: 20_261_207)
    var refusals = 0
    for round in 0..<40 {
      let registry = Self.registry(&random)
      let expected = Self.feed(for: registry, &random)
      try admin.execute("TRUNCATE hms2fa.accounts CASCADE")
      for account in registry {
        try Fixtures.account(
          account.id, name: account.name, email: account.email, status: account.status,
          highRisk: account.highRisk, on: admin)
      }
      let before = try Self.accounts(admin)
      let path = TestCluster.scratch + "/model-\(round)-\(UUID().uuidString.prefix(8)).csv"
      try Data(expected.text.utf8).write(to: URL(fileURLWithPath: path))
      var options = RosterImportOptions()
      options.disableMissing = expected.disableMissing
      options.maxDisableFraction = 1
      let db = try database.connect(as: batch)
      let outcome = Result { () throws(DeskError) -> RosterImportResult in
        try RosterImport.run(try RosterFile(path: path), options: options, on: db)
      }
      switch outcome {
      case .success(let result):
        #expect(!expected.repeated, "round \(round):\n\(expected.text)")
        #expect(
          [result.rows, result.added, result.changed, result.disabled, result.unchanged] == expected.counts,
          "round \(round):\n\(expected.text)")
        #expect(try Self.accounts(admin) == expected.accounts, "round \(round):\n\(expected.text)")
      case .failure(let error):
        refusals += 1
        #expect(expected.repeated, "round \(round): \(error.message)\n\(expected.text)")
        #expect(error.message.contains("appears again"), "round \(round): \(error.message)")
        #expect(try Self.accounts(admin) == before, "round \(round)")
      }
    }
    // The rounds include refusals and imports alike.
    #expect(refusals > 0 && refusals < 40, "\(refusals)")
  }

  static func accounts(_ admin: Connection) throws -> [String: Account] {
    var accounts: [String: Account] = [:]
    for row in try admin.query("SELECT account_id, display_name, email, status, high_risk FROM hms2fa.accounts") {
      let account = Account(
        id: try row.decode("account_id"), name: try row.decode("display_name"), email: try row.decode("email"),
        status: try row.decode("status"), highRisk: try row.decode("high_risk"))
      accounts[account.id] = account
    }
    return accounts
  }

  /// A registry of up to a dozen accounts.
  static func registry(_ random: inout SplitMix) -> [Account] {
    let names = ["Person", "Pat O\"Brien", "Doe, Jane", "Zoë Ångström", "Tab\tName", "Two\nLines", "Ann"]
    let emails = ["@hms.harvard.edu", "@HMS.harvard.edu", "@partners.org"]
    return (0..<random.next(below: 12)).map { index in
      let id = "a\(index)"
      let local = random.next(below: 4) == 0 ? "First.Last\(index)" : id
      return Account(
        id: id, name: names[random.next(below: names.count)], email: local + emails[random.next(below: emails.count)],
        status: random.next(below: 5) == 0 ? "disabled" : "active", highRisk: random.next(below: 4) == 0)
    }
  }

  /// A feed for `registry` in a style chosen at random, with most accounts as they are held and
  /// others changed, padded, left out or listed twice, and a few new ones; and what importing it
  /// must do.
  static func feed(for registry: [Account], _ random: inout SplitMix) -> Expected {
    let quoteAll = random.next(below: 3) == 0
    let flags = [("true", "false"), ("TRUE", "FALSE"), ("t", "f"), ("Yes", "No"), ("1", "0"), (" y ", " n ")][
      random.next(below: 6)]
    let statusCase = random.next(below: 3)
    var order = Array(0..<5)
    if random.next(below: 2) == 0 { order.shuffle(using: &random) }
    let lineEnd = random.next(below: 2) == 0 ? "\n" : "\r\n"
    let disableMissing = random.next(below: 2) == 0
    func field(_ text: String) -> String {
      let needs = text.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }
      return quoteAll || needs ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }
    func status(_ text: String) -> String {
      [text, text.uppercased(), text.prefix(1).uppercased() + text.dropFirst()][statusCase]
    }
    func domainLowercased(_ email: String) -> String {
      guard let at = email.lastIndex(of: "@") else { return email }
      return String(email[...at]) + email[email.index(after: at)...].lowercased()
    }
    var rows: [[String]] = []
    var repeated = false
    // What the feed says of each account it lists, as the import leaves it.
    var listed: [String: Account] = [:]
    for account in registry {
      var after = account
      after.email = domainLowercased(account.email)
      var id = account.id
      var twice = false
      switch random.next(below: 20) {
      case 0, 1: continue  // left out
      case 2: id = " " + account.id.uppercased() + " "
      case 3: after.name = "Renamed \(account.id)"
      case 4: after.highRisk.toggle()
      case 5: after.status = "disabled"
      case 6: after.email = domainLowercased(account.email.uppercased())
      case 7: twice = random.next(below: 3) == 0
      default: break
      }
      let values = [id, after.name, after.email, status(after.status), after.highRisk ? flags.0 : flags.1]
      rows.append(values)
      if twice {
        // Listed again, in capitals: the same account once ids are normalised.
        rows.append([account.id.uppercased()] + values.dropFirst())
        repeated = true
      }
      listed[account.id] = after
    }
    for index in 0..<random.next(below: 3) {
      let id = "new\(index)"
      rows.append([id, "New Person", "\(id)@HMS.Harvard.edu", status("active"), flags.1])
      listed[id] = Account(
        id: id, name: "New Person", email: "\(id)@hms.harvard.edu", status: "active", highRisk: false)
    }
    if random.next(below: 3) == 0 { rows.shuffle(using: &random) }
    let columns = ["account_id", "display_name", "email", "status", "high_risk"]
    let text =
      ([order.map { columns[$0] }.joined(separator: ",")]
      + rows.map { values in order.map { field(values[$0]) }.joined(separator: ",") })
      .joined(separator: lineEnd) + lineEnd

    var accounts: [String: Account] = [:]
    var counts = [rows.count, 0, 0, 0, 0]
    let held = Dictionary(uniqueKeysWithValues: registry.map { ($0.id, $0) })
    for account in registry {
      if let after = listed[account.id] {
        accounts[account.id] = after
        counts[after == account ? 4 : 2] += 1
      } else {
        var kept = account
        if disableMissing && account.status == "active" {
          kept.status = "disabled"
          counts[3] += 1
        }
        accounts[account.id] = kept
      }
    }
    for (id, account) in listed where held[id] == nil {
      accounts[id] = account
      counts[1] += 1
    }
    return Expected(
      text: text, disableMissing: disableMissing, repeated: repeated, accounts: accounts, counts: counts)
  }
}

/// A small seeded generator, so that a failing round can be run again.
struct SplitMix: RandomNumberGenerator {
  var state: UInt64

  init(seed: UInt64) { state = seed }

  mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var value = state
    value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
    value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
    return value ^ (value >> 31)
  }

  mutating func next(below bound: Int) -> Int {
    Int(next() % UInt64(bound))
  }
}
