#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A point in time given as a duration back from now (`24h`) or an ISO 8601 date or time
/// (`2026-11-01`, `2026-11-01T09:00:00Z`).
public struct PointInTime: Sendable {
  public let date: Date

  /// - Throws: a usage `DeskError` when it is neither.
  public init(parsing text: String, now: Date = Date()) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    if let duration = try? DeskDuration(parsing: trimmed) {
      date = now.addingTimeInterval(-Double(duration.seconds))
      return
    }
    let styles: [Date.ISO8601FormatStyle] = [
      .iso8601,
      Date.ISO8601FormatStyle(includingFractionalSeconds: true),
      Date.ISO8601FormatStyle().year().month().day(),
    ]
    // Years 1 to 9999: what PostgreSQL and the ISO 8601 text the tool prints both represent.
    let earliest = Date(timeIntervalSince1970: -62_135_596_800)  // 0001-01-01T00:00:00Z
    let latest = Date(timeIntervalSince1970: 253_402_300_800)  // 10000-01-01T00:00:00Z
    for style in styles {
      if let parsed = try? style.parse(trimmed), parsed >= earliest, parsed < latest {
        date = parsed
        return
      }
    }
    throw .usage(
      "\(quoted(text)) is not a time: write a duration back from now (24h, 7d) or a date (2026-11-01)")
  }
}
