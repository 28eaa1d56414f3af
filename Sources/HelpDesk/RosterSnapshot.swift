import Foundation
import Postgres

/// How the identity feed writes its rows, learned from its header and first row, so that the
/// registry's accounts can be written the same way and compared with the feed's rows byte for
/// byte.
public struct RosterStyle: Sendable, Equatable {
  /// Where each of `RosterFeed.columns` is in a row.
  public var positions: [Int]
  /// Every field in quotes (the first field of the first row was quoted); otherwise only fields
  /// that need them (a comma, a quote or a line break in the text).
  public var quoteAll: Bool
  /// How the feed spells the statuses and the high-risk flag.
  public var active: String
  public var disabled: String
  public var yes: String
  public var no: String

  /// The style of a feed whose row `fields` (as CSV.swift gave them, untrimmed) came from a
  /// record starting with `firstByte`; nil when the row spells a status or flag in a way that
  /// can't be told apart from others (with spaces around it, say). A feed without a style is
  /// compared field by field, more slowly.
  init?(positions: [Int], fields: [String], firstByte: UInt8?) {
    guard positions.count == 5, fields.count == 5 else { return nil }
    let status = fields[positions[3]]
    guard ["active", "disabled"].contains(status.lowercased()),
      let active = Self.spelled("active", like: status), let disabled = Self.spelled("disabled", like: status)
    else { return nil }
    let flag = fields[positions[4]]
    let yesWords = ["true", "t", "yes", "y", "1"]
    let noWords = ["false", "f", "no", "n", "0"]
    guard let index = yesWords.firstIndex(of: flag.lowercased()) ?? noWords.firstIndex(of: flag.lowercased()),
      let yes = Self.spelled(yesWords[index], like: flag), let no = Self.spelled(noWords[index], like: flag)
    else { return nil }
    self.positions = positions
    self.quoteAll = firstByte == 0x22
    self.active = active
    self.disabled = disabled
    self.yes = yes
    self.no = no
  }

  init(positions: [Int], quoteAll: Bool, active: String, disabled: String, yes: String, no: String) {
    (self.positions, self.quoteAll) = (positions, quoteAll)
    (self.active, self.disabled, self.yes, self.no) = (active, disabled, yes, no)
  }

  /// `word` (lowercase) in the case of `sample`: all lowercase, all capitals or capitalised.
  private static func spelled(_ word: String, like sample: String) -> String? {
    if sample == sample.lowercased() { return word }
    if sample == sample.uppercased() { return word.uppercased() }
    if sample == sample.prefix(1).uppercased() + sample.dropFirst().lowercased() {
      return word.prefix(1).uppercased() + word.dropFirst()
    }
    return nil
  }
}

/// The registry's roster as a roster import compares its feed with it: every account's id, and
/// for each account whose fields are already in the form the feed's checks would give them, the
/// CSV record the feed would hold for it unchanged, written in the feed's style.
///
/// A feed record that is byte for byte one of these records is that account, unchanged: CSV.swift
/// would read exactly the account's fields from it, the checks would pass them as they are, and
/// the import would change nothing. Such records are recognised here and never parsed; every
/// other record (new, changed, or merely written differently) is parsed and checked in full. A
/// nightly export lists nearly everyone unchanged, so nearly every record is recognised.
///
/// Read with `COPY … TO STDOUT (FORMAT binary)` from `hms2fa_api.roster_accounts`, in the
/// import's REPEATABLE READ transaction, so that what is compared is what is then applied.
final class RosterSnapshot: RosterFeed.Recogniser {
  /// Accounts read.
  let count: Int
  /// The accounts' ids and records.
  let stored: RosterRecords
  private var idBytes: [UInt8] { stored.idBytes }
  private var records: [UInt8] { stored.records }
  private let idTable: HashSlots
  private let recordTable: HashSlots
  /// The line of the feed each account is listed on; 0 while it isn't.
  private let lines: UnsafeMutableBufferPointer<Int>
  /// Accounts the feed listed as recognised records.
  private(set) var recognised = 0
  /// The account after the last one recognised: a feed tends to list accounts in the order the
  /// registry holds them, and this one is tried first.
  private var guess = 0
  /// The last record found was the one after the one before: the feed follows the registry's
  /// order here, and `guess` is worth trying first. (A feed in another order would pay for a
  /// wrong guess at every record: two more reads from memory far away.)
  private var inOrder = true

