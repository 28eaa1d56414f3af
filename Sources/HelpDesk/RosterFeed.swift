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

/// A record of the feed: a row read and checked, or an account recognised without reading.
public enum RosterRecord: Sendable, Equatable {
  case entry(RosterEntry)
  /// The record is exactly what the feed would hold for this account (by the recogniser's
  /// numbering) unchanged.
  case recognised(account: Int, line: Int)
}

/// The identity feed's CSV export, read one row at a time so that a million-row file is never
/// in memory as rows: RFC 4180 quoting, UTF-8 with or without a byte order mark, CRLF or LF
/// line ends, a header naming the columns in any order. Each row is normalised and checked as
/// it is read, and an account id seen twice is refused; the first problem stops the read with
/// its line and column.
///
/// CSV.swift parses the fields. It is fed the file in runs of whole records, as strings: its
/// file-stream input goes through Foundation byte by byte, at less than half the speed. A
/// record ends at a line feed outside quotes; finding it follows RFC 4180's quoting, and refuses
/// quotes RFC 4180 doesn't allow (CSV.swift would take them as text, and the two readings of the
/// file would differ). That is all that is read here by hand.
///
/// With a recogniser (`nextRecord(recognising:)`), a record it knows byte for byte is returned as
/// that account without being parsed at all; runs of the others go to CSV.swift.
public final class RosterFeed {
  /// Knows records byte for byte (`RosterSnapshot`).
  protocol Recogniser: AnyObject {
    /// Block `number` of the file is about to be read: its bytes, and where each of its records
    /// ends (`Block`). The recogniser may look its records up now, all together.
    func prepare(block number: Int, _ bytes: UnsafeBufferPointer<UInt8>, recordEnds: UnsafeBufferPointer<Int>)
    /// The account whose record is exactly `bytes`, which start at `offset` in block `number`.
    func account(recognising bytes: UnsafeBufferPointer<UInt8>, block number: Int, offset: Int) -> Int?
  }

  /// The columns the header must name, each once.
  public static let columns = ["account_id", "display_name", "email", "status", "high_risk"]
  /// How far the file is read ahead of the rows taken, in bytes: a nightly export of a million
  /// accounts (60 MB) is read whole while the import reads the registry's roster.
  static let readAhead = 64 << 20

  /// The file, as named by the caller.
  public let path: String
  /// Its size in bytes when it was opened.
  public let size: Int
  /// The size of the blocks it is read in.
  private let blockSize: Int
  /// How the feed writes its rows, known once the first row is read; nil before, or when the
  /// first row spells a status or flag in an unusual way.
  public private(set) var style: RosterStyle?
  private let input: BlockPrefetch
  private var reader: CSVReader?
  /// Where each of `columns` is in the file's rows.
  private var positions: [Int] = []
  private var width = 0
  private var nextLine = 1
  /// The line each account id read (not recognised) was first seen on.
  private var seen: [String: Int] = [:]
  /// The block of whole records being read, where each of its records ends (the index of its
  /// line feed; the last record of the file may have none), and how far it has been read.
  private var block: [UInt8] = []
  private var recordEnds: [Int] = []
  private var nextEnd = 0
  private var offset = 0
  /// A recognised account whose record follows the run CSV.swift is reading.
  private var deferred: Int?
  /// The first row has been read (and `style` learned from it, if it could be).
  private var styleLearned = false
  /// The first byte of the record CSV.swift is reading, while it reads one record alone.
  private var firstByte: UInt8?
  /// Blocks read so far: the number of the one being read.
  private var blockNumber = 0

