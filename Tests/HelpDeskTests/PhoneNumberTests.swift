import HelpDesk
import PropertyBased
import Testing

@Suite("phone numbers parsed at the edge")
struct PhoneNumberTests {
  @Test(
    "US numbers as people write them",
    arguments: [
      "(617) 432-2000", "617.432.2000", "617-432-2000", "6174322000", "1 617 432 2000", "+1 617 432 2000",
      "+1 (617) 432-2000", "+16174322000", "  617 432 2000  ",
    ])
  func usForms(_ text: String) throws {
    let number = try PhoneNumber(parsing: text, defaultRegion: "US")
    #expect(number.e164 == "+16174322000")
    #expect(number.region == "US")
    #expect(number.description == "+16174322000")
    #expect(number.international == "+1 617-432-2000")
  }

  @Test(
    "UK numbers, with a country code or an international dialling prefix from the US",
    arguments: ["+44 20 7946 0000", "011 44 20 7946 0000", "+44 (0)20 7946 0000", "+442079460000"])
  func ukFromUS(_ text: String) throws {
    let number = try PhoneNumber(parsing: text, defaultRegion: "US")
    #expect(number.e164 == "+442079460000")
    #expect(number.region == "GB")
    #expect(number.international == "+44 20 7946 0000")
  }

  @Test("HMS2FA_DEFAULT_REGION=GB reads national numbers as British")
  func britishDefault() throws {
    let region = PhoneNumber.defaultRegion(environment: ["HMS2FA_DEFAULT_REGION": "GB"])
    #expect(region == "GB")
    #expect(try PhoneNumber(parsing: "020 7946 0000", defaultRegion: region).e164 == "+442079460000")
    #expect(try PhoneNumber(parsing: "00 1 617 432 2000", defaultRegion: region).e164 == "+16174322000")
    // The same text means nothing valid in the US.
    #expect(throws: PhoneNumberError.self) { try PhoneNumber(parsing: "020 7946 0000", defaultRegion: "US") }
  }