  /// Reads the roster; with a nil `style`, only the ids (the feed is then compared in full).
  ///
  /// - Throws: a `PostgresError` from the server; a `.software` `DeskError` for data that isn't
  ///   the binary COPY the statement asks for.
  convenience init(reading db: Connection, style: RosterStyle?, expectedBytes: Int = 0) throws {
    var builder = Builder(style: style)
    // The registry's roster is about as large as the feed: room for it from the start spares
    // copying the arrays as they grow.
    builder.reserve(bytes: min(expectedBytes, 1 << 30))
    var decoder = BinaryCopyDecoder(columns: 5)
    try db.copyOut(
      """
      COPY (SELECT account_id, display_name, email, status, high_risk FROM hms2fa_api.roster_accounts)
        TO STDOUT (FORMAT binary)
      """
    ) { chunk in
      try decoder.feed(chunk) { fields throws(DeskError) in builder.add(fields) }
    }
    guard decoder.finished else { throw DeskError(.software, "internal error: the roster's COPY data ended early") }
    self.init(stored: builder.out, style: style)
  }

  /// The roster `stored` holds, written in `style` (a copy kept by the import before, say);
  /// `alongside` runs while the hash tables are built (a copy's digest is checked meanwhile).
  init(stored: RosterRecords, style: RosterStyle?, alongside: (@Sendable () -> Void)? = nil) {
    self.stored = stored
    count = stored.count
    // The two tables are built side by side: each is a million hashes and writes to places far
    // apart in memory, and the other processor has nothing else to do at this moment (the
    // server waits for the next statement; the file is read).
    let ids = HashSlots.Box(count: 0)
    let known = HashSlots.Box(count: 0)
    DispatchQueue.concurrentPerform(iterations: alongside == nil ? 2 : 3) { table in
      switch table {
      case 0: ids.table = HashSlots(keys: stored.idBytes, ends: stored.idEnds)
      case 1: known.table = HashSlots(keys: stored.records, ends: stored.recordEnds)
      default: alongside?()
      }
    }
    idTable = ids.table
    recordTable = known.table
    lines = .allocate(capacity: count)
    lines.initialize(repeating: 0)
    sent = Builder(style: style)
  }

  deinit {
    lines.deallocate()
  }

  /// The account whose record is exactly `bytes`, if any: looked up when `prepare` was told
  /// the block it is in, or now.
  func account(recognising bytes: UnsafeBufferPointer<UInt8>, block number: Int, offset: Int) -> Int? {
    if number == ahead.block, let found = ahead.answer(offset: offset, count: bytes.count) {
      guard found >= 0 else { return nil }
      answeredAhead += 1
      inOrder = found == guess
      guess = found + 1
      return found
    }
    return account(recognising: bytes)
  }

  /// The account whose record is exactly `bytes`, if any.
  func account(recognising bytes: UnsafeBufferPointer<UInt8>) -> Int? {
    records.withUnsafeBufferPointer { all in
      let guess = self.guess
      if inOrder, guess < count, sameBytes(UnsafeBufferPointer(rebasing: all[recordRange(guess)]), bytes) {
        self.guess = guess + 1
        return guess
      }
      let found = recordTable.find(hash: quickHash(bytes)) { account in
        sameBytes(UnsafeBufferPointer(rebasing: all[recordRange(account)]), bytes)
      }
      if let found {
        inOrder = found == guess
        self.guess = found + 1
      }
      return found
    }
  }

  /// Records of one block of the feed, looked up together: where each starts in the block, how
  /// long it is, and its account (-1 for none).
  private struct Ahead {
    var block = 0
    var starts: [Int] = []
    var counts: [Int] = []
    var accounts: [Int] = []
    /// The record the feed asks about next: it offers every record of a block, in turn.
    var next = 0

    /// The answer for the record at `offset`, `count` bytes long; nil when it isn't the one
    /// looked up (it is then looked up on its own).
    mutating func answer(offset: Int, count: Int) -> Int? {
      guard next < starts.count, starts[next] == offset, counts[next] == count else { return nil }
      next += 1
      return accounts[next - 1]
    }
  }
  private var ahead = Ahead()
  /// Records recognised from a block looked up together.
  private(set) var answeredAhead = 0
  /// Work space of `prepare`.
  private var hashes: [UInt64] = []
  private var candidates: [Int] = []
  /// Read from `lines` while a block is looked up (so that it is at hand when the feed lists the
  /// accounts); kept only so the reads aren't dropped.
  private var linesRead = 0

