import CSV
import Foundation

/// One account as the identity feed lists it, normalised and checked.
public struct RosterEntry: Sendable, Equatable {
  /// The line of the file the row starts on (a quoted field may span several).
  public var line: Int
  public var accountID: AccountID
  public var displayName: String
  public var email: EmailAddress
  /// `active` or `disabled`.
  public var status: String
  public var highRisk: Bool
}

/// The identity feed's CSV export, read one row at a time so that a million-row file is never
/// in memory: RFC 4180 quoting (parsed by CSV.swift), UTF-8 with or without a byte order mark,
/// CRLF or LF line ends, a header naming the columns in any order. Each row is normalised and
/// checked as it is read; the first problem stops the read with its line and column.
public final class RosterFeed {
  /// The columns the header must name, each once.
  public static let columns = ["account_id", "display_name", "email", "status", "high_risk"]

  /// The file, as named by the caller.
  public let path: String
  private let reader: CSVReader
  /// Where each of `columns` is in the file's rows.
  private let positions: [Int]
  private let width: Int
  private var nextLine: Int

  /// Opens the file and reads its header.
  ///
  /// - Throws: a usage `DeskError` when the file can't be opened, a bad-data one when the header
  ///   is missing, lacks a column, repeats one or names one this tool doesn't know.
  public init(path: String) throws(DeskError) {
    self.path = path
    let shownPath = quoted(path, limit: 120)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw .usage("\(shownPath): no such file")
    }
    guard !isDirectory.boolValue else { throw .usage("\(shownPath) is a directory, not a CSV file") }
    guard FileManager.default.isReadableFile(atPath: path), let stream = InputStream(fileAtPath: path) else {
      throw .usage("\(shownPath) can't be read (permissions?)")
    }
    let reader: CSVReader
    do {
      reader = try CSVReader(stream: stream)
    } catch {
      throw .usage("\(shownPath) can't be read (\(error))")
    }
    let expected = Self.columns.joined(separator: ",")
    guard let header = reader.next() else {
      if let failure = Self.readFailure(of: reader, line: 1, column: 1) { throw failure }
      throw .badData("\(shownPath) is empty: the first line must be the header \(expected)")
    }
    if let failure = Self.readFailure(of: reader, line: 1, column: header.count) { throw failure }
    var found = [Int?](repeating: nil, count: Self.columns.count)
    for (index, text) in header.enumerated() {
      let name = text.trimmingASCIISpaces().lowercased()
      guard let column = Self.columns.firstIndex(of: name) else {
        throw .badData(
          "line 1, column \(index + 1): \(quoted(text)) is not a column of the feed; the header is \(expected) "
            + "(in any order)")
      }
      guard found[column] == nil else {
        throw .badData("line 1, column \(index + 1): \(name) appears twice in the header")
      }
      found[column] = index
    }
    var positions: [Int] = []
    for (column, position) in found.enumerated() {
      guard let position else {
        throw .badData("line 1: the header has no \(Self.columns[column]) column; it must be \(expected)")
      }
      positions.append(position)
    }
    self.reader = reader
    self.positions = positions
    width = header.count
    nextLine = 2 + header.reduce(0) { $0 + $1.lineFeeds }
  }

  /// The next row, or nil at the end of the file. Blank lines are skipped.
  ///
  /// - Throws: a bad-data `DeskError` starting `line N, column C (name):` for a row with the
  ///   wrong number of fields, text that isn't UTF-8, or a value that isn't valid.
  public func next() throws(DeskError) -> RosterEntry? {
    while true {
      let line = nextLine
      guard let fields = reader.next() else {
        if let failure = Self.readFailure(of: reader, line: line, column: 1) { throw failure }
        return nil
      }
      if let failure = Self.readFailure(of: reader, line: line, column: fields.count) { throw failure }
      nextLine = line + 1 + fields.reduce(0) { $0 + $1.lineFeeds }
      if fields.count == 1, fields[0].isEmpty { continue }
      guard fields.count == width else {
        if fields.count < width {
          throw .badData(
            "line \(line), column \(fields.count + 1): missing; the row has \(fields.count) fields, the header \(width)"
          )
        }
        throw .badData(
          "line \(line), column \(width + 1): one field too many; the row has \(fields.count) fields, the header "
            + "\(width) (a comma in an unquoted value?)")
      }
      return try entry(fields, line: line)
    }
  }

  private func entry(_ fields: [String], line: Int) throws(DeskError) -> RosterEntry {
    func problem(_ column: Int, _ message: String) -> DeskError {
      .badData("line \(line), column \(positions[column] + 1) (\(Self.columns[column])): \(message)")
    }
    let accountID: AccountID
    do {
      accountID = try AccountID(parsing: fields[positions[0]])
    } catch {
      throw problem(0, error.message)
    }
    let displayName = fields[positions[1]].trimmingASCIISpaces()
    guard !displayName.isEmpty else { throw problem(1, "the name is empty") }
    // Line breaks and tabs are kept (a quoted name may hold them); other controls are refused.
    let control = displayName.unicodeScalars.contains { scalar in
      let value = scalar.value
      return (value < 0x20 && value != 0x09 && value != 0x0A && value != 0x0D) || (0x7F...0x9F).contains(value)
    }
    guard !control else { throw problem(1, "\(quoted(displayName)) contains control characters") }
    let email: EmailAddress
    do {
      email = try EmailAddress(ofRecord: fields[positions[2]])
    } catch {
      throw problem(2, error.message)
    }
    let statusText = fields[positions[3]].trimmingASCIISpaces()
    let status = statusText.lowercased()
    guard status == "active" || status == "disabled" else {
      throw problem(3, "\(quoted(statusText)) is not a status (active or disabled)")
    }
    let riskText = fields[positions[4]].trimmingASCIISpaces()
    let highRisk: Bool
    switch riskText.lowercased() {
    case "true", "t", "yes", "y", "1": highRisk = true
    case "false", "f", "no", "n", "0": highRisk = false
    case "": throw problem(4, "empty; say true or false (a missing flag must not lower anyone's protection)")
    default: throw problem(4, "\(quoted(riskText)) is not true or false")
    }
    return RosterEntry(
      line: line, accountID: accountID, displayName: displayName, email: email, status: status,
      highRisk: highRisk)
  }

  /// What went wrong reading the row that starts on `line`, if anything. CSV.swift reports
  /// trouble through `error` and ends the rows there.
  private static func readFailure(of reader: CSVReader, line: Int, column: Int) -> DeskError? {
    switch reader.error {
    case nil:
      return nil
    // Where a file stream keeps saying it has bytes until a read returns none (Linux), the
    // end of the file is reported as this.
    case CSVError.cannotReadFile?:
      return nil
    case CSVError.unicodeDecoding?:
      return .badData("line \(line), column \(max(column, 1)): the text is not UTF-8; export the feed as UTF-8")
    case let error?:
      return .usage("line \(line): reading the file failed (\(error))")
    }
  }
}

extension String {
  fileprivate var lineFeeds: Int {
    utf8.reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
  }
}
