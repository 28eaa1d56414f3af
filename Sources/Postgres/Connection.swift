internal import CLibPQ

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// One libpq connection. It owns the `PGconn *`, and every libpq call goes through it.
///
/// Not thread-safe (libpq connections aren't): use one per task.
public final class Connection {
  private let handle: OpaquePointer
  private var inTransaction = false
  private let notices = NoticeSink()

  private init(handle: OpaquePointer) {
    self.handle = handle
    // Server NOTICEs (e.g. "relation already exists, skipping") are not for the person at
    // the terminal (libpq would print them on stderr): they go to `onNotice`, if set, else
    // nowhere.
    PQsetNoticeReceiver(
      handle,
      { context, result in
        guard let context, let result else { return }
        let sink = Unmanaged<NoticeSink>.fromOpaque(context).takeUnretainedValue()
        guard let handler = sink.handler else { return }
        handler(
          Notice(
            sqlState: errorField(result, "C"), message: errorField(result, "M") ?? "",
            detail: errorField(result, "D")))
      }, Unmanaged.passUnretained(notices).toOpaque())
  }

  /// Called with each notice or warning the server sends, as it arrives: while a statement
  /// runs, before its result. Set it around the statements whose notices matter, then clear it.
  public var onNotice: ((Notice) -> Void)? {
    get { notices.handler }
    set { notices.handler = newValue }
  }

  deinit {
    PQfinish(handle)
  }

  /// Opens a connection.
  ///
  /// - Parameters:
  ///   - conninfo: a `key=value` string, a `postgresql://` URI or a bare database name; `nil`
  ///     leaves everything to libpq's defaults (PGHOST, PGSERVICE, ~/.pgpass, …).
  ///   - connectTimeout: seconds, used unless the conninfo or PGCONNECT_TIMEOUT sets one.
  ///   - applicationName: reported in `pg_stat_activity` unless the conninfo sets one.
  /// - Throws: `.configuration` for an unparsable conninfo, `.authentication` when a password
  ///   was refused, `.connection` for every other failure to connect.
  ///
  /// `overrides` are libpq keywords applied after the conninfo, so they win over it (e.g.
  /// `target_session_attrs`).
  public static func connect(
    _ conninfo: String?, connectTimeout: Int = 5, applicationName: String = "hms2fa",
    overrides: [(String, String)] = []
  ) throws(PostgresError) -> Connection {
    if let conninfo { try validate(conninfo: conninfo) }
    var keywords: [String] = []
    var values: [String] = []
    // Later entries override earlier ones, so the caller's conninfo (dbname, expanded) wins.
    if getenv("PGCONNECT_TIMEOUT") == nil {
      keywords.append("connect_timeout")
      values.append(String(max(connectTimeout, 2)))
    }
    keywords.append("fallback_application_name")
    values.append(applicationName)
    // Over TCP, a server that vanishes without a reset (a cut link, a crashed host) is noticed
    // within about a minute instead of the kernel's fifteen; the conninfo may say otherwise.
    for (keyword, value) in [
      ("keepalives_idle", "30"), ("keepalives_interval", "10"), ("keepalives_count", "3"),
      ("tcp_user_timeout", "60000"),
    ] {
      keywords.append(keyword)
      values.append(value)
    }
    if let conninfo {
      keywords.append("dbname")
      values.append(conninfo)
    }
    // Every string this layer sends or decodes is UTF-8, whatever PGCLIENTENCODING, a service
    // file or the conninfo asks for: any other session encoding would garble names on the way
    // in and out.
    keywords.append("client_encoding")
    values.append("UTF8")
    for (keyword, value) in overrides {
      keywords.append(keyword)
      values.append(value)
    }
    let handle = withCStrings(keywords) { keywordPointers in
      withCStrings(values) { valuePointers in
        PQconnectdbParams(keywordPointers, valuePointers, 1)
      }
    }
    guard let handle else {
      throw PostgresError(.connection, message: "out of memory opening a connection")
    }
    guard PQstatus(handle) == CONNECTION_OK else {
      let message = oneLine(String(cString: PQerrorMessage(handle)))
      let kind: PostgresError.Kind = PQconnectionUsedPassword(handle) != 0 ? .authentication : .connection
      PQfinish(handle)
      throw PostgresError(kind, message: message.isEmpty ? "could not connect to the server" : message)
    }
    return Connection(handle: handle)
  }