  /// Looks up every record of a block of the feed at once, when the feed is out of the registry's
  /// order (in order, the next account is the one to try). One record at a time, each look-up
  /// waits for three reads from memory far away (slot, record's end, record), one after the other;
  /// here the reads of many records are under way together.
  func prepare(block number: Int, _ bytes: UnsafeBufferPointer<UInt8>, recordEnds ends: UnsafeBufferPointer<Int>) {
    ahead.block = 0
    guard !inOrder, count > 0 else { return }
    ahead.starts.removeAll(keepingCapacity: true)
    ahead.counts.removeAll(keepingCapacity: true)
    ahead.next = 0
    // The records as RosterFeed offers them: up to and without their line end.
    var start = 0
    var index = 0
    while start < bytes.count {
      let end = index < ends.count ? ends[index] + 1 : bytes.count
      index += 1
      ahead.starts.append(start)
      ahead.counts.append(recordContentEnd(bytes, start: start, end: end) - start)
      start = end
    }
    let total = ahead.starts.count
    hashes.removeAll(keepingCapacity: true)
    candidates.removeAll(keepingCapacity: true)
    ahead.accounts.removeAll(keepingCapacity: true)
    // Each loop reads, for every record, one place far away that the loop before found: the reads
    // of one loop don't wait for each other, so the processor has many under way at once.
    for record in 0..<total {
      hashes.append(
        quickHash(
          UnsafeBufferPointer(rebasing: bytes[ahead.starts[record]..<(ahead.starts[record] + ahead.counts[record])])))
    }
    var sum = 0
    for record in 0..<total { sum &+= Int(truncatingIfNeeded: recordTable.firstSlot(hash: hashes[record])) }
    for record in 0..<total { candidates.append(recordTable.candidate(hash: hashes[record]) ?? -1) }
    records.withUnsafeBufferPointer { all in
      var ranges: [Range<Int>] = []
      ranges.reserveCapacity(total)
      for record in 0..<total {
        let candidate = candidates[record]
        ranges.append(candidate >= 0 ? recordRange(candidate) : 0..<0)
      }
      for range in ranges where !range.isEmpty {
        sum &+= Int(all[range.lowerBound]) &+ Int(all[range.upperBound - 1])
      }
      for record in 0..<total {
        let candidate = candidates[record]
        let bytes = UnsafeBufferPointer(
          rebasing: bytes[ahead.starts[record]..<(ahead.starts[record] + ahead.counts[record])])
        var found = -1
        if candidate >= 0 {
          if sameBytes(UnsafeBufferPointer(rebasing: all[ranges[record]]), bytes) {
            found = candidate
          } else {
            // Another record with the same half hash in that slot: the whole chain, as usual.
            found =
              recordTable.find(hash: hashes[record]) { account in
                sameBytes(UnsafeBufferPointer(rebasing: all[recordRange(account)]), bytes)
              } ?? -1
          }
        }
        if found >= 0 { sum &+= lines[found] }
        ahead.accounts.append(found)
      }
    }
    linesRead &+= sum
    ahead.block = number
  }

  /// The account with id `id`, if any.
  func account(id: String) -> Int? {
    var id = id
    return id.withUTF8 { key in
      idBytes.withUnsafeBufferPointer { all in
        idTable.find(hash: quickHash(key)) { account in
          sameBytes(UnsafeBufferPointer(rebasing: all[idRange(account)]), key)
        }
      }
    }
  }

  func id(of account: Int) -> String {
    String(decoding: idBytes[idRange(account)], as: UTF8.self)
  }

  /// Notes that the feed lists `account` on `line`; returns the line it was listed on before,
  /// if it was (the feed then lists it twice).
  func list(_ account: Int, line: Int, recognised: Bool) -> Int? {
    if lines[account] != 0 { return lines[account] }
    lines[account] = line
    if recognised { self.recognised += 1 }
    return nil
  }

  // MARK: The roster the import leaves

  /// The feed's rows sent to the registry (new, changed, or written differently), as the
  /// registry holds them once imported; `sentAccounts[i]` is the account row `i` is (-1: new).
  private var sent: Builder
  private var sentAccounts: [Int] = []
  /// The line each row sent is on.
  private var sentLines: [Int] = []

  /// Notes a row of the feed sent to the registry, for `successor`.
  func noteSent(_ entry: RosterEntry) {
    let start = sent.out.records.count
    sent.add(entry)
    let account = account(id: entry.accountID.value) ?? -1
    sentAccounts.append(account)
    sentLines.append(entry.line)
    // A row written differently (the first row is always read in full) may set the account as
    // it is: its record is then the one the roster holds.
    let record = account < 0 ? 0..<0 : recordRange(account)
    if record.isEmpty || sent.out.records.count - start != record.count
      || !sent.out.records[start...].elementsEqual(stored.records[record])
    {
      sentChanges += 1
    }
  }

  /// Rows sent that are new, or set an account otherwise than the roster holds it (or than the
  /// feed's form can say).
  private(set) var sentChanges = 0

