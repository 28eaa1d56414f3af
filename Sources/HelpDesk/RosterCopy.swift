import Crypto
import Postgres

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The copy of the registry's roster that a roster import keeps on the batch host, as it left the
/// registry: the next import compares its feed with the copy instead of reading every account
/// from the database again (a third of a nightly import's time at a million accounts).
///
/// The database decides whether a copy may be used (migration 0023): every statement that changes
/// an account's feed columns gives the roster a new random version, whoever runs it, and the
/// import that wrote a copy notes the copy's SHA-256 beside the version it describes. A copy is
/// used only when, in the import's own snapshot, the version is the copy's and the noted digest
/// is the file's; and only by the user who owns the file, when no one else may write it. Anything
/// else (a desk change since, another host's import, a file cut short or edited) and the import
/// reads the roster from the registry, as without a copy.
///
/// The files are `roster-REGISTRY-a.copy` and `roster-REGISTRY-b.copy` in the directory given (two
/// per database), mode 0600: each import writes the one it didn't compare with, so that the last
/// copy stays whole until the new one is noted, and the old file is removed while the server
/// applies the feed rather than after (freeing 80 MB takes a twentieth of a second). A copy holds
/// the accounts' ids and, for each account in the feed's form, the record the feed holds for it
/// unchanged: the registry's names and emails, as the feed itself holds them.
struct RosterCopy {
  let directory: String

  /// The roster's version in a transaction's snapshot (`hms2fa_api.roster_version()`).
  struct Version: Equatable {
    var registry: String
    var version: String
    /// The SHA-256 the import that kept a copy at this version noted, in hex; nil for none.
    var digest: String?

    init(on db: Connection) throws(PostgresError) {
      guard
        let row = try db.queryFirst(
          "SELECT registry::text, version::text, encode(copy_digest, 'hex') AS digest FROM hms2fa_api.roster_version()")
      else {
        throw PostgresError(.client, message: "hms2fa_api.roster_version() returned no row")
      }
      registry = try row.decode("registry")
      version = try row.decode("version")
      digest = try row.decode("digest")
    }
  }

  /// Why a copy in the directory wasn't used, or couldn't be kept, when it is worth saying: not
  /// for a copy that is merely out of date (the roster changed since), only for one that can't be
  /// trusted, or a directory or file that can't be written.
  struct Unusable: Error {
    var reason: String
  }

  /// The two files a registry's copies take turns in.
  func paths(of registry: String) -> [String] {
    ["a", "b"].map { directory + "/roster-" + registry + "-" + $0 + ".copy" }
  }

  /// A copy read, before its digest is checked.
  struct Loaded {
    let stored: RosterRecords
    let path: String
    /// Which of `paths(of:)` it is.
    let slot: Int
    /// The parts of the header the digest covers.
    fileprivate let header: [UInt8]
    fileprivate let digest: String

    /// Checks the copy's SHA-256 against the one the registry noted: a few hundredths of a second
    /// at a million accounts, spent while the roster's hash tables are built
    /// (`RosterSnapshot.init(stored:style:alongside:)`).
    final class Check: @unchecked Sendable {
      let loaded: Loaded
      /// Set by `run`.
      private(set) var passed = false

      init(_ loaded: Loaded) { self.loaded = loaded }

      func run() {
        var hasher = SHA256()
        loaded.header.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        for part in RosterRecords.Part.allCases {
          loaded.stored.forEachSlice(of: part) { hasher.update(bufferPointer: $0) }
        }
        passed = hex(hasher.finalize()) == loaded.digest
      }

      /// Why the copy isn't to be used, after `run`; nil when it may be.
      var problem: Unusable? {
        passed ? nil : Unusable(reason: "\(loaded.path) is not the copy the registry noted (its SHA-256 differs)")
      }
    }
  }