  @Test("the default region comes from the environment, US when unset, and must be known")
  func defaultRegion() throws {
    #expect(PhoneNumber.defaultRegion(environment: [:]) == "US")
    #expect(PhoneNumber.defaultRegion(environment: ["HMS2FA_DEFAULT_REGION": ""]) == "US")
    #expect(PhoneNumber.defaultRegion(environment: ["HMS2FA_DEFAULT_REGION": " gb "]) == "GB")
    #expect(try PhoneNumber.checkedDefaultRegion(environment: ["HMS2FA_DEFAULT_REGION": "de"]) == "DE")
    #expect(PhoneNumber.isKnownRegion("FR"))
    for bad in ["XX", "USA", "001", "U\u{0}S"] {
      #expect(!PhoneNumber.isKnownRegion(bad), "\(bad)")
      let error = #expect(throws: PhoneNumberError.self, "\(bad)") {
        try PhoneNumber.checkedDefaultRegion(environment: ["HMS2FA_DEFAULT_REGION": bad])
      }
      #expect(error?.kind == .unknownRegion)
      #expect(error?.reason.contains("HMS2FA_DEFAULT_REGION") == true)
      #expect(error?.deskError.status == .configuration)
    }
    for bad in ["XX", "US\u{0}XX"] {
      let error = #expect(throws: PhoneNumberError.self) {
        try PhoneNumber(parsing: "+1 617 432 2000", defaultRegion: bad)
      }
      #expect(error?.kind == .unknownRegion)
    }
    #expect(try PhoneNumber(parsing: "617 432 2000", defaultRegion: " us").region == "US")
  }

  @Test(
    "what is not a whole, valid phone number is refused, saying why",
    arguments: [
      ("1-800-FLOWERS", PhoneNumberError.Kind.letters),
      ("617-432-2000 ext. 12", .letters),
      ("６１７ＡＢＣ２０００", .letters),
      ("617-432", .tooShort),
      ("432-2000", .tooShort),
      ("+1 555 0100", .tooShort),
      ("12345678901234567890", .tooLong),
      ("+1 123 456 7890", .invalidNumber),
      ("(617) 132-2000", .invalidNumber),
      ("", .empty),
      (" \t ", .empty),
      ("+999 1234567", .invalidCountryCode),
      ("617-432-2000 #12", .hasExtension),
      ("--", .notANumber),
      ("617-432-2000, 617-432-2001", .notANumber),
      (String(repeating: "6", count: 65), .tooLong),
    ])
  func refused(_ text: String, _ kind: PhoneNumberError.Kind) {
    let error = #expect(throws: PhoneNumberError.self) { try PhoneNumber(parsing: text, defaultRegion: "US") }
    #expect(error?.kind == kind)
    #expect(error?.deskError.status == .dataError)
    let reason = error?.reason ?? ""
    #expect(!reason.isEmpty && !reason.contains("\n"))
    #expect(reason.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F })
  }

  @Test("control and invisible characters are refused, not passed on")
  func controlCharacters() {
    for text in [
      "617\u{0}432-2000", "617\u{1B}[2J432-2000", "617\u{7F}432-2000", "617\u{202E}432-2000", "\u{FEFF}6174322000",
    ] {
      let error = #expect(throws: PhoneNumberError.self, "\(text.debugDescription)") {
        try PhoneNumber(parsing: text, defaultRegion: "US")
      }
      #expect(error?.kind == .controlCharacters, "\(text.debugDescription)")
      #expect(error?.reason.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F || $0 == "…" } == true)
    }
  }

  @Test("messages say what to do")
  func messages() {
    let short = #expect(throws: PhoneNumberError.self) { try PhoneNumber(parsing: "617-432", defaultRegion: "US") }
    #expect(
      short?.reason == "'617-432' is too short to be a phone number; give the full number with its area code")
    let letters = #expect(throws: PhoneNumberError.self) {
      try PhoneNumber(parsing: "1-800-FLOWERS", defaultRegion: "US")
    }
    #expect(letters?.description.hasPrefix("'1-800-FLOWERS' contains letters") == true)
  }

  @Test("a message shows at most 40 characters of the text, with control characters escaped")
  func echoIsShortAndPrintable() {
    let long = "+1 617 432 2000 " + String(repeating: "9", count: 200)
    let error = #expect(throws: PhoneNumberError.self) { try PhoneNumber(parsing: long, defaultRegion: "US") }
    #expect(error?.kind == .tooLong)
    #expect(error?.reason.contains(String(long.prefix(40)) + "…") == true)
    #expect(error?.reason.contains(String(long.prefix(41))) == false)

    let control = #expect(throws: PhoneNumberError.self) {
      try PhoneNumber(parsing: "617\u{1B}432\u{7}2000", defaultRegion: "US")
    }
    #expect(control?.reason.hasPrefix(#"'617\u{1b}432\u{7}2000'"#) == true)
  }

  @Test("numbers are equal by their E.164 form, however they were written")
  func equality() throws {
    let a = try PhoneNumber(parsing: "(617) 432-2000", defaultRegion: "US")
    let b = try PhoneNumber(parsing: "+44 20 7946 0000", defaultRegion: "US")
    #expect(a == (try PhoneNumber(parsing: "+1.617.432.2000", defaultRegion: "GB")))
    #expect(a != b)
    #expect(Set([a, b, a]).count == 2)
  }

  @Test("parsing from many threads at once gives the same answers")
  func concurrent() async {
    let results = await withTaskGroup(of: String?.self) { group in
      for index in 0..<200 {
        group.addTask {
          index.isMultiple(of: 2)
            ? try? PhoneNumber(parsing: "(617) 432-2000", defaultRegion: "US").e164
            : try? PhoneNumber(parsing: "020 7946 0000", defaultRegion: "GB").international
        }
      }
      var all: [String?] = []
      for await result in group { all.append(result) }
      return all
    }
    #expect(results.count == 200)
    #expect(Set(results) == ["+16174322000", "+44 20 7946 0000"])
  }

  // MARK: properties

  @Test("punctuation between the digits does not change the number")
  func formattingInsensitive() async {
    await propertyCheck(count: 500, input: writtenNumbers, separators) { written, separators in
      let text = written.text(separatedBy: separators)
      #expect(text.unicodeScalars.count <= PhoneNumber.maximumLength)
      guard let number = parsed(text, defaultRegion: written.defaultRegion) else { return }
      #expect(number.e164 == written.e164, "\(text) with default region \(written.defaultRegion)")
      #expect(number.region == written.region, "\(text)")
    }
  }

  @Test("E.164 and international forms parse back to the same number, whatever the default region")
  func roundTrip() async {
    await propertyCheck(count: 300, input: writtenNumbers, regions) { written, otherRegion in
      guard let number = parsed(written.text(separatedBy: []), defaultRegion: written.defaultRegion) else { return }
      #expect(number.e164 == written.e164)
      let fromE164 = parsed(number.e164, defaultRegion: otherRegion)
      #expect(fromE164 == number, "\(number.e164) with default region \(otherRegion)")
      let international = number.international
      #expect(international != number.e164 && international.hasPrefix("+"), "\(international)")
      let fromInternational = parsed(international, defaultRegion: otherRegion)
      #expect(fromInternational == number, "\(international) with default region \(otherRegion)")
      #expect(fromInternational?.international == international)
    }
  }

  @Test("a number with digits missing from its end is too short")
  func truncatedIsTooShort() async {
    await propertyCheck(count: 200, input: usNumbers, Gen.int(in: 1...7)) { written, dropped in
      let text = String(written.e164.dropLast(dropped))
      let error = #expect(throws: PhoneNumberError.self, "\(text)") {
        try PhoneNumber(parsing: text, defaultRegion: "US")
      }
      #expect(error?.kind == .tooShort, "\(text)")
    }
  }

  @Test("a letter anywhere is refused")
  func lettersRefused() async {
    await propertyCheck(count: 200, input: writtenNumbers, Gen.letter, Gen.int(in: 0...20)) {
      written, letter, position in
      var text = written.text(separatedBy: [])
      let index = text.index(text.startIndex, offsetBy: min(position, text.count))
      text.insert(letter, at: index)
      let error = #expect(throws: PhoneNumberError.self, "\(text)") {
        try PhoneNumber(parsing: text, defaultRegion: written.defaultRegion)
      }
      #expect(error?.kind == .letters, "\(text)")
    }
  }
}