  /// Checks that `conninfo` parses, without connecting.
  ///
  /// - Throws: `.configuration` with libpq's explanation.
  public static func validate(conninfo: String) throws(PostgresError) {
    if isBareDatabaseName(conninfo) { return }
    var errorMessage: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &errorMessage) else {
      let reason = errorMessage.map { withoutPasswords(oneLine(String(cString: $0)), of: conninfo) } ?? "out of memory"
      if let errorMessage { PQfreemem(errorMessage) }
      throw PostgresError(.configuration, message: "invalid connection string: \(reason)")
    }
    PQconninfoFree(options)
  }

  /// The keywords a conninfo sets (values omitted), e.g. to refuse a password typed in argv.
  ///
  /// - Throws: `.configuration` when it doesn't parse.
  public static func keywordsSet(in conninfo: String) throws(PostgresError) -> [String] {
    if isBareDatabaseName(conninfo) { return ["dbname"] }
    var errorMessage: UnsafeMutablePointer<CChar>?
    guard let options = PQconninfoParse(conninfo, &errorMessage) else {
      let reason = errorMessage.map { withoutPasswords(oneLine(String(cString: $0)), of: conninfo) } ?? "out of memory"
      if let errorMessage { PQfreemem(errorMessage) }
      throw PostgresError(.configuration, message: "invalid connection string: \(reason)")
    }
    defer { PQconninfoFree(options) }
    var result: [String] = []
    var option = options
    while let keyword = option.pointee.keyword {
      if option.pointee.val != nil { result.append(String(cString: keyword)) }
      option += 1
    }
    return result
  }

  /// A plain database name (`hms2fa`): libpq takes it as the `dbname` when connecting, though
  /// its conninfo parser refuses it. Anything with `=` or a URI prefix is a conninfo.
  static func isBareDatabaseName(_ conninfo: String) -> Bool {
    !conninfo.isEmpty && !conninfo.contains("=") && !conninfo.hasPrefix("postgresql://")
      && !conninfo.hasPrefix("postgres://")
  }

  /// Where this connection went: `socket /tmp/x port 5432` or `host db1 port 5432`.
  public var endpoint: String {
    let host = PQhost(handle).map { String(cString: $0) } ?? "?"
    let port = PQport(handle).map { String(cString: $0) } ?? "?"
    return host.hasPrefix("/") ? "socket \(host) port \(port)" : "host \(host) port \(port)"
  }

  /// The database user this connection authenticated as.
  public var user: String { PQuser(handle).map { String(cString: $0) } ?? "" }

  /// The server process serving this connection.
  public var backendPID: Int32 { PQbackendPID(handle) }

  /// The server's version number, e.g. 150018.
  public var serverVersion: Int { Int(PQserverVersion(handle)) }

  // MARK: Statements

  /// Runs one statement and returns its rows.
  ///
  /// - Throws: `.server` with the SQLSTATE, `.connectionLost`, or `.client` for a text value
  ///   containing a NUL byte.
  @discardableResult
  public func query(_ query: Query) throws(PostgresError) -> [Row] {
    let result = try send(query)
    defer { PQclear(result) }
    return rows(of: result)
  }

  /// Runs one statement and returns how many rows it inserted, updated or deleted.
  @discardableResult
  public func execute(_ query: Query) throws(PostgresError) -> Int {
    let result = try send(query)
    defer { PQclear(result) }
    return Int(String(cString: PQcmdTuples(result))) ?? 0
  }

  /// Runs the first row of a statement, or nil when it returned none.
  public func queryFirst(_ query: Query) throws(PostgresError) -> Row? {
    try self.query(query).first
  }

  /// Waits for the statement `sendWithoutWaiting` sent and returns its last result's rows.
  ///
  /// - Throws: `.server` with the SQLSTATE, `.connectionLost`.
  @discardableResult
  public func finishSent() throws(PostgresError) -> [Row] {
    var rows: [Row] = []
    var firstError: PostgresError?
    while let result = PQgetResult(handle) {
      switch PQresultStatus(result) {
      case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY: rows = self.rows(of: result)
      default: if firstError == nil { firstError = failure(result) }
      }
      PQclear(result)
    }
    if firstError == nil, PQstatus(handle) != CONNECTION_OK { firstError = failure(nil) }
    if let firstError { throw firstError }
    return rows
  }

  /// Runs a script of one or more statements with no parameters (simple query protocol).
  ///
  /// Used for migrations; never pass anything built from input.
  public func runScript(_ sql: String) throws(PostgresError) {
    guard !sql.utf8.contains(0) else {
      throw PostgresError(.client, message: "the script contains a NUL byte")
    }
    guard let result = PQexec(handle, sql) else { throw failure(nil) }
    defer { PQclear(result) }
    switch PQresultStatus(result) {
    case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY: return
    default: throw failure(result)
    }
  }

  private func send(_ query: Query) throws(PostgresError) -> OpaquePointer {
    let result = try withParameters(of: query) { count, types, values, lengths, formats in
      PQexecParams(handle, query.sql, count, types, values, lengths, formats, 1)
    }
    guard let result else { throw failure(nil) }
    switch PQresultStatus(result) {
    case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
      return result
    default:
      let error = failure(result)
      PQclear(result)
      throw error
    }
  }

  /// Sends one statement and returns at once, while the server runs it: the caller works
  /// meanwhile, then calls `finishSent()`, before anything else is sent on this connection.
  ///
  /// - Throws: `.connectionLost` when it could not be sent, `.client` for a NUL byte.
  public func sendWithoutWaiting(_ query: Query) throws(PostgresError) {
    let sent = try withParameters(of: query) { count, types, values, lengths, formats in
      PQsendQueryParams(handle, query.sql, count, types, values, lengths, formats, 1)
    }
    guard sent == 1 else { throw failure(nil) }
  }

  /// Calls `body` with `query`'s parameters as libpq takes them: count, types, values, lengths
  /// and formats (text, but for bytea).
  private func withParameters<T>(
    of query: Query,
    _ body: (Int32, [Oid], [UnsafePointer<CChar>?], [Int32], [Int32]) -> T
  ) throws(PostgresError) -> T {
    let count = query.binds.count
    var types = [Oid](repeating: 0, count: count)
    var lengths = [Int32](repeating: 0, count: count)
    var formats = [Int32](repeating: 0, count: count)
    var buffers: [UnsafeMutablePointer<CChar>?] = []
    buffers.reserveCapacity(count)
    defer { for buffer in buffers { free(buffer) } }
    for (i, bind) in query.binds.enumerated() {
      switch bind {
      case .null:
        buffers.append(nil)
      case .text(let text):
        guard !text.utf8.contains(0) else {
          throw PostgresError(
            .client, message: "parameter $\(i + 1) contains a NUL byte, which PostgreSQL text cannot hold")
        }
        buffers.append(strdup(text))
      case .bytea(let bytes):
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
        bytes.withUnsafeBytes { raw in
          UnsafeMutableRawPointer(buffer).copyMemory(
            from: raw.baseAddress ?? UnsafeRawPointer(buffer), byteCount: bytes.count)
        }
        buffers.append(buffer)
        types[i] = Oid(PostgresType.bytea)
        lengths[i] = Int32(bytes.count)
        formats[i] = 1
      }
    }
    return body(Int32(count), types, buffers.map { UnsafePointer($0) }, lengths, formats)
  }

  private func rows(of result: OpaquePointer) -> [Row] {
    let columnCount = Int(PQnfields(result))
    let rowCount = Int(PQntuples(result))
    var names: [String] = []
    var types: [UInt32] = []
    for c in 0..<columnCount {
      names.append(String(cString: PQfname(result, Int32(c))))
      types.append(UInt32(PQftype(result, Int32(c))))
    }
    let columns = ColumnSet(names: names, types: types)
    var rows: [Row] = []
    rows.reserveCapacity(rowCount)
    for r in 0..<rowCount {
      var values: [[UInt8]?] = []
      values.reserveCapacity(columnCount)
      for c in 0..<columnCount {
        if PQgetisnull(result, Int32(r), Int32(c)) != 0 {
          values.append(nil)
        } else {
          let length = Int(PQgetlength(result, Int32(r), Int32(c)))
          let pointer = PQgetvalue(result, Int32(r), Int32(c))
          values.append(
            pointer.map { p in
              p.withMemoryRebound(to: UInt8.self, capacity: length) {
                Array(UnsafeBufferPointer(start: $0, count: length))
              }
            } ?? [])
        }
      }
      rows.append(Row(columns: columns, values: values))
    }
    return rows
  }

  /// Turns a failed result (or a missing one) into an error.
  private func failure(_ result: OpaquePointer?) -> PostgresError {
    func field(_ code: Character) -> String? { result.flatMap { errorField($0, code) } }
    let lost = PQstatus(handle) != CONNECTION_OK
    let sqlState = field("C")
    let message =
      field("M") ?? oneLine(result.map { String(cString: PQresultErrorMessage($0)) } ?? "")
    let fallback = oneLine(String(cString: PQerrorMessage(handle)))
    let text = message.isEmpty ? (fallback.isEmpty ? "the statement failed" : fallback) : message
    let connectionClass = sqlState.map { $0.hasPrefix("08") || $0.hasPrefix("57P0") } ?? true
    return PostgresError(
      lost || connectionClass ? .connectionLost : .server,
      message: text, sqlState: sqlState, detail: field("D"), hint: field("H"), constraint: field("n"),
      context: field("W"))
  }

  // MARK: Transactions

  /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
  ///
  /// - Throws: what `body` throws, or the error of BEGIN/COMMIT; nesting is a `.client` error.
  public func transaction<T>(_ body: () throws -> T) throws -> T {
    guard !inTransaction else {
      throw PostgresError(.client, message: "a transaction is already open on this connection")
    }
    try execute(Query("BEGIN"))
    inTransaction = true
    defer { inTransaction = false }
    let value: T
    do {
      value = try body()
    } catch {
      if PQstatus(handle) == CONNECTION_OK { _ = try? execute(Query("ROLLBACK")) }
      throw error
    }
    do {
      try execute(Query("COMMIT"))
    } catch {
      if PQstatus(handle) == CONNECTION_OK { _ = try? execute(Query("ROLLBACK")) }
      throw error
    }
    return value
  }

  // MARK: Notifications

  /// Waits up to `timeout` seconds for a notification on a channel this connection listens to
  /// (`LISTEN channel`, an ordinary statement; notifications arrive when their sender commits).
  ///
  /// - Returns: the channel of the first notification waiting or arriving; nil when none came
  ///   in time, or a signal interrupted the wait.
  /// - Throws: `.connectionLost` when the connection broke while waiting.
  public func waitForNotification(timeout: Double) throws(PostgresError) -> String? {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    let deadline = Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 + max(0, timeout)
    while true {
      guard PQconsumeInput(handle) == 1 else { throw failure(nil) }
      if let notification = PQnotifies(handle) {
        defer { PQfreemem(notification) }
        return String(cString: notification.pointee.relname)
      }
      clock_gettime(CLOCK_MONOTONIC, &now)
      let left = deadline - (Double(now.tv_sec) + Double(now.tv_nsec) / 1e9)
      guard left > 0 else { return nil }
      var ready = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
      if poll(&ready, 1, Int32(min(left, 3_600) * 1_000) + 1) < 0 {
        // A signal: the caller may have been asked to stop, so it gets to look.
        if errno == EINTR { return nil }
        throw PostgresError(
          .connectionLost, message: "waiting for the server failed: \(String(cString: strerror(errno)))")
      }
    }
  }

  // MARK: COPY

  /// Streams rows into `COPY … FROM STDIN` (text format) and returns how many were loaded.
  ///
  /// `copyStatement` is a literal such as `COPY t (a, b) FROM STDIN`; each row gives one
  /// value per column, nil for NULL.
  /// - Throws: `.server` when the server rejects the data (nothing is loaded then), `.client` for
  ///   a value containing a NUL byte.
  @discardableResult
  public func copyIn(_ copyStatement: String, rows: some Sequence<[String?]>) throws(PostgresError) -> Int {
    do {
      return try copyIn(copyStatement) { writer in
        for row in rows {
          for value in row { try writer.append(value) }
          try writer.endRow()
        }
      }
    } catch let error as PostgresError {
      throw error
    } catch {
      throw PostgresError(.client, message: "\(error)")
    }
  }

  /// Runs `COPY … FROM STDIN` (text format) with rows that `body` writes one at a time, sent to
  /// the server in 64 KiB chunks as they fill, so the rows are never all in memory; returns how
  /// many were loaded.
  ///
  /// When `body` throws, the COPY is cancelled (the server keeps none of its rows) and the
  /// error is rethrown as it is: a caller can stop a load at the first row it finds wrong.
  /// - Throws: what `body` throws; `.server` when the server rejects the data or the statement,
  ///   `.client` for a value containing a NUL byte, `.connectionLost`.
  @discardableResult
  public func copyIn(_ copyStatement: String, writing body: (CopyInWriter) throws -> Void) throws -> Int {
    guard let start = PQexec(handle, copyStatement) else { throw failure(nil) }
    guard PQresultStatus(start) == PGRES_COPY_IN else {
      let error = failure(start)
      PQclear(start)
      throw error
    }
    PQclear(start)
    let writer = CopyInWriter(handle: handle)
    var producerError: Error?
    do {
      try body(writer)
      try writer.finish()
    } catch {
      producerError = error
    }
    // A failed PQputCopyData means the connection is gone: the results below say so.
    _ = PQputCopyEnd(handle, producerError == nil ? nil : "cancelled by the client")
    let (loaded, serverError) = copyOutcome()
    if let lost = serverError, lost.kind == .connectionLost { throw lost }
    if let producerError { throw producerError }
    if let serverError { throw serverError }
    return loaded
  }

  /// The results that end a COPY: the rows its command tag counts, and the first error.
  private func copyOutcome() -> (rows: Int, error: PostgresError?) {
    var rows = 0
    var firstError: PostgresError?
    while let result = PQgetResult(handle) {
      if PQresultStatus(result) == PGRES_COMMAND_OK {
        rows = Int(String(cString: PQcmdTuples(result))) ?? 0
      } else if firstError == nil {
        firstError = failure(result)
      }
      PQclear(result)
    }
    return (rows, firstError)
  }

  /// Runs `COPY … TO STDOUT` and hands `body` the data as it arrives, in the pieces the server
  /// sends them (a row each, in practice; a reader must not rely on it); returns how many rows
  /// were copied.
  ///
  /// When `body` throws, the rest of the data is read and dropped, so that the connection can go
  /// on, and the error is rethrown as it is.
  /// - Throws: what `body` throws; `.server` when the server rejects the statement or fails while
  ///   copying, `.connectionLost`.
  @discardableResult
  public func copyOut(_ copyStatement: String, receiving body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
    guard let start = PQexec(handle, copyStatement) else { throw failure(nil) }
    guard PQresultStatus(start) == PGRES_COPY_OUT else {
      let status = PQresultStatus(start)
      let error =
        status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK
        ? PostgresError(.client, message: "not a COPY … TO STDOUT statement: \(oneLine(copyStatement))")
        : failure(start)
      PQclear(start)
      throw error
    }
    PQclear(start)
    var consumerError: Error?
    while true {
      var data: UnsafeMutablePointer<CChar>?
      let length = PQgetCopyData(handle, &data, 0)
      guard length > 0, let data else { break }
      defer { PQfreemem(data) }
      if consumerError == nil {
        do {
          try body(UnsafeRawBufferPointer(start: data, count: Int(length)))
        } catch {
          consumerError = error
        }
      }
    }
    var (copied, serverError) = copyOutcome()
    if serverError == nil, PQstatus(handle) != CONNECTION_OK { serverError = failure(nil) }
    if let lost = serverError, lost.kind == .connectionLost { throw lost }
    if let consumerError { throw consumerError }
    if let serverError { throw serverError }
    return copied
  }
}