  /// The roster as the registry holds it once the feed is imported, in the feed's order: each
  /// account the feed listed as it listed it (recognised unchanged, or as `noteSent` was told),
  /// new accounts among them, then the accounts it doesn't list, as they were. Whatever order the
  /// registry holds accounts in, the next export (in the same order as this one, as exports are)
  /// then finds each account where it looks first: the one after the last. An account
  /// `--disable-missing` may have disabled gets no record: the next import reads its row in full.
  func successor(disableMissing: Bool) -> RosterSuccessor {
    // Each line that starts a record: the account recognised there (>= 0), or the row sent from
    // it (-2 - row); -1 for none.
    var lastLine = sentLines.max() ?? 0
    for account in 0..<count where lines[account] > lastLine { lastLine = lines[account] }
    var byLine = [Int](repeating: -1, count: lastLine + 1)
    for account in 0..<count where lines[account] != 0 { byLine[lines[account]] = account }
    for (row, line) in sentLines.enumerated() { byLine[line] = -2 - row }
    var pieces: [RosterSuccessor.Piece] = []
    var run = 0..<0
    func endRun() {
      if !run.isEmpty { pieces.append(.read(run, records: true)) }
      run = 0..<0
    }
    for entry in byLine where entry != -1 {
      if entry >= 0 {
        if !run.isEmpty && run.upperBound == entry {
          run = run.lowerBound..<entry + 1
        } else {
          endRun()
          run = entry..<entry + 1
        }
      } else {
        endRun()
        pieces.append(.sent(-2 - entry))
      }
    }
    endRun()
    for account in 0..<count where lines[account] == 0 {
      if !disableMissing && !run.isEmpty && run.upperBound == account {
        run = run.lowerBound..<account + 1
      } else {
        endRun()
        if disableMissing {
          pieces.append(.read(account..<account + 1, records: false))
        } else {
          run = account..<account + 1
        }
      }
    }
    endRun()
    return RosterSuccessor(read: stored, sent: sent.out, pieces: pieces)
  }

  /// The ids of the accounts the feed hasn't listed.
  var unlisted: [String] {
    lines.indices.filter { lines[$0] == 0 }.map(id(of:))
  }

  private func idRange(_ account: Int) -> Range<Int> { stored.idRange(account) }

  private func recordRange(_ account: Int) -> Range<Int> { stored.recordRange(account) }

  /// Collects the accounts as the COPY data arrives.
  private struct Builder {
    /// Records are written at all (the feed's style is known).
    let writesRecords: Bool
    let quoteAll: Bool
    /// The column each field of a record holds: field k is `RosterFeed.columns[order[k]]`.
    let order: [Int]
    /// The feed's spellings, as bytes: written for every account, so looked up without copying
    /// strings.
    let active: [UInt8]
    let disabled: [UInt8]
    let yes: [UInt8]
    let no: [UInt8]
    var out = RosterRecords()

    init(style: RosterStyle?) {
      writesRecords = style != nil
      quoteAll = style?.quoteAll ?? false
      order = style.map { style in (0..<5).map { position in style.positions.firstIndex(of: position) ?? 0 } } ?? []
      active = Array((style?.active ?? "").utf8)
      disabled = Array((style?.disabled ?? "").utf8)
      yes = Array((style?.yes ?? "").utf8)
      no = Array((style?.no ?? "").utf8)
    }

    mutating func reserve(bytes: Int) {
      let accounts = bytes / 40
      out.idBytes.reserveCapacity(bytes / 4)
      out.records.reserveCapacity(writesRecords ? bytes : 0)
      out.idEnds.reserveCapacity(accounts)
      out.recordEnds.reserveCapacity(accounts)
    }

    /// Adds one account from its five binary COPY fields.
    mutating func add(_ fields: UnsafeBufferPointer<UnsafeRawBufferPointer>) {
      out.idBytes.append(contentsOf: fields[0])
      out.idEnds.append(out.idBytes.count)
      appendRecord(fields)
      out.recordEnds.append(out.records.count)
    }

    /// Adds the account a row of the feed sets, as the registry holds it once imported.
    mutating func add(_ entry: RosterEntry) {
      var (id, name, email, status) = (entry.accountID.value, entry.displayName, entry.email.value, entry.status)
      var flag: UInt8 = entry.highRisk ? 1 : 0
      id.withUTF8 { id in
        name.withUTF8 { name in
          email.withUTF8 { email in
            status.withUTF8 { status in
              withUnsafeBytes(of: &flag) { flag in
                let fields = [id, name, email, status].map(UnsafeRawBufferPointer.init) + [flag]
                fields.withUnsafeBufferPointer { add($0) }
              }
            }
          }
        }
      }
    }

