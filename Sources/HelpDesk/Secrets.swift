import Crypto

/// Secrets the desk hands out: made from the operating system's CSPRNG, hashed before anything
/// reaches the database, and never printed.
///
/// `SystemRandomNumberGenerator` is the OS's CSPRNG (getrandom(2) on Linux, arc4random on Apple
/// systems); nothing here is seeded.
public enum Secrets {
  /// A new activation-link token: 32 random bytes, base64url without padding (43 characters).
  public static func newToken() -> SecretToken {
    var generator = SystemRandomNumberGenerator()
    var bytes: [UInt8] = []
    bytes.reserveCapacity(32)
    for _ in 0..<4 {
      var word = generator.next()
      for _ in 0..<8 {
        bytes.append(UInt8(truncatingIfNeeded: word))
        word >>= 8
      }
    }
    return SecretToken(text: base64url(bytes))
  }

  /// A new 6-digit code, uniform over 000000–999999.
  ///
  /// Rejection sampling: a 32-bit draw at or above the largest multiple of 1 000 000 is drawn
  /// again, so `% 1_000_000` has no bias toward low codes.
  public static func newCode() -> SecretCode {
    var generator = SystemRandomNumberGenerator()
    return newCode(using: &generator)
  }

  /// A 6-digit code from `generator` (tests pass a scripted one).
  static func newCode(using generator: inout some RandomNumberGenerator) -> SecretCode {
    let range: UInt32 = 1_000_000
    let limit = UInt32.max - (UInt32.max % range + 1) % range  // last acceptable draw
    var draw: UInt32
    repeat {
      draw = UInt32(truncatingIfNeeded: generator.next())
    } while draw > limit
    let digits = String(draw % range)
    return SecretCode(digits: String(repeating: "0", count: 6 - digits.count) + digits)
  }

  /// `count` random bytes, e.g. a salt.
  public static func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
  }

  /// SHA-256 of the bytes.
  public static func sha256(_ bytes: some Sequence<UInt8>) -> [UInt8] {
    Array(SHA256.hash(data: Array(bytes)))
  }

  /// The bytes as lowercase hex, two digits each: the one spelling of digests and random names.
  public static func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var text: [UInt8] = []
    for byte in bytes {
      text.append(digits[Int(byte >> 4)])
      text.append(digits[Int(byte & 0x0F)])
    }
    return String(decoding: text, as: UTF8.self)
  }

  /// base64url (RFC 4648 §5) without padding.
  public static func base64url(_ bytes: [UInt8]) -> String {
    let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    var out: [UInt8] = []
    out.reserveCapacity((bytes.count * 4 + 2) / 3)
    var i = 0
    while i + 3 <= bytes.count {
      let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
      out += [
        alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)],
      ]
      i += 3
    }
    let rest = bytes.count - i
    if rest == 1 {
      let n = UInt32(bytes[i]) << 16
      out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)]]
    } else if rest == 2 {
      let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
      out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)]]
    }
    return String(decoding: out, as: UTF8.self)
  }

  /// Compares two byte strings in time that depends only on their length.
  public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
  }
}

/// A token that must never be printed: its description is redacted, so string interpolation
/// into a message or a log line can't leak it.
public struct SecretToken: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
  /// The token itself: only for the one place that delivers it (the link in an email).
  public let text: String

  /// SHA-256 of the token's text: what the database stores and matches.
  public var hash: [UInt8] { Secrets.sha256(text.utf8) }

  public var description: String { "<redacted token>" }
  public var debugDescription: String { description }
}

/// A 6-digit code that must never be printed (description redacted).
public struct SecretCode: Sendable, CustomStringConvertible, CustomDebugStringConvertible {
  public let digits: String

  /// SHA-256 of salt followed by the digits.
  public func saltedHash(_ salt: [UInt8]) -> [UInt8] { Secrets.sha256(salt + Array(digits.utf8)) }

  public var description: String { "<redacted code>" }
  public var debugDescription: String { description }
}
