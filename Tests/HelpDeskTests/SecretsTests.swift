import Foundation
import Testing

@testable import HelpDesk

/// Plays back fixed draws, to test what the code generator does with each.
struct ScriptedGenerator: RandomNumberGenerator {
  var draws: [UInt64]
  mutating func next() -> UInt64 { draws.removeFirst() }
}

@Suite("secrets: tokens, codes, hashes")
struct SecretsTests {
  @Test("a token is 32 random bytes in base64url: 43 characters of the URL-safe alphabet, never repeated")
  func tokens() {
    let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    var seen = Set<String>()
    for _ in 0..<2_000 {
      let token = Secrets.newToken()
      #expect(token.text.count == 43)
      #expect(token.text.allSatisfy(alphabet.contains))
      seen.insert(token.text)
    }
    #expect(seen.count == 2_000)
  }

  @Test("base64url matches RFC 4648's test vectors, with - and _ for + and /")
  func base64url() {
    let vectors = [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")]
    for (input, expected) in vectors {
      #expect(Secrets.base64url(Array(input.utf8)) == expected)
    }
    #expect(Secrets.base64url([0xFB, 0xFF, 0xBF]) == "-_-_")
  }

  @Test("printing a secret shows no part of it")
  func redacted() {
    let token = Secrets.newToken()
    let code = Secrets.newCode()
    let printed = "\(token) \(code) \(String(describing: token)) \(String(reflecting: code))"
    #expect(!printed.contains(token.text))
    #expect(!printed.contains(code.digits))
  }

  @Test("the token's hash is SHA-256 of its text (what the database computes on redemption)")
  func tokenHash() {
    let token = SecretToken(text: "abc")
    let hex = token.hash.map { String(format: "%02x", $0) }.joined()
    #expect(hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
  }

  @Test("a draw in the biased tail is drawn again, so every code is equally likely")
  func rejectionSampling() {
    // 2^32 = 4 294 967 296; the draws 4 294 000 000 and above would favour codes 000000–967295.
    var generator = ScriptedGenerator(draws: [4_294_000_000, 4_294_967_295, 4_293_999_999])
    #expect(Secrets.newCode(using: &generator).digits == "999999")
    #expect(generator.draws.isEmpty)
    var small = ScriptedGenerator(draws: [5])
    #expect(Secrets.newCode(using: &small).digits == "000005")
  }

  @Test("codes are six digits, spread evenly: chi-square over 100 buckets of 200 000 codes")
  func codeDistribution() {
    var buckets = [Int](repeating: 0, count: 100)
    let draws = 200_000
    for _ in 0..<draws {
      let code = Secrets.newCode().digits
      #expect(code.count == 6 && code.allSatisfy(\.isASCII) && code.allSatisfy(\.isNumber))
      buckets[Int(code)! / 10_000] += 1
    }
    let expected = Double(draws) / 100
    let chiSquare = buckets.reduce(0.0) { $0 + pow(Double($1) - expected, 2) / expected }
    // 99 degrees of freedom: P(chi² > 181) is about one in a million for a uniform source.
    #expect(chiSquare < 181, "chi-square \(chiSquare)")
    // And each position uses every digit.
    #expect(Set((0..<1_000).map { _ in Secrets.newCode().digits.last! }).count == 10)
  }

  @Test("constant-time comparison compares")
  func constantTime() {
    #expect(Secrets.constantTimeEqual([1, 2, 3], [1, 2, 3]))
    #expect(!Secrets.constantTimeEqual([1, 2, 3], [1, 2, 4]))
    #expect(!Secrets.constantTimeEqual([1, 2, 3], [1, 2]))
  }
}