    /// Appends the record the feed holds for this account unchanged; nothing when the account's
    /// fields aren't in the feed's form (or the feed's style isn't known).
    private mutating func appendRecord(_ fields: UnsafeBufferPointer<UnsafeRawBufferPointer>) {
      guard writesRecords, fields[4].count == 1, RosterSnapshot.isNormalID(fields[0]),
        RosterSnapshot.isNormalName(fields[1]), RosterSnapshot.isNormalEmail(fields[2])
      else { return }
      // The registry holds only these two (a check constraint).
      let isActive: Bool
      if Self.holds(fields[3], "active") {
        isActive = true
      } else if Self.holds(fields[3], "disabled") {
        isActive = false
      } else {
        return
      }
      let flag = fields[4][0] != 0
      for position in 0..<5 {
        if position > 0 { out.records.append(0x2C) }
        let column = order[position]
        switch column {
        case 0, 1, 2: Self.write(fields[column], quoted: quoteAll, to: &out.records)
        case 3:
          if isActive {
            active.withUnsafeBytes { Self.write($0, quoted: quoteAll, to: &out.records) }
          } else {
            disabled.withUnsafeBytes { Self.write($0, quoted: quoteAll, to: &out.records) }
          }
        default:
          if flag {
            yes.withUnsafeBytes { Self.write($0, quoted: quoteAll, to: &out.records) }
          } else {
            no.withUnsafeBytes { Self.write($0, quoted: quoteAll, to: &out.records) }
          }
        }
      }
    }

    /// `field` is exactly `text` (ASCII).
    private static func holds(_ field: UnsafeRawBufferPointer, _ text: StaticString) -> Bool {
      guard field.count == text.utf8CodeUnitCount else { return false }
      let expected = UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount)
      for index in 0..<field.count where field[index] != expected[index] { return false }
      return true
    }