/// Writes the rows of one `COPY … FROM STDIN` in PostgreSQL's text format: fields separated by
/// tabs, `\N` for NULL, backslash escapes for tab, newline, carriage return and backslash.
///
/// Only `Connection.copyIn(_:writing:)` makes one; it is valid inside that call only.
public final class CopyInWriter {
  private let handle: OpaquePointer
  private var buffer: [UInt8] = []
  private var fieldsInRow = 0
  private static let chunk = 1 << 16

  /// Rows ended so far.
  public private(set) var rows = 0

  fileprivate init(handle: OpaquePointer) {
    self.handle = handle
    buffer.reserveCapacity(Self.chunk + 4096)
  }

  /// Appends the next field of the current row; nil is NULL.
  ///
  /// - Throws: `.client` when the text contains a NUL byte, which PostgreSQL text cannot hold.
  public func append(_ value: String?) throws(PostgresError) {
    if fieldsInRow > 0 { buffer.append(0x09) }
    fieldsInRow += 1
    guard var value else {
      buffer.append(0x5C)
      buffer.append(0x4E)
      return
    }
    let clean = value.withUTF8 { bytes in appendEscaped(bytes) }
    guard clean else {
      throw PostgresError(.client, message: "a COPY value contains a NUL byte, which PostgreSQL text cannot hold")
    }
  }

