/// A length of time as agents and operators write it: `90s`, `15m`, `24h`, `7d`, `1h30m`.
public struct DeskDuration: Hashable, Sendable, CustomStringConvertible {
  public let seconds: Int64

  public init(seconds: Int64) { self.seconds = seconds }

  /// - Throws: a usage `DeskError` for anything but positive whole amounts of s, m, h, d.
  public init(parsing text: String) throws(DeskError) {
    let trimmed = text.trimmingASCIISpaces()
    var total: Int64 = 0
    var digits = ""
    var sawUnit = false
    for scalar in trimmed.unicodeScalars {
      if ("0"..."9").contains(scalar) {
        digits.unicodeScalars.append(scalar)
        continue
      }
      let unit: Int64? =
        switch scalar {
        case "s": 1
        case "m": 60
        case "h": 3_600
        case "d": 86_400
        default: nil
        }
      guard let unit, digits.count > 0, digits.count <= 9, let amount = Int64(digits) else {
        throw .usage("\(quoted(text)) is not a duration: write e.g. 30s, 15m, 24h, 7d or 1h30m")
      }
      total += amount * unit
      digits = ""
      sawUnit = true
    }
    guard sawUnit, digits.isEmpty, total > 0, total <= 366 * 86_400 else {
      throw .usage("\(quoted(text)) is not a duration: write e.g. 30s, 15m, 24h, 7d or 1h30m (at most 366d)")
    }
    seconds = total
  }

  public var description: String {
    var rest = seconds
    var parts: [String] = []
    for (unit, size) in [("d", Int64(86_400)), ("h", 3_600), ("m", 60), ("s", 1)] where rest >= size {
      parts.append("\(rest / size)\(unit)")
      rest %= size
    }
    return parts.isEmpty ? "0s" : parts.joined()
  }
}