    /// Writes a field as RFC 4180 does: in quotes, with quotes doubled, when `quoted` or when it
    /// holds a comma, a quote or a line break.
    private static func write(_ bytes: UnsafeRawBufferPointer, quoted: Bool, to record: inout [UInt8]) {
      let quote = quoted || bytes.contains { $0 == 0x2C || $0 == 0x22 || $0 == 0x0A || $0 == 0x0D }
      guard quote else {
        record.append(contentsOf: bytes)
        return
      }
      record.append(0x22)
      for byte in bytes {
        record.append(byte)
        if byte == 0x22 { record.append(0x22) }
      }
      record.append(0x22)
    }
  }

  // MARK: The feed's form
  //
  // Each test is stricter than the check of the feed's rows it stands for: an account it passes
  // is one whose fields the checks would leave exactly as they are; one it fails is merely
  // compared in full. (RosterDeltaTests holds them to it.)

  /// `AccountID(parsing:)` keeps it as it is: 1 to 64 of a–z, 0–9, '.', '_', '-', starting with
  /// a letter or digit.
  static func isNormalID(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let first = bytes.first, bytes.count <= 64, isLowerAlphanumeric(first) else { return false }
    return bytes.allSatisfy { isLowerAlphanumeric($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }
  }

  /// The feed's name check keeps it as it is: not empty, no space at either end, no control
  /// characters, and (to be plain) no tab or line break at all.
  static func isNormalName(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let first = bytes.first, let last = bytes.last, first != 0x20, last != 0x20 else { return false }
    var previous: UInt8 = 0
    for byte in bytes {
      // C0 controls and DEL; C1 controls (U+0080–U+009F) are C2 80 … C2 9F in UTF-8.
      if byte < 0x20 || byte == 0x7F || (previous == 0xC2 && byte >= 0x80 && byte <= 0x9F) { return false }
      previous = byte
    }
    return true
  }

  /// `EmailAddress(ofRecord:)` keeps it as it is: an address under its rule, with no space at
  /// either end and no capital letters after the '@'.
  static func isNormalEmail(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard EmailAddress.flaw(in: bytes) == nil, let at = bytes.lastIndex(of: 0x40) else { return false }
    return !bytes[(at + 1)...].contains { $0 >= 0x41 && $0 <= 0x5A }
  }

  private static func isLowerAlphanumeric(_ byte: UInt8) -> Bool {
    (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
  }
}

/// Accounts' ids and records (`RosterSnapshot`), each array end to end: account `i`'s id ends
/// at `idEnds[i]` in `idBytes`, its record at `recordEnds[i]` in `records` (empty for an account
/// not in the feed's form).
struct RosterRecords: Sendable, Equatable {
  var idBytes: [UInt8] = []
  var idEnds: [Int] = []
  var records: [UInt8] = []
  var recordEnds: [Int] = []

  var count: Int { idEnds.count }

  func idRange(_ account: Int) -> Range<Int> {
    (account == 0 ? 0 : idEnds[account - 1])..<idEnds[account]
  }

  func recordRange(_ account: Int) -> Range<Int> {
    (account == 0 ? 0 : recordEnds[account - 1])..<recordEnds[account]
  }

  /// The ends are in order and within their arrays (a copy read from a file is checked so).
  var isWellFormed: Bool {
    func ordered(_ ends: [Int], within total: Int) -> Bool {
      var previous = 0
      for end in ends {
        guard end >= previous else { return false }
        previous = end
      }
      return previous == total
    }
    return idEnds.count == recordEnds.count && ordered(idEnds, within: idBytes.count)
      && ordered(recordEnds, within: records.count)
  }
}

/// What a roster copy is written from (`RosterCopy`): accounts' ids and records, each of the four
/// arrays of `RosterRecords` given in slices, in order.
protocol RosterCopySource {
  var count: Int { get }
  var idByteCount: Int { get }
  var recordByteCount: Int { get }
  func forEachSlice(of part: RosterRecords.Part, _ body: (UnsafeRawBufferPointer) -> Void)
}

extension RosterRecords: RosterCopySource {
  enum Part: CaseIterable { case idEnds, recordEnds, idBytes, records }

  var idByteCount: Int { idBytes.count }
  var recordByteCount: Int { records.count }

  func forEachSlice(of part: Part, _ body: (UnsafeRawBufferPointer) -> Void) {
    switch part {
    case .idEnds: idEnds.withUnsafeBytes(body)
    case .recordEnds: recordEnds.withUnsafeBytes(body)
    case .idBytes: idBytes.withUnsafeBytes(body)
    case .records: records.withUnsafeBytes(body)
    }
  }
}

/// The roster an import leaves, as pieces of the roster it read and of the rows it sent: written
/// to a copy slice by slice, never gathered in memory (a million accounts are 80 MB).
struct RosterSuccessor: RosterCopySource {
  enum Piece {
    /// A run of the accounts read; without their records when `records` is false.
    case read(Range<Int>, records: Bool)
    /// A row sent.
    case sent(Int)
  }

  let read: RosterRecords
  let sent: RosterRecords
  let pieces: [Piece]

  var count: Int {
    pieces.reduce(0) { total, piece in
      switch piece {
      case .read(let run, _): total + run.count
      case .sent: total + 1
      }
    }
  }

  var idByteCount: Int { total(.idBytes) }
  var recordByteCount: Int { total(.records) }

  private func total(_ part: RosterSuccessor.Bytes) -> Int {
    var total = 0
    for piece in pieces {
      switch piece {
      case .read(let run, let records):
        if part == .records && !records { continue }
        total += span(of: run, in: read, part)
      case .sent(let row): total += span(of: row..<row + 1, in: sent, part)
      }
    }
    return total
  }

  enum Bytes { case idBytes, records }

  private func span(of run: Range<Int>, in stored: RosterRecords, _ part: Bytes) -> Int {
    guard let first = run.first, let last = run.last else { return 0 }
    let range =
      part == .idBytes
      ? stored.idRange(first).lowerBound..<stored.idRange(last).upperBound
      : stored.recordRange(first).lowerBound..<stored.recordRange(last).upperBound
    return range.count
  }

  func forEachSlice(of part: RosterRecords.Part, _ body: (UnsafeRawBufferPointer) -> Void) {
    switch part {
    case .idBytes, .records:
      let bytes: Bytes = part == .idBytes ? .idBytes : .records
      for piece in pieces {
        let (stored, run, withRecords): (RosterRecords, Range<Int>, Bool) =
          switch piece {
          case .read(let run, let records): (read, run, records)
          case .sent(let row): (sent, row..<row + 1, true)
          }
        guard let first = run.first, let last = run.last, bytes == .idBytes || withRecords else { continue }
        if bytes == .idBytes {
          stored.idBytes.withUnsafeBytes {
            body(
              UnsafeRawBufferPointer(rebasing: $0[stored.idRange(first).lowerBound..<stored.idRange(last).upperBound]))
          }
        } else {
          stored.records.withUnsafeBytes {
            body(
              UnsafeRawBufferPointer(
                rebasing: $0[stored.recordRange(first).lowerBound..<stored.recordRange(last).upperBound]))
          }
        }
      }
    case .idEnds, .recordEnds:
      // Each account's end, from its length where it was read or sent, a buffer at a time.
      let ids = part == .idEnds
      var buffer: [Int] = []
      buffer.reserveCapacity(1 << 16)
      var end = 0
      func flush() {
        buffer.withUnsafeBytes(body)
        buffer.removeAll(keepingCapacity: true)
      }
      for piece in pieces {
        let (stored, run, withRecords): (RosterRecords, Range<Int>, Bool) =
          switch piece {
          case .read(let run, let records): (read, run, records)
          case .sent(let row): (sent, row..<row + 1, true)
          }
        for account in run {
          if ids {
            end += stored.idRange(account).count
          } else if withRecords {
            end += stored.recordRange(account).count
          }
          buffer.append(end)
          if buffer.count == 1 << 16 { flush() }
        }
      }
      flush()
    }
  }
}

private func sameBytes(_ one: UnsafeBufferPointer<UInt8>, _ other: UnsafeBufferPointer<UInt8>) -> Bool {
  guard one.count == other.count else { return false }
  guard let first = one.baseAddress, let second = other.baseAddress else { return true }
  return memcmp(first, second, one.count) == 0
}

/// A quick hash of a short byte string, eight bytes at a time, for the tables above (a match is
/// always confirmed by comparing the bytes, so it need only spread keys well, not resist
/// anyone: the keys are the registry's own records).
private func quickHash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
  let raw = UnsafeRawBufferPointer(bytes)
  var hash: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(raw.count)
  var offset = 0
  while offset + 8 <= raw.count {
    hash = (hash ^ raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) &* 0xFF51_AFD7_ED55_8CCD
    hash ^= hash >> 32
    offset += 8
  }
  var tail: UInt64 = 0
  while offset < raw.count {
    tail = tail << 8 | UInt64(raw[offset])
    offset += 1
  }
  hash = (hash ^ tail) &* 0xC4CE_B9FE_1A85_EC53
  hash ^= hash >> 33
  return hash
}