  /// The copy for `version`, if there is one in `style`, read but not yet checked against the
  /// registry's digest (`Loaded.Check`); nil when there is no copy of this version (or none in
  /// this style).
  ///
  /// - Throws: `Unusable` for a copy that is there but isn't to be trusted.
  func load(_ version: Version, style: RosterStyle) throws(Unusable) -> Loaded? {
    // No copy was noted at this version: the roster changed since the last one was kept.
    guard let digest = version.digest else { return nil }
    for (slot, path) in paths(of: version.registry).enumerated() {
      let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
      guard fd >= 0 else {
        if errno == ENOENT { continue }
        throw Unusable(reason: "can't open \(path): \(String(cString: strerror(errno)))")
      }
      defer { close(fd) }
      var info = stat()
      guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
        throw Unusable(reason: "\(path) is not a regular file")
      }
      var reader = Reader(fd: fd, path: path)
      let header = try reader.header()
      // Another version's copy (the one before, or another host's), or another style's.
      guard header.version == version.version, header.style == style else { continue }
      guard info.st_uid == geteuid(), info.st_mode & 0o022 == 0 else {
        throw Unusable(reason: "\(path) is not this user's alone (owner and mode 0600 expected)")
      }
      // The counts must add up to the file's size before anything that large is allocated.
      let size = Int(info.st_size) - reader.consumed
      let (accounts, idBytes, recordBytes) = (header.accounts, header.idBytes, header.recordBytes)
      guard accounts >= 0, idBytes >= 0, recordBytes >= 0, accounts <= size / 16, idBytes <= size,
        recordBytes <= size, 16 * accounts + idBytes + recordBytes == size
      else {
        throw Unusable(reason: "\(path) is not as long as its header says (cut short?)")
      }
      var stored = RosterRecords()
      stored.idEnds = try reader.integers(header.accounts)
      stored.recordEnds = try reader.integers(header.accounts)
      stored.idBytes = try reader.bytes(header.idBytes)
      stored.records = try reader.bytes(header.recordBytes)
      guard try reader.atEnd() else { throw Unusable(reason: "\(path) is longer than its header says") }
      guard stored.isWellFormed else { throw Unusable(reason: "\(path) is malformed") }
      return Loaded(stored: stored, path: path, slot: slot, header: reader.hashed, digest: digest)
    }
    return nil
  }

  /// A copy written but not yet noted: its version is written once the import that wrote it
  /// is committed (`commit`), else it is removed (`discard`).
  final class Pending {
    let path: String
    /// Its SHA-256 (of all but the version), in hex, for `hms2fa_api.note_roster_copy`.
    let digest: String
    /// Open until `commit` or `discard`: the version is written to this file, whatever has
    /// happened to its name since.
    fileprivate var fd: Int32

    fileprivate init(path: String, digest: String, fd: Int32) {
      (self.path, self.digest, self.fd) = (path, digest, fd)
    }

    deinit {
      if fd >= 0 { close(fd) }
    }
  }

  /// Writes the copy of `source` (written in `style`) for `registry`, as yet without a version,
  /// in the file `after` wasn't read from: the import writes it while the server applies the
  /// feed.
  func prepare(_ source: some RosterCopySource, style: RosterStyle, registry: String, after: Loaded?) throws(Unusable)
    -> Pending
  {
    if mkdir(directory, 0o700) != 0 && errno != EEXIST {
      throw Unusable(reason: "can't make the directory \(directory): \(String(cString: strerror(errno)))")
    }
    let path = paths(of: registry)[after.map { 1 - $0.slot } ?? 0]
    // A new file, whatever was there (the copy before the last, or something else).
    unlink(path)
    let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
      throw Unusable(reason: "can't write \(path): \(String(cString: strerror(errno)))")
    }
    var writer = Writer(fd: fd)
    writer.header(
      Header(
        version: "", style: style, accounts: source.count, idBytes: source.idByteCount,
        recordBytes: source.recordByteCount))
    for part in RosterRecords.Part.allCases { source.forEachSlice(of: part) { writer.write($0) } }
    writer.flush()
    if let failed = writer.failure {
      close(fd)
      unlink(path)
      throw Unusable(reason: "can't write \(path): \(failed)")
    }
    return Pending(path: path, digest: hex(writer.hasher.finalize()), fd: fd)
  }

  /// Writes the version `pending` is a copy at: from now on it is the copy at that version.
  func commit(_ pending: Pending, version: String) throws(Unusable) {
    let field = Self.versionField(version)
    let written = field.withUnsafeBytes { pwrite(pending.fd, $0.baseAddress, $0.count, off_t(Self.versionOffset)) }
    let failure = written == field.count ? nil : String(cString: strerror(errno))
    if close(pending.fd) != 0 || failure != nil {
      pending.fd = -1
      unlink(pending.path)
      throw Unusable(reason: "can't write \(pending.path): \(failure ?? String(cString: strerror(errno)))")
    }
    pending.fd = -1
  }

  /// Removes a copy whose import wasn't committed.
  func discard(_ pending: Pending) {
    guard pending.fd >= 0 else { return }
    close(pending.fd)
    pending.fd = -1
    unlink(pending.path)
  }

  /// `prepare` and `commit` at once; returns the file and the digest.
  func save(_ source: some RosterCopySource, style: RosterStyle, registry: String, version: String) throws(Unusable)
    -> (path: String, digest: String)
  {
    let pending = try prepare(source, style: style, registry: registry, after: nil)
    try commit(pending, version: version)
    return (pending.path, pending.digest)
  }

  // MARK: The file
  //
  // The magic line, a number that tells the byte order, the version (36 bytes, not hashed: it is
  // known only once the feed is applied), the style, the counts, then the four arrays of
  // `RosterRecords` as they are in memory.

  private static let magic = Array("HMS2FA roster copy 1\n".utf8)
  private static let byteOrder: UInt32 = 0x0102_0304
  private static let versionOffset = magic.count + 4
  private static let versionLength = 36

  private static func versionField(_ version: String) -> [UInt8] {
    Array((Array(version.utf8) + Array(repeating: 0, count: versionLength)).prefix(versionLength))
  }

  struct Header: Equatable {
    var version: String
    var style: RosterStyle
    var accounts: Int
    var idBytes: Int
    var recordBytes: Int
  }

  private struct Writer {
    let fd: Int32
    var hasher = SHA256()
    var failure: String?
    /// Slices are gathered here and written a megabyte at a time: a copy written in the feed's
    /// order may be a million slices of one record each.
    private var buffer: [UInt8] = []

    init(fd: Int32) {
      self.fd = fd
      buffer.reserveCapacity(Self.bufferSize)
    }

    private static let bufferSize = 1 << 20

    /// Writes `bytes`, hashed unless `hashed` is false.
    mutating func write(_ bytes: UnsafeRawBufferPointer, hashed: Bool = true) {
      if !hashed || buffer.count + bytes.count > Self.bufferSize { flush() }
      if !hashed {
        writeAll(bytes)
      } else if bytes.count >= Self.bufferSize {
        hasher.update(bufferPointer: bytes)
        writeAll(bytes)
      } else {
        buffer.append(contentsOf: bytes)
      }
    }

    /// Hashes and writes what is gathered; `failure` says if anything couldn't be written.
    mutating func flush() {
      let gathered = buffer
      gathered.withUnsafeBytes { bytes in
        hasher.update(bufferPointer: bytes)
        writeAll(bytes)
      }
      buffer.removeAll(keepingCapacity: true)
    }

    private mutating func writeAll(_ bytes: UnsafeRawBufferPointer) {
      guard failure == nil else { return }
      if !HelpDesk.writeAll(fd, bytes) { failure = String(cString: strerror(errno)) }
    }

    mutating func header(_ header: Header) {
      var bytes = RosterCopy.magic
      withUnsafeBytes(of: RosterCopy.byteOrder) { bytes.append(contentsOf: $0) }
      bytes.withUnsafeBytes { write($0) }
      RosterCopy.versionField(header.version).withUnsafeBytes { write($0, hashed: false) }
      bytes = []
      func text(_ value: String) {
        let utf8 = Array(value.utf8.prefix(255))
        bytes.append(UInt8(utf8.count))
        bytes.append(contentsOf: utf8)
      }
      bytes.append(contentsOf: header.style.positions.map { UInt8(truncatingIfNeeded: $0) })
      bytes.append(header.style.quoteAll ? 1 : 0)
      for word in [header.style.active, header.style.disabled, header.style.yes, header.style.no] { text(word) }
      for count in [header.accounts, header.idBytes, header.recordBytes] {
        withUnsafeBytes(of: Int64(count)) { bytes.append(contentsOf: $0) }
      }
      bytes.withUnsafeBytes { write($0) }
    }
  }

  private struct Reader {
    let fd: Int32
    let path: String
    /// The header's bytes that the digest covers, as read.
    var hashed: [UInt8] = []
    /// Bytes read so far.
    var consumed = 0
    /// Past the header: the arrays are hashed later, by `Loaded.Check`.
    var inHeader = true

    /// Exactly `buffer.count` bytes into `buffer`, hashed unless `hashed` is false.
    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer, hashed: Bool = true) throws(Unusable) {
      guard let base = buffer.baseAddress else { return }
      var offset = 0
      while offset < buffer.count {
        let got = read(fd, base + offset, buffer.count - offset)
        if got < 0 {
          if errno == EINTR { continue }
          throw Unusable(reason: "can't read \(path): \(String(cString: strerror(errno)))")
        }
        if got == 0 { throw Unusable(reason: "\(path) is cut short") }
        offset += got
      }
      consumed += buffer.count
      if hashed && inHeader { self.hashed.append(contentsOf: UnsafeRawBufferPointer(buffer)) }
    }

    mutating func array<T: FixedWidthInteger>(_ count: Int, of: T.Type, hashed: Bool = true) throws(Unusable) -> [T] {
      guard count >= 0, count <= (1 << 36) / MemoryLayout<T>.size else {
        throw Unusable(reason: "\(path) is malformed")
      }
      var failure: Unusable?
      let array = [T](unsafeUninitializedCapacity: count) { buffer, initialized in
        do throws(Unusable) {
          if count > 0 { try fill(UnsafeMutableRawBufferPointer(buffer), hashed: hashed) }
        } catch {
          failure = error
          buffer.initialize(repeating: 0)
        }
        initialized = count
      }
      if let failure { throw failure }
      return array
    }

    mutating func bytes(_ count: Int, hashed: Bool = true) throws(Unusable) -> [UInt8] {
      try array(count, of: UInt8.self, hashed: hashed)
    }

    mutating func integers(_ count: Int) throws(Unusable) -> [Int] {
      try array(count, of: Int.self)
    }

    mutating func text() throws(Unusable) -> String {
      let length = try bytes(1)[0]
      return String(decoding: try bytes(Int(length)), as: UTF8.self)
    }

    mutating func header() throws(Unusable) -> Header {
      guard try bytes(RosterCopy.magic.count) == RosterCopy.magic else {
        throw Unusable(reason: "\(path) is not a roster copy this version of the tool writes")
      }
      guard try array(1, of: UInt32.self) == [RosterCopy.byteOrder] else {
        throw Unusable(reason: "\(path) was written on a machine of another byte order")
      }
      let version = String(
        decoding: try bytes(RosterCopy.versionLength, hashed: false).prefix { $0 != 0 }, as: UTF8.self)
      let positions = try bytes(5).map(Int.init)
      let quoteAll = try bytes(1)[0] == 1
      let (active, disabled, yes, no) = (try text(), try text(), try text(), try text())
      let style = RosterStyle(
        positions: positions, quoteAll: quoteAll, active: active, disabled: disabled, yes: yes, no: no)
      let counts = try array(3, of: Int64.self).map(Int.init)
      inHeader = false
      return Header(version: version, style: style, accounts: counts[0], idBytes: counts[1], recordBytes: counts[2])
    }

    mutating func atEnd() throws(Unusable) -> Bool {
      var byte: UInt8 = 0
      let got = read(fd, &byte, 1)
      guard got >= 0 else {
        throw Unusable(reason: "can't read \(path): \(String(cString: strerror(errno)))")
      }
      return got == 0
    }
  }
}

private func hex(_ digest: SHA256.Digest) -> String {
  Secrets.hex(digest)
}