  /// Opens the file and reads its header.
  ///
  /// - Throws: a usage `DeskError` when the file can't be opened, a bad-data one when the header
  ///   is missing, lacks a column, repeats one or names one this tool doesn't know.
  public init(path: String, blockSize: Int = 1 << 20) throws(DeskError) {
    self.path = path
    let shownPath = quoted(path, limit: 120)
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
      throw .usage("\(shownPath): no such file")
    }
    guard !isDirectory.boolValue else { throw .usage("\(shownPath) is a directory, not a CSV file") }
    guard FileManager.default.isReadableFile(atPath: path), let handle = FileHandle(forReadingAtPath: path) else {
      throw .usage("\(shownPath) can't be read (permissions?)")
    }
    let blockSize = max(blockSize, 64)
    self.blockSize = blockSize
    input = BlockPrefetch(
      RecordBlocks(handle: handle, path: shownPath, blockSize: blockSize),
      capacity: max(2, Self.readAhead / blockSize))
    // Rows are rarely shorter than 40 bytes; growing the table as it fills costs more.
    size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    seen.reserveCapacity(min(size / 40, 4_000_000))
    let expected = Self.columns.joined(separator: ",")
    guard case .fields(let header) = try nextRaw(recognising: nil) else {
      throw .badData("\(shownPath) is empty: the first line must be the header \(expected)")
    }
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
    for (column, position) in found.enumerated() {
      guard let position else {
        throw .badData("line 1: the header has no \(Self.columns[column]) column; it must be \(expected)")
      }
      positions.append(position)
    }
    width = header.count
  }

  deinit {
    input.stop()
  }

  /// The same file opened again, from its start.
  public func reopened() throws(DeskError) -> RosterFeed {
    try RosterFeed(path: path, blockSize: blockSize)
  }

  /// The next row, or nil at the end of the file. Blank lines are skipped.
  ///
  /// - Throws: a bad-data `DeskError` starting `line N, column C (name):` for a row with the
  ///   wrong number of fields, text that isn't UTF-8, a value that isn't valid, or an account id
  ///   already seen.
  public func next() throws(DeskError) -> RosterEntry? {
    while let record = try nextRecord(recognising: nil) {
      if case .entry(let entry) = record { return entry }
    }
    return nil
  }

  /// The next record, or nil at the end of the file: `.recognised` when `recognise` knows its
  /// bytes (without the line end) as an account, otherwise the row, read and checked as by
  /// `next()`. Records are offered to `recognise` only once the first row has been read.
  ///
  /// An account id is refused as seen before only when it is seen twice in rows read: whoever
  /// recognises records keeps track of the accounts they stand for (`repeated`).
  func nextRecord(recognising recognise: Recogniser?) throws(DeskError) -> RosterRecord? {
    while true {
      let line = nextLine
      guard let raw = try nextRaw(recognising: recognise) else { return nil }
      let fields: [String]
      switch raw {
      case .recognised(let account): return .recognised(account: account, line: line)
      case .fields(let read): fields = read
      }
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
      if !styleLearned {
        styleLearned = true
        style = RosterStyle(positions: positions, fields: fields, firstByte: firstByte)
      }
      return .entry(try entry(fields, line: line))
    }
  }

  /// The problem of an account id listed a second time, on `line`, first on `first`.
  public func repeated(_ id: String, line: Int, first: Int) -> DeskError {
    .badData(
      "line \(line), column \(positions[0] + 1) (account_id): account id \(id) appears again (first on line "
        + "\(first)); ids are compared trimmed and lowercased")
  }

  private enum Raw {
    case fields([String])
    case recognised(Int)
  }

  /// The next record's fields from CSV.swift, or the account `recognise` knows it as, moving
  /// `nextLine` past it.
  private func nextRaw(recognising recognise: Recogniser?) throws(DeskError) -> Raw? {
    while true {
      if let reader {
        if let fields = reader.next() {
          nextLine += 1 + fields.reduce(0) { $0 + $1.lineFeeds }
          return .fields(fields)
        }
        self.reader = nil
      }
      if let account = deferred {
        // A recognised record has no line break inside: its fields have none.
        deferred = nil
        nextLine += 1
        return .recognised(account)
      }
      if offset >= block.count {
        guard let next = try input.next() else { return nil }
        block = next.bytes
        recordEnds = next.recordEnds
        nextEnd = 0
        offset = 0
        blockNumber += 1
        if styleLearned, let recognise {
          let number = blockNumber
          block.withUnsafeBufferPointer { bytes in
            recordEnds.withUnsafeBufferPointer { ends in recognise.prepare(block: number, bytes, recordEnds: ends) }
          }
        }
        continue
      }
      // A run of records not recognised, up to one that is, or to the end of the block; until
      // the first row is read, one record at a time.
      let start = offset
      let recognising = styleLearned ? recognise : nil
      let oneRecord = !styleLearned
      // Locals while the run is gathered: a class's stored properties are checked for exclusive
      // access at every touch.
      var position = offset
      var endIndex = nextEnd
      var found: Int?
      let number = blockNumber
      let runEnd = block.withUnsafeBufferPointer { bytes in
        recordEnds.withUnsafeBufferPointer { ends in
          while position < bytes.count {
            let recordStart = position
            let end = endIndex < ends.count ? ends[endIndex] + 1 : bytes.count
            endIndex += 1
            position = end
            if let recognising {
              let last = recordContentEnd(bytes, start: recordStart, end: end)
              let record = UnsafeBufferPointer(rebasing: bytes[recordStart..<last])
              if let account = recognising.account(recognising: record, block: number, offset: recordStart) {
                found = account
                return recordStart
              }
            }
            if oneRecord { break }
          }
          return position
        }
      }
      offset = position
      nextEnd = endIndex
      deferred = found
      guard runEnd > start else { continue }
      firstByte = block[start]
      do {
        reader = try CSVReader(string: String(decoding: block[start..<runEnd], as: UTF8.self))
      } catch {
        throw DeskError(.software, "internal error: CSV.swift refused a block (\(error))")
      }
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
    if let first = seen.updateValue(line, forKey: accountID.value) {
      throw repeated(accountID.value, line: line, first: first)
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
}

/// Where the record from `start` to `end` in `bytes` ends without its line end (LF, or CRLF):
/// what a recogniser is asked about.
@inline(__always)
func recordContentEnd(_ bytes: UnsafeBufferPointer<UInt8>, start: Int, end: Int) -> Int {
  var last = end
  if last > start, bytes[last - 1] == 0x0A { last -= 1 }
  if last > start, bytes[last - 1] == 0x0D { last -= 1 }
  return last
}

/// A block of whole records of the feed: its bytes (valid UTF-8) and where each record ends (the
/// index of its line feed; a last record without one isn't listed).
private struct Block: Sendable {
  var bytes: [UInt8]
  var recordEnds: [Int]
}

/// Reads a file's blocks ahead, on a thread of its own, so that reading and scanning the file
/// goes on while the import does other work (reads the registry's roster, parses rows). At most
/// `capacity` blocks wait to be taken. The end of the file, or its first problem, is the last
/// thing read, and is given again to every later call.
private final class BlockPrefetch: @unchecked Sendable {
  // `blocks` is used by the reading thread alone; everything else only under `condition`.
  private let blocks: RecordBlocks
  private let condition = NSCondition()
  private var ready: [Result<Block?, DeskError>] = []
  private var taken = 0
  private var stopped = false
  private let capacity: Int

  init(_ blocks: RecordBlocks, capacity: Int) {
    self.blocks = blocks
    self.capacity = capacity
    Thread { [self] in readAhead() }.start()
  }

  private func readAhead() {
    while true {
      let result: Result<Block?, DeskError>
      do {
        result = .success(try blocks.next())
      } catch {
        result = .failure(error)
      }
      condition.lock()
      while ready.count - taken >= capacity && !stopped { condition.wait() }
      if stopped {
        condition.unlock()
        return
      }
      if taken > 0 {
        ready.removeFirst(taken)
        taken = 0
      }
      ready.append(result)
      condition.broadcast()
      condition.unlock()
      guard case .success(.some) = result else { return }
    }
  }

  /// The next block, nil at the end of the file.
  func next() throws(DeskError) -> Block? {
    condition.lock()
    defer { condition.unlock() }
    while ready.count == taken { condition.wait() }
    let result = ready[taken]
    if case .success(.some) = result {
      taken += 1
      condition.broadcast()
    }
    return try result.get()
  }

  /// Lets the reading thread end; the blocks not taken are dropped.
  func stop() {
    condition.lock()
    stopped = true
    condition.broadcast()
    condition.unlock()
  }
}

/// A file cut into blocks of whole CSV records, each checked to be UTF-8 and returned as a
/// string.
///
/// Finding where a record ends means following RFC 4180's quotes, so the scan also refuses
/// what RFC 4180 doesn't allow and parsers disagree on: a quote inside an unquoted field
/// (`Pat O"Brien`), text after a closing quote (`"Pat" O`), and a record that runs on for more
/// than `maxRecordBytes` (an unclosed quote, or a file whose lines end in CR alone), which would
/// otherwise swallow the rest of the file. The scan carries its state from one read to the next,
/// so every byte is looked at once.
private final class RecordBlocks {
  private let handle: FileHandle
  private let path: String
  private let blockSize: Int
  /// Bytes read but not yet returned: the start of a record that continues in the next read.
  private var pending: [UInt8] = []
  private var atEnd = false
  private var atStart = true
  /// The line `pending` starts on, and the line feeds in it up to the last record end.
  private var line = 1
  private var lineFeedsToLastEnd = 0
  /// Line feeds in `pending` up to where it has been scanned.
  private var lineFeedsScanned = 0
  /// The longest record accepted: far beyond any real row of five short fields.
  private let maxRecordBytes = 1 << 20

  /// Where in a record the scan is.
  private enum State {
    case fieldStart, unquoted, quoted
    /// A quote inside a quoted field: the second of `""`, or the field's end.
    case quoteInQuoted
    /// After a quoted field's closing quote: a comma or the line's end.
    case afterQuoted
    /// A CR outside quotes: a line feed must follow.
    case carriageReturn
  }
  private var state = State.fieldStart
  /// How far `pending` has been scanned, and the last record end (line feed) found in it.
  private var scanned = 0
  private var lastEnd: Int?
  /// The record ends (line feeds outside quotes) found in `pending`.
  private var ends: [Int] = []
  /// The field being scanned, from 1, for messages.
  private var column = 1
  /// Where in `pending` the record being scanned starts.
  private var recordStart = 0

  init(handle: FileHandle, path: String, blockSize: Int) {
    self.handle = handle
    self.path = path
    self.blockSize = blockSize
  }

  /// The next block and where each of its records ends (the index of its line feed; a last
  /// record without one isn't listed), or nil at the end of the file.
  func next() throws(DeskError) -> Block? {
    while true {
      // The records before a problem are returned first (their own problems come first); the
      // scan stops at the problem's byte, so the next call finds it again and throws.
      let problem = scan()
      if lastEnd == nil, let problem { throw problem }
      if let end = lastEnd ?? (atEnd && !pending.isEmpty ? pending.count - 1 : nil) {
        if lastEnd == nil, state == .quoted {
          throw .badData(
            "line \(line), column \(column): a quoted field is not closed "
              + "before the end of the file")
        }
        let block = Array(pending[...end])
        pending.removeFirst(end + 1)
        scanned -= end + 1
        recordStart -= end + 1
        lastEnd = nil
        let blockEnds = ends
        ends.removeAll(keepingCapacity: true)
        guard String(validating: block, as: UTF8.self) != nil else {
          throw notUTF8(block, line: line)
        }
        line += lineFeedsToLastEnd
        lineFeedsScanned -= lineFeedsToLastEnd
        lineFeedsToLastEnd = 0
        return Block(bytes: block, recordEnds: blockEnds)
      }
      if atEnd { return nil }
      let data: Data?
      do {
        data = try handle.read(upToCount: blockSize)
      } catch {
        throw .usage("\(path) could not be read: \(error.localizedDescription)")
      }
      guard let data, !data.isEmpty else {
        atEnd = true
        continue
      }
      pending.append(contentsOf: data)
      if atStart, pending.count >= 3 {
        atStart = false
        if pending.starts(with: [0xEF, 0xBB, 0xBF]) {
          pending.removeFirst(3)
          scanned = 0
          recordStart = 0
        }
      }
    }
  }

  /// Scans the bytes of `pending` not yet scanned, noting the last record end, up to the first
  /// problem: a misplaced quote, a lone CR, a record too long. Returns that problem (line and
  /// column), leaving its byte unscanned.
  private func scan() -> DeskError? {
    var stray: (index: Int, message: String)?
    var tooLong = false
    // The scan's state lives in locals while it runs: stored properties of a class are checked
    // for exclusive access at every touch, which costs more than the scan itself.
    var state = self.state
    var column = self.column
    var recordStart = self.recordStart
    var lastEnd = self.lastEnd
    var ends = self.ends
    var feeds = lineFeedsScanned
    var lineFeedsToLastEnd = self.lineFeedsToLastEnd
    self.ends = []
    let maxRecordBytes = self.maxRecordBytes
    let index = pending.withUnsafeBufferPointer { bytes in
      var index = scanned
      while index < bytes.count {
        let byte = bytes[index]
        // Most bytes are text that changes nothing: skip them quickly.
        if byte > 0x2C || (byte != 0x22 && byte != 0x2C && byte != 0x0A && byte != 0x0D) {
          switch state {
          case .unquoted, .quoted:
            index += 1
            continue
          case .fieldStart:
            state = .unquoted
            index += 1
            continue
          case .quoteInQuoted, .afterQuoted, .carriageReturn:
            break
          }
        }
        switch (state, byte) {
        case (.quoted, 0x22): state = .quoteInQuoted
        case (.quoted, 0x0A): feeds += 1
        case (.quoted, _): break
        case (.quoteInQuoted, 0x22): state = .quoted
        case (.fieldStart, 0x22): state = .quoted
        case (_, 0x0A):
          if index - recordStart > maxRecordBytes {
            tooLong = true
          } else {
            state = .fieldStart
            column = 1
            lastEnd = index
            ends.append(index)
            recordStart = index + 1
            feeds += 1
            lineFeedsToLastEnd = feeds
          }
        case (.carriageReturn, _):
          stray = (
            index,
            "a carriage return that doesn't end the line (lines end in CRLF or LF); export the feed as RFC 4180 CSV"
          )
        case (_, 0x2C):
          state = .fieldStart
          column += 1
        case (_, 0x0D): state = .carriageReturn
        case (.unquoted, 0x22):
          stray = (
            index,
            "a quote inside a field that does not start with one; quote the whole field and double "
              + "the quote, e.g. \"Pat O\"\"Brien\""
          )
        case (.quoteInQuoted, _), (.afterQuoted, _):
          stray = (
            index, "text after a quoted field's closing quote; a quote inside a quoted field is written twice (\"\")"
          )
        case (.fieldStart, _): state = .unquoted
        case (.unquoted, _): break
        }
        if stray != nil || tooLong { break }
        index += 1
      }
      return index
    }
    scanned = index
    if index - recordStart > maxRecordBytes { tooLong = true }
    self.state = state
    self.column = column
    self.recordStart = recordStart
    self.lastEnd = lastEnd
    self.ends = ends
    lineFeedsScanned = feeds
    self.lineFeedsToLastEnd = lineFeedsToLastEnd
    if tooLong {
      return .badData(
        "line \(line + lineFeeds(before: recordStart)): a record runs on for more than \(maxRecordBytes >> 20) MiB; "
          + "a quote is probably not closed; export the feed as RFC 4180 CSV")
    }
    if let stray {
      return .badData("line \(line + lineFeeds(before: stray.index)), column \(column): \(stray.message)")
    }
    return nil
  }

  /// Line feeds in `pending` before `index`.
  private func lineFeeds(before index: Int) -> Int {
    pending[..<min(index, pending.count)].reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
  }

  /// Where the first byte that isn't UTF-8 is: its line, and its field in that line.
  private func notUTF8(_ block: [UInt8], line: Int) -> DeskError {
    var parser = Unicode.UTF8.ForwardParser()
    var iterator = block.makeIterator()
    var offset = 0
    decoding: while true {
      switch parser.parseScalar(from: &iterator) {
      case .valid(let scalar): offset += scalar.count
      case .emptyInput, .error: break decoding
      }
    }
    var badLine = line
    var column = 1
    var quoted = false
    for byte in block[..<min(offset, block.count)] {
      switch byte {
      case 0x0A:
        badLine += 1
        column = 1
        quoted = false
      case 0x22: quoted.toggle()
      case 0x2C where !quoted: column += 1
      default: break
      }
    }
    return .badData("line \(badLine), column \(column): the text is not UTF-8; export the feed as UTF-8")
  }
}

extension String {
  fileprivate var lineFeeds: Int {
    utf8.reduce(0) { $1 == 0x0A ? $0 + 1 : $0 }
  }
}