/// An open-addressing hash table of row numbers: the rows' bytes stay with the caller, which
/// confirms each candidate. Each slot holds the row's number and the high half of its hash, so
/// that a probe reads one place in memory before the candidate's bytes (a million rows are far
/// more than the processor's caches hold).
private struct HashSlots {
  /// The hash's high 32 bits, then row number + 1; 0 for an empty slot.
  private var slots: [UInt64]
  private let mask: Int

  /// A table that one thread builds while another builds another.
  final class Box: @unchecked Sendable {
    var table: HashSlots
    init(count: Int) { table = HashSlots(count: count) }
  }

  /// The rows whose keys are `keys`, end to end (row `i`'s ends at `ends[i]`); an empty key is
  /// left out.
  ///
  /// The rows go in in the order of the slots they hash to, not their own: a million inserts at
  /// random places in 16 MB wait for memory at every one (about 130 ms), while the slots of one
  /// 64 KB stretch at a time stay in the processor's cache.
  init(keys: [UInt8], ends: [Int]) {
    self.init(count: ends.count)
    let rows = ends.count
    // 256 stretches of the table (fewer for a small one); each row's stretch is its first slot's.
    let stretches = min(256, slots.count)
    let shift = (slots.count / stretches).trailingZeroBitCount
    var hashes = [UInt64](repeating: 0, count: rows)
    var starts = [Int](repeating: 0, count: stretches + 1)
    keys.withUnsafeBufferPointer { keys in
      ends.withUnsafeBufferPointer { ends in
        hashes.withUnsafeMutableBufferPointer { hashes in
          var start = 0
          for row in 0..<rows {
            let end = ends[row]
            if end > start {
              let hash = quickHash(UnsafeBufferPointer(rebasing: keys[start..<end]))
              hashes[row] = hash
              starts[((Int(truncatingIfNeeded: hash) & mask) >> shift) + 1] += 1
            }
            start = end
          }
        }
      }
    }
    for stretch in 0..<stretches { starts[stretch + 1] += starts[stretch] }
    let present = starts[stretches]
    // The rows and their hashes, stretch by stretch.
    var byStretch = [UInt64](repeating: 0, count: present)
    var rowsByStretch = [UInt32](repeating: 0, count: present)
    ends.withUnsafeBufferPointer { ends in
      var start = 0
      for row in 0..<rows {
        let end = ends[row]
        if end > start {
          let hash = hashes[row]
          let stretch = (Int(truncatingIfNeeded: hash) & mask) >> shift
          byStretch[starts[stretch]] = hash
          rowsByStretch[starts[stretch]] = UInt32(row)
          starts[stretch] += 1
        }
        start = end
      }
    }
    for index in 0..<present { insert(Int(rowsByStretch[index]), hash: byStretch[index]) }
  }

  /// Room for `count` rows, at most half full.
  init(count: Int) {
    var size = 16
    while size < count * 2 { size <<= 1 }
    slots = Array(repeating: 0, count: size)
    mask = size - 1
  }

  private static func tag(_ hash: UInt64) -> UInt64 { hash & 0xFFFF_FFFF_0000_0000 }