/// Parses, recording a failure as an issue. A property's body must not throw: `propertyCheck`
/// does not count an error thrown out of it as a failure.
private func parsed(
  _ text: String, defaultRegion: String, sourceLocation: SourceLocation = #_sourceLocation
) -> PhoneNumber? {
  do {
    return try PhoneNumber(parsing: text, defaultRegion: defaultRegion)
  } catch {
    Issue.record(
      "\(text.debugDescription) with default region \(defaultRegion): \(error)", sourceLocation: sourceLocation)
    return nil
  }
}

/// A valid number as someone might type it, and what it must parse to.
private struct WrittenNumber: Sendable, CustomStringConvertible {
  /// `+` and digits, or digits only: the characters someone types, before any punctuation.
  var typed: String
  var defaultRegion: String
  var e164: String
  var region: String

  /// The typed characters with `separators[i]` after the i-th one (the `+` included).
  func text(separatedBy separators: [String]) -> String {
    var result = ""
    for (index, character) in typed.enumerated() {
      result.append(character)
      if index < typed.count - 1, index < separators.count { result += separators[index] }
    }
    return result
  }

  var description: String { "\(typed) in \(defaultRegion)" }
}

/// Real US area codes; every exchange 200–999 in them is valid.
private let usAreaCodes = ["617", "212", "415", "312", "202", "303", "206", "713", "305", "508", "781", "857", "646"]

/// UK geographic ranges with all their numbers valid: London 020 3/7/8, Manchester 0161,
/// Oxford 01865, each with how many digits follow.
private let ukRanges: [(prefix: String, digits: Int)] = [
  ("203", 7), ("207", 7), ("208", 7), ("161", 7), ("1865", 6),
]

private func pick<T: Sendable>(_ values: [T]) -> Generator<T, Shrink.Integer<Int>> {
  Gen.int(in: 0...(values.count - 1)).map { values[$0] }
}

private func digits(_ value: Int, count: Int) -> String {
  let text = String(value)
  return String(repeating: "0", count: max(0, count - text.count)) + text
}

/// US numbers typed the ways people in the US or the UK would.
private let usNumbers = zip(
  pick(usAreaCodes), Gen.int(in: 200...999), Gen.int(in: 0...9999),
  pick([("", "US"), ("1", "US"), ("+1", "US"), ("+1", "GB"), ("001", "GB"), ("+1", "DE")])
).map { area, exchange, line, form in
  let national = area + digits(exchange, count: 3) + digits(line, count: 4)
  return WrittenNumber(typed: form.0 + national, defaultRegion: form.1, e164: "+1" + national, region: "US")
}

/// UK numbers typed the ways people in the UK or the US would.
private let ukNumbers = zip(
  pick(ukRanges), Gen.int(in: 0...9_999_999),
  pick([("0", "GB"), ("+44", "GB"), ("0044", "GB"), ("+44", "US"), ("01144", "US"), ("+44", "FR")])
).map { range, subscriber, form in
  let national = range.prefix + digits(subscriber, count: 7).suffix(range.digits)
  return WrittenNumber(typed: form.0 + national, defaultRegion: form.1, e164: "+44" + national, region: "GB")
}

private let writtenNumbers = Gen<WrittenNumber>.oneOf(usNumbers, ukNumbers)

/// Punctuation people put between digits, one string after each typed character.
private let separators = pick(["", "", "", " ", "-", ".", "(", ")", ") ", " (", "/", " - "]).array(of: 15)

private let regions = pick(["US", "GB", "DE", "FR", "JP", "AU", "IN", "BR"])