  /// Appends a boolean field.
  public func append(_ value: Bool) {
    if fieldsInRow > 0 { buffer.append(0x09) }
    fieldsInRow += 1
    buffer.append(value ? 0x74 : 0x66)  // t / f
  }

  /// Appends an integer field.
  public func append(_ value: Int) {
    if fieldsInRow > 0 { buffer.append(0x09) }
    fieldsInRow += 1
    buffer.append(contentsOf: String(value).utf8)
  }

  /// Ends the current row, sending the buffered rows when a chunk is full.
  ///
  /// - Throws: `.connectionLost` when the data could not be sent.
  public func endRow() throws(PostgresError) {
    buffer.append(0x0A)
    fieldsInRow = 0
    rows += 1
    if buffer.count >= Self.chunk { try flush() }
  }

  /// Sends `bytes` as they are: data already in the COPY statement's format (a CSV file for
  /// `FORMAT csv`), in pieces of any size; rows may span calls.
  ///
  /// - Throws: `.connectionLost` when the data could not be sent.
  public func write(_ bytes: [UInt8]) throws(PostgresError) {
    try flush()
    buffer.append(contentsOf: bytes)
    try flush()
  }

  fileprivate func finish() throws(PostgresError) {
    if fieldsInRow > 0 { try endRow() }
    try flush()
  }

