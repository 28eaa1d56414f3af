import Foundation
import Testing

@testable import HelpDesk

/// Times as people read them: the agent's zone and an age on screen, the desk's zone in notices.
@Suite("times people read")
struct DeskTimeTests {
  let now = Date(timeIntervalSince1970: 1_796_068_800)  // 2026-11-30 20:00:00 UTC

  @Test("ages: just now, minutes, hours, days, months, years, ago and ahead")
  func ages() {
    let cases: [(TimeInterval, String)] = [
      (-20, "just now"), (-60, "1 minute ago"), (-59 * 60, "59 minutes ago"), (-3 * 3600, "3 hours ago"),
      (-86_400, "1 day ago"), (-3 * 86_400, "3 days ago"), (-14 * 30.44 * 86_400, "14 months ago"),
      (-3 * 365.25 * 86_400, "3 years ago"), (10 * 60, "in 10 minutes"), (26 * 86_400, "in 26 days"),
    ]
    for (offset, expected) in cases {
      #expect(DeskTime.age(of: now.addingTimeInterval(offset), now: now) == expected, "\(offset)")
    }
  }

  @Test("local time with the zone's abbreviation, summer and winter")
  func local() throws {
    let boston = try #require(TimeZone(identifier: "America/New_York"))
    #expect(DeskTime.local(now, in: boston) == "2026-11-30 15:00 EST")
    #expect(DeskTime.local(Date(timeIntervalSince1970: 1_783_000_000), in: boston) == "2026-07-02 09:46 EDT")
    #expect(DeskTime.shown(iso: "2026-11-30T19:00:00Z", now: now).hasSuffix("(1 hour ago)"))
    #expect(DeskTime.shown(iso: nil, now: now).isEmpty)
  }

  @Test("notices: times in HMS2FA_TIMEZONE (default America/New_York) with the zone, never UTC; a bad zone is 78")
  func notices() throws {
    #expect(try DeliverySettings.fromEnvironment([:]).timeZone.identifier == "America/New_York")
    let chicago = try DeliverySettings.fromEnvironment(["HMS2FA_TIMEZONE": "America/Chicago"]).timeZone
    let text = OutboxMessage.releaseNotice(
      name: "Jane", phone: "+16175550100", at: "2026-11-30T20:00:00Z", zone: chicago)
    #expect(text.contains("2026-11-30 14:00 CST"), "\(text)")
    #expect(!text.contains("UTC"))
    let boston = try DeliverySettings.fromEnvironment([:]).timeZone
    let link = OutboxMessage.activationEmail(
      name: "Jane", link: "https://x.example/a", device: nil, expiresAt: "2026-11-30T20:00:00Z", ticket: "INC1",
      zone: boston)
    #expect(link.contains("until 2026-11-30 15:00 EST"), "\(link)")
    let error = #expect(throws: DeskError.self) {
      try DeliverySettings.fromEnvironment(["HMS2FA_TIMEZONE": "Mars/Olympus"])
    }
    #expect(error?.status == .configuration)
  }
}
