import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// A ticket typed once per call, checked against the desk's pattern before anything changes.
@Suite("tickets at the desk")
struct TicketCLITests {
  static let revoke = ["remembered", "revoke", "jd123", "--reason", "laptop stolen"]

  func tickets(_ desk: CLIDesk) throws -> [String] {
    try desk.database.connect().query("SELECT ticket FROM hms2fa.audit_events ORDER BY event_id")
      .map { try $0.decode("ticket", as: String.self) }
  }

  @Test("HMS2FA_TICKET supplies --ticket; --ticket wins over it")
  func fromEnvironment() throws {
    let desk = try CLIDesk()
    let fromEnvironment = try desk.run(Self.revoke, as: desk.tier2, environment: ["HMS2FA_TICKET": "INC0012345"])
    #expect(fromEnvironment.status == 0, "\(fromEnvironment.stderr)")
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 3, on: try desk.database.connect())
    let both = try desk.run(
      Self.revoke + ["--ticket", "HELP-123"], as: desk.tier2, environment: ["HMS2FA_TICKET": "INC0012345"])
    #expect(both.status == 0, "\(both.stderr)")
    #expect(try tickets(desk) == ["INC0012345", "HELP-123"])
  }

  @Test("a ticket that doesn't match the pattern, or none, is refused with 64 before anything changes")
  func refused() throws {
    let desk = try CLIDesk()
    for (ticket, environment) in [
      ("banana", [:]), ("INC 1", [:]), ("inc0012345", [:]), ("INC-", [:]), ("I1", [:]),
      (nil, ["HMS2FA_TICKET": "banana"]), (nil, [:]),
    ] as [(String?, [String: String])] {
      let out = try desk.run(
        Self.revoke + (ticket.map { ["--ticket", $0] } ?? []), as: desk.tier2, environment: environment)
      #expect(out.status == 64, "\(ticket ?? "-"): \(out.stderr)")
      let lines = out.stderr.split(separator: "\n")
      #expect(
        lines.first?.contains(ticket == nil && environment.isEmpty ? "HMS2FA_TICKET" : "^[A-Z]{2,10}-?[0-9]{1,12}$")
          == true, "\(out.stderr)")
    }
    #expect(try tickets(desk).isEmpty)
  }

  @Test("HMS2FA_TICKET_PATTERN sets the desk's own pattern; one that isn't a regular expression is 78")
  func pattern() throws {
    let desk = try CLIDesk()
    let ritm = ["HMS2FA_TICKET_PATTERN": "^RITM[0-9]{7}$"]
    let refused = try desk.run(Self.revoke + ["--ticket", "INC0012345"], as: desk.tier2, environment: ritm)
    #expect(refused.status == 64)
    #expect(refused.stderr.contains("^RITM[0-9]{7}$"), "\(refused.stderr)")
    let taken = try desk.run(Self.revoke + ["--ticket", "RITM0012345"], as: desk.tier2, environment: ritm)
    #expect(taken.status == 0, "\(taken.stderr)")
    let broken = try desk.run(
      Self.revoke + ["--ticket", "INC1"], as: desk.tier2, environment: ["HMS2FA_TICKET_PATTERN": "^([A-Z"])
    #expect(broken.status == 78, "\(broken.stderr)")
    #expect(broken.stderr.contains("HMS2FA_TICKET_PATTERN"))
    #expect(try tickets(desk) == ["RITM0012345"])
  }
}