  private func flush() throws(PostgresError) {
    guard !buffer.isEmpty else { return }
    let sent = buffer.withUnsafeBytes { raw in
      guard let base = raw.baseAddress else { return true }
      return PQputCopyData(handle, base.assumingMemoryBound(to: CChar.self), Int32(raw.count)) == 1
    }
    buffer.removeAll(keepingCapacity: true)
    guard sent else {
      let message = oneLine(String(cString: PQerrorMessage(handle)))
      throw PostgresError(.connectionLost, message: message.isEmpty ? "could not send COPY data" : message)
    }
  }

  /// Copies `bytes` with the text format's escapes; false when they contain a NUL byte.
  private func appendEscaped(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var start = 0
    for i in 0..<bytes.count {
      let escape: UInt8
      switch bytes[i] {
      case 0x5C: escape = 0x5C  // \\
      case 0x09: escape = 0x74  // \t
      case 0x0A: escape = 0x6E  // \n
      case 0x0D: escape = 0x72  // \r
      case 0x00: return false
      default: continue
      }
      buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<i]))
      buffer.append(0x5C)
      buffer.append(escape)
      start = i + 1
    }
    buffer.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start...]))
    return true
  }
}

/// `message` (libpq's explanation of why `conninfo` doesn't parse, which quotes it) with every
/// password the conninfo may hold written as `***`: the value after each `password` keyword
/// (quoted or not, whole or cut short) and a URI's `user:password@`.
func withoutPasswords(_ message: String, of conninfo: String) -> String {
  let bytes = Array(conninfo.utf8)
  let keyword = Array("password".utf8)
  func lower(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte + 0x20 : byte }
  func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }
  var secrets: [String] = []
  var i = 0
  while i + keyword.count <= bytes.count {
    guard zip(bytes[i..<i + keyword.count], keyword).allSatisfy({ lower($0) == $1 }) else {
      i += 1
      continue
    }
    var j = i + keyword.count
    i = j
    while j < bytes.count, isBlank(bytes[j]) { j += 1 }
    guard j < bytes.count, bytes[j] == UInt8(ascii: "=") else { continue }
    j += 1
    while j < bytes.count, isBlank(bytes[j]) { j += 1 }
    var end = j
    if j < bytes.count, bytes[j] == UInt8(ascii: "'") {
      j += 1
      end = j
      while end < bytes.count, bytes[end] != UInt8(ascii: "'") { end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1 }
    } else {
      while end < bytes.count, !isBlank(bytes[end]), bytes[end] != UInt8(ascii: "&"), bytes[end] != UInt8(ascii: "'") {
        end += 1
      }
    }
    secrets.append(String(decoding: bytes[j..<min(end, bytes.count)], as: UTF8.self))
  }
  // A URI's user:password@ before the host.
  if let scheme = conninfo.firstRange(of: "://") {
    let authority = conninfo[scheme.upperBound...].prefix { $0 != "/" && $0 != "?" }
    if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
      secrets.append(String(authority[authority.index(after: colon)..<at]))
    }
  }
  var result = message
  for secret in secrets.sorted(by: { $0.count > $1.count }) where !secret.isEmpty {
    result = result.replacing(secret, with: "***")
  }
  return result
}

private func oneLine(_ text: String) -> String {
  text.split(whereSeparator: \.isNewline)
    .map { $0.drop(while: \.isWhitespace) }
    .filter { !$0.isEmpty }
    .joined(separator: "; ")
}

private func withCStrings<R>(_ strings: [String], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
  let pointers = strings.map { strdup($0) }
  defer { pointers.forEach { free($0) } }
  return body(pointers.map { UnsafePointer($0) } + [nil])
}

/// A notice or warning from the server (not an error: the statement goes on).
public struct Notice: Sendable {
  public var sqlState: String?
  public var message: String
  public var detail: String?
}

/// Where a connection's notice receiver finds its handler; lives as long as the connection.
private final class NoticeSink {
  var handler: ((Notice) -> Void)?
}

/// One field of an error or notice result (`PG_DIAG_*`, by its letter: "C" the SQLSTATE, "M"
/// the message, "D" the detail, …), the one place that reads them.
private func errorField(_ result: OpaquePointer, _ code: Character) -> String? {
  guard let ascii = code.asciiValue, let pointer = PQresultErrorField(result, Int32(ascii)) else { return nil }
  return String(cString: pointer)
}