  mutating func insert(_ row: Int, hash: UInt64) {
    precondition(row < Int(UInt32.max), "HashSlots holds at most 2^32 - 1 rows")
    var slot = Int(truncatingIfNeeded: hash) & mask
    while slots[slot] != 0 { slot = (slot + 1) & mask }
    slots[slot] = Self.tag(hash) | UInt64(row + 1)
  }

  /// The slot where a look-up of `hash` starts.
  @inline(__always)
  func firstSlot(hash: UInt64) -> UInt64 { slots[Int(truncatingIfNeeded: hash) & mask] }

  /// The first row whose slot holds the same half hash, if any: the row `find` would try first.
  func candidate(hash: UInt64) -> Int? {
    let tag = Self.tag(hash)
    var slot = Int(truncatingIfNeeded: hash) & mask
    while slots[slot] != 0 {
      let entry = slots[slot]
      if Self.tag(entry) == tag { return Int(entry & 0xFFFF_FFFF) - 1 }
      slot = (slot + 1) & mask
    }
    return nil
  }

  func find(hash: UInt64, matches: (Int) -> Bool) -> Int? {
    let tag = Self.tag(hash)
    var slot = Int(truncatingIfNeeded: hash) & mask
    while slots[slot] != 0 {
      let entry = slots[slot]
      if Self.tag(entry) == tag {
        let row = Int(entry & 0xFFFF_FFFF) - 1
        if matches(row) { return row }
      }
      slot = (slot + 1) & mask
    }
    return nil
  }
}

/// Reads PostgreSQL's binary COPY format as it arrives, in pieces of any size: the header, then
/// rows of `columns` non-null fields, then the trailer.
struct BinaryCopyDecoder {
  let columns: Int
  private(set) var finished = false
  private var headerRead = false
  /// Bytes of a row (or the header) that continues in the next piece.
  private var carry: [UInt8] = []
  private var fields: [UnsafeRawBufferPointer]

  init(columns: Int) {
    self.columns = columns
    fields = Array(repeating: UnsafeRawBufferPointer(start: nil, count: 0), count: columns)
  }

  /// Decodes what `piece` completes, calling `row` with the fields of each whole row (valid
  /// during the call only).
  mutating func feed(
    _ piece: UnsafeRawBufferPointer, row: (UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(DeskError) -> Void
  ) throws(DeskError) {
    if carry.isEmpty {
      let used = try decode(piece, row: row)
      carry.append(contentsOf: piece[used...])
    } else {
      carry.append(contentsOf: piece)
      let joined = carry
      var used = 0
      var failure: DeskError?
      joined.withUnsafeBytes { bytes in
        do throws(DeskError) {
          used = try decode(bytes, row: row)
        } catch {
          failure = error
        }
      }
      if let failure { throw failure }
      carry.removeFirst(used)
    }
  }

  /// Decodes the whole rows at the start of `bytes`; returns how many bytes they took.
  private mutating func decode(
    _ bytes: UnsafeRawBufferPointer, row: (UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(DeskError) -> Void
  ) throws(DeskError) -> Int {
    func malformed(_ what: String) -> DeskError {
      DeskError(.software, "internal error: the roster's COPY data is malformed (\(what))")
    }
    func int16(at offset: Int) -> Int {
      Int(Int16(bitPattern: UInt16(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
    func int32(at offset: Int) -> Int {
      Int(Int32(bitPattern: UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))))
    }
    var offset = 0
    if !headerRead {
      // "PGCOPY\n\xFF\r\n\0", flags, then the length of a header extension.
      guard bytes.count >= 19 else { return 0 }
      guard bytes.starts(with: [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00]) else {
        throw malformed("no PGCOPY signature")
      }
      let extensionLength = int32(at: 15)
      guard bytes.count >= 19 + extensionLength else { return 0 }
      offset = 19 + extensionLength
      headerRead = true
    }
    while offset + 2 <= bytes.count, !finished {
      let count = int16(at: offset)
      if count == -1 {
        finished = true
        return offset + 2
      }
      guard count == columns else { throw malformed("a row of \(count) fields") }
      var cursor = offset + 2
      for column in 0..<columns {
        guard cursor + 4 <= bytes.count else { return offset }
        let length = int32(at: cursor)
        guard length >= 0 else { throw malformed("a null field") }
        cursor += 4
        guard cursor + length <= bytes.count else { return offset }
        fields[column] = UnsafeRawBufferPointer(rebasing: bytes[cursor..<cursor + length])
        cursor += length
      }
      try fields.withUnsafeBufferPointer { fields throws(DeskError) in try row(fields) }
      offset = cursor
    }
    return offset
  }
}
