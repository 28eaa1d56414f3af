import Foundation

/// Times as people read them: in text output, the agent's local time (`TZ`) with the zone's
/// abbreviation and how long ago it was; in email notices, the desk's zone
/// (`HMS2FA_TIMEZONE`, default America/New_York). JSON keeps UTC ISO 8601.
public enum DeskTime {
  /// The desk's zone for notices sent to people: `HMS2FA_TIMEZONE`, else America/New_York.
  ///
  /// - Throws: a configuration `DeskError` (78) for a zone the system doesn't know.
  public static func notices(environment: (String) -> String? = environmentVariable) throws(DeskError) -> TimeZone {
    let name = environment("HMS2FA_TIMEZONE").flatMap { $0.isEmpty ? nil : $0 } ?? "America/New_York"
    guard let zone = TimeZone(identifier: name) else {
      throw DeskError(
        .configuration, "HMS2FA_TIMEZONE \(quoted(name, limit: 60)) is not a time zone, e.g. America/New_York")
    }
    return zone
  }

  /// `date` in `zone` to the minute, with the zone's abbreviation: `2026-12-06 20:46 EST`.
  public static func local(_ date: Date, in zone: TimeZone = .current) -> String {
    // en_US names the zones people here know (EST, EDT, CST); others read as GMT+1.
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US")
    formatter.timeZone = zone
    formatter.dateFormat = "yyyy-MM-dd HH:mm zzz"
    return formatter.string(from: date)
  }

  /// How long ago `date` was, or how far ahead it is: `just now`, `5 minutes ago`, `in 10 minutes`,
  /// `3 days ago`, `14 months ago`, `2 years ago`.
  public static func age(of date: Date, now: Date = Date()) -> String {
    let seconds = now.timeIntervalSince(date)
    let span = abs(seconds)
    guard span >= 60 else { return "just now" }
    let (count, unit): (Int, String) =
      switch span {
      case ..<3600: (Int(span / 60), "minute")
      case ..<86_400: (Int(span / 3600), "hour")
      case ..<(60 * 86_400): (Int(span / 86_400), "day")
      case ..<(730 * 86_400): (Int(span / (30.44 * 86_400)), "month")
      default: (Int(span / (365.25 * 86_400)), "year")
      }
    let amount = "\(count) \(unit)\(count == 1 ? "" : "s")"
    return seconds > 0 ? "\(amount) ago" : "in \(amount)"
  }

  /// For text output: `2026-12-06 20:46 EST (3 days ago)`; empty for no time.
  public static func shown(_ date: Date?, now: Date = Date()) -> String {
    guard let date else { return "" }
    return "\(local(date)) (\(age(of: date, now: now)))"
  }

  /// For a table cell: on a terminal, how long ago (`13 months ago`), so that the table fits; the
  /// whole `shown` when piped or with `--wide`.
  public static func cell(_ date: Date?, now: Date = Date()) -> String {
    guard let date else { return "" }
    return Screen.width == nil ? shown(date, now: now) : age(of: date, now: now)
  }

  /// `cell` of an ISO 8601 time as the database writes it.
  public static func cell(iso: String?, now: Date = Date()) -> String {
    guard let iso, let date = try? PointInTime(parsing: iso).date, iso.contains("T") else { return iso ?? "" }
    return cell(date, now: now)
  }

  /// `shown` of an ISO 8601 time as the database writes it; the text as it is when it isn't one.
  public static func shown(iso: String?, now: Date = Date()) -> String {
    guard let iso else { return "" }
    guard let date = try? PointInTime(parsing: iso).date, iso.contains("T") else { return iso }
    return shown(date, now: now)
  }
}
