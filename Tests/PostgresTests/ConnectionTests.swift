import Foundation
import Postgres
import TestSupport
import Testing

@Suite("Postgres layer against a real server")
struct ConnectionTests {
  @Test("values round-trip as bound parameters, never spliced into SQL")
  func parameters() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    let hostile = "x'); DROP TABLE pg_class; --"
    let row = try #require(
      try db.queryFirst(
        """
        SELECT \(hostile)::text AS t, \(Int64(-9_007_199_254_740_993))::bigint AS big,
               \(42)::int AS small, \(true)::boolean AS yes, \([UInt8]([0, 1, 255]))::bytea AS raw,
               NULL::text AS nothing, '{"b":1,"a":[true]}'::jsonb AS doc, 1.5::float8 AS f,
               \("héllo ✓ עברית")::text AS unicode
        """))
    #expect(try row.decode("t", as: String.self) == hostile)
    #expect(try row.decode("big", as: Int64.self) == -9_007_199_254_740_993)
    #expect(try row.decode("small", as: Int.self) == 42)
    #expect(try row.decode("yes", as: Bool.self))
    #expect(try row.decode("raw", as: [UInt8].self) == [0, 1, 255])
    #expect(try row.decode("nothing", as: String?.self) == nil)
    #expect(try row.decode("doc", as: String.self) == #"{"a": [true], "b": 1}"#)
    #expect(try row.decode("f", as: Double.self) == 1.5)
    #expect(try row.decode("unicode", as: String.self) == "héllo ✓ עברית")
  }

  @Test("timestamps decode to the same instant whatever the session's time zone")
  func timestamps() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("SET TimeZone = 'America/New_York'")
    let instant = Date(timeIntervalSince1970: 1_764_417_519.123456)
    let row = try #require(
      try db.queryFirst(
        "SELECT '2025-11-29T12:38:39.123456Z'::timestamptz AS a, \(instant)::timestamptz AS b, 'infinity'::timestamptz AS c"
      ))
    let a = try row.decode("a", as: Date.self)
    #expect(abs(a.timeIntervalSince1970 - 1_764_419_919.123456) < 0.000_01)
    #expect(abs(try row.decode("b", as: Date.self).timeIntervalSince(instant)) < 0.000_01)
    #expect(try row.decode("c", as: Date.self) == .distantFuture)
    #expect(instant.iso8601UTC(fractionalDigits: 6) == "2025-11-29T11:58:39.123456Z")
    #expect(Date(timeIntervalSince1970: -1).iso8601UTC() == "1969-12-31T23:59:59Z")
  }

  @Test("decoding errors name the column, the Swift type and the PostgreSQL type")
  func decodingErrors() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    let row = try #require(try db.queryFirst("SELECT 'abc'::text AS name, NULL::int AS n"))
    let wrongType = #expect(throws: PostgresError.self) { try row.decode("name", as: Int.self) }
    #expect(wrongType?.kind == .decoding)
    #expect(wrongType?.message.contains("\"name\"") == true)
    #expect(wrongType?.message.contains("text") == true)
    #expect(wrongType?.message.contains("Int") == true)
    let null = #expect(throws: PostgresError.self) { try row.decode("n", as: Int.self) }
    #expect(null?.message.contains("NULL") == true)
    #expect(throws: PostgresError.self) { try row.decode("missing", as: Int.self) }
  }

  @Test("server errors carry SQLSTATE, message, detail and constraint")
  func serverErrors() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    try db.execute("INSERT INTO t VALUES (1)")
    let error = #expect(throws: PostgresError.self) { try db.execute("INSERT INTO t VALUES (1)") }
    #expect(error?.kind == .server)
    #expect(error?.sqlState == SQLState.uniqueViolation)
    #expect(error?.constraint == "t_pkey")
    #expect(error?.detail?.contains("already exists") == true)
    let custom = #expect(throws: PostgresError.self) {
      try db.runScript("DO $$ BEGIN RAISE EXCEPTION 'nope' USING ERRCODE = 'H2D01', HINT = 'do this'; END $$")
    }
    #expect(custom?.sqlState == "H2D01")
    #expect(custom?.hint == "do this")
    // The connection is still usable after an error.
    #expect(try db.queryFirst("SELECT 1 AS one")?.decode("one", as: Int.self) == 1)
  }

  @Test("a transaction commits when its body returns and rolls back when it throws")
  func transactions() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (v text)")
    try db.transaction { try db.execute("INSERT INTO t VALUES ('kept')") }
    struct Abort: Error {}
    #expect(throws: Abort.self) {
      try db.transaction {
        try db.execute("INSERT INTO t VALUES ('lost')")
        throw Abort()
      }
    }
    #expect(throws: PostgresError.self) {
      try db.transaction {
        try db.execute("INSERT INTO t VALUES ('lost too')")
        try db.execute("SELECT 1/0")
      }
    }
    let rows = try db.query("SELECT v FROM t ORDER BY v").map { try $0.decode("v", as: String.self) }
    #expect(rows == ["kept"])
    let nested = #expect(throws: PostgresError.self) {
      try db.transaction { try db.transaction {} }
    }
    #expect(nested?.kind == .client)
  }

  @Test("a NUL byte in a text value is refused, not truncated")
  func nulBytes() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    let error = #expect(throws: PostgresError.self) { try db.query("SELECT \("jd123\u{0}; x")::text AS v") }
    #expect(error?.kind == .client)
  }

  @Test("COPY FROM STDIN loads rows with tabs, newlines, backslashes and NULLs intact")
  func copyIn() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (n int, v text)")
    let values: [String?] = ["plain", "tab\there", "line\nbreak", "back\\slash", nil, "\\N", "ünï"]
    let loaded = try db.copyIn(
      "COPY t (n, v) FROM STDIN", rows: values.enumerated().map { [String($0.offset), $0.element] })
    #expect(loaded == values.count)
    let back = try db.query("SELECT v FROM t ORDER BY n").map { try $0.decode("v", as: String?.self) }
    #expect(back == values)
    let large = try db.copyIn("COPY t (n, v) FROM STDIN", rows: (0..<50_000).lazy.map { [String($0), "row \($0)"] })
    #expect(large == 50_000)
  }

  @Test("COPY rows written one at a time stream in chunks and arrive intact")
  func copyInWriter() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (n int, v text, b boolean)")
    let values: [String?] = ["plain", "tab\there", "crlf\r\nend", "back\\slash", nil, "\\N", "Zoë ✓ עברית", ""]
    let loaded = try db.copyIn("COPY t (n, v, b) FROM STDIN") { writer in
      for (n, value) in values.enumerated() {
        writer.append(n)
        try writer.append(value)
        writer.append(n % 2 == 0)
        try writer.endRow()
      }
    }
    #expect(loaded == values.count)
    let rows = try db.query("SELECT v, b FROM t ORDER BY n")
    #expect(try rows.map { try $0.decode("v", as: String?.self) } == values)
    #expect(try rows.map { try $0.decode("b", as: Bool.self) } == values.indices.map { $0 % 2 == 0 })
    // Far more than one 64 KiB chunk.
    let large = try db.copyIn("COPY t (n, v) FROM STDIN") { writer in
      for n in 0..<200_000 {
        writer.append(n)
        try writer.append("row \(n)")
        try writer.endRow()
      }
    }
    #expect(large == 200_000)
    #expect(try db.queryFirst("SELECT count(*) AS c FROM t WHERE v = 'row 199999'")?.decode("c", as: Int.self) == 1)
  }

  @Test("a COPY whose writer throws is cancelled: nothing loaded, the writer's error rethrown, the connection usable")
  func copyInWriterFails() throws {
    struct Stop: Error {}
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (n int)")
    #expect(throws: Stop.self) {
      try db.copyIn("COPY t (n) FROM STDIN") { writer in
        for n in 0..<100_000 {
          if n == 90_000 { throw Stop() }
          writer.append(n)
          try writer.endRow()
        }
      }
    }
    #expect(try db.queryFirst("SELECT count(*) AS n FROM t")?.decode("n", as: Int.self) == 0)
    let nul = #expect(throws: PostgresError.self) {
      try db.copyIn("COPY t (n) FROM STDIN") { writer in try writer.append("1\u{0}2") }
    }
    #expect(nul?.kind == .client)
    let rejected = #expect(throws: PostgresError.self) {
      try db.copyIn("COPY t (n) FROM STDIN") { writer in
        try writer.append("not a number")
        try writer.endRow()
      }
    }
    #expect(rejected?.sqlState == "22P02")
    #expect(try db.queryFirst("SELECT count(*) AS n FROM t")?.decode("n", as: Int.self) == 0)
  }

  @Test("COPY TO STDOUT hands over every row; a reader that throws, or a failing query, leaves the connection usable")
  func copyOut() throws {
    struct Stop: Error {}
    let db = try TestDatabase.create(migrated: false).connect()
    var text: [UInt8] = []
    let copied = try db.copyOut("COPY (SELECT n, 'row ' || n FROM generate_series(1, 100000) n) TO STDOUT") {
      text.append(contentsOf: $0)
    }
    #expect(copied == 100_000)
    let lines = String(decoding: text, as: UTF8.self).split(separator: "\n")
    #expect(lines.count == 100_000)
    #expect(lines.last == "100000\trow 100000")
    var pieces = 0
    #expect(throws: Stop.self) {
      try db.copyOut("COPY (SELECT n FROM generate_series(1, 100000) n) TO STDOUT") { _ in
        pieces += 1
        if pieces == 10 { throw Stop() }
      }
    }
    #expect(pieces == 10)
    let failed = #expect(throws: PostgresError.self) {
      try db.copyOut("COPY (SELECT 1 / (n - 50000) FROM generate_series(1, 100000) n) TO STDOUT") { _ in }
    }
    #expect(failed?.sqlState == "22012")
    let notCopy = #expect(throws: PostgresError.self) { try db.copyOut("SELECT 1") { _ in } }
    #expect(notCopy?.kind == .client)
    #expect(try db.queryFirst("SELECT 41 + 1 AS n")?.decode("n", as: Int.self) == 42)
  }

  @Test("a statement sent without waiting gives its rows, or its error, when finished; the connection goes on")
  func sentWithoutWaiting() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.sendWithoutWaiting("SELECT pg_sleep(0.1), 42 AS answer")
    let rows = try db.finishSent()
    #expect(try rows.first?.decode("answer", as: Int.self) == 42)
    try db.sendWithoutWaiting("SELECT 1 / 0")
    let error = #expect(throws: PostgresError.self) { try db.finishSent() }
    #expect(error?.sqlState == "22012")
    #expect(try db.queryFirst("SELECT 41 + 1 AS n")?.decode("n", as: Int.self) == 42)
  }

  @Test("a COPY the server rejects loads nothing and leaves the connection usable")
  func copyRejected() throws {
    let db = try TestDatabase.create(migrated: false).connect()
    try db.execute("CREATE TABLE t (n int)")
    let error = #expect(throws: PostgresError.self) {
      try db.copyIn("COPY t (n) FROM STDIN", rows: [["1"], ["two"], ["3"]])
    }
    #expect(error?.sqlState == "22P02")
    #expect(try db.queryFirst("SELECT count(*) AS n FROM t")?.decode("n", as: Int.self) == 0)
  }

  @Test("an unreachable server fails within the connect timeout, naming socket and port")
  func unreachable() throws {
    let start = Date()
    let error = #expect(throws: PostgresError.self) {
      try Connection.connect("host=/nonexistent/socket/dir port=6543 dbname=x", connectTimeout: 2)
    }
    #expect(error?.kind == .connection)
    #expect(error?.message.contains("/nonexistent/socket/dir") == true)
    #expect(error?.message.contains("6543") == true)
    #expect(Date().timeIntervalSince(start) < 10)
  }

  @Test("a missing database and a wrong password are reported as such")
  func refusedConnections() throws {
    let missing = #expect(throws: PostgresError.self) {
      try Connection.connect(try TestCluster.conninfo(database: "no_such_database_here"))
    }
    #expect(missing?.kind == .connection)
    #expect(missing?.message.contains("no_such_database_here") == true)

    let database = try TestDatabase.create(migrated: false)
    let login = try database.createLogin(nil, password: "correct horse")
    setenv("PGPASSWORD_UNUSED", "", 1)
    let wrong = #expect(throws: PostgresError.self) {
      try Connection.connect(try database.conninfo(user: login) + " password='wrong'")
    }
    #expect(wrong?.kind == .authentication)
    #expect(wrong?.message.contains("wrong") == false)
    let right = try Connection.connect(try database.conninfo(user: login) + " password='correct horse'")
    #expect(right.user == login)
  }

  @Test("connection strings are checked before connecting")
  func conninfoParsing() throws {
    #expect(throws: PostgresError.self) { try Connection.validate(conninfo: "host=x bogus_option=1") }
    #expect(try Connection.keywordsSet(in: "postgresql://u:secret@h/db").contains("password"))
    #expect(try Connection.keywordsSet(in: "host=h dbname=db").contains("password") == false)
  }

  @Test("a terminated backend is reported as a lost connection")
  func backendTerminated() throws {
    let database = try TestDatabase.create(migrated: false)
    let victim = try database.connect()
    let admin = try database.connect()
    try admin.execute("SELECT pg_terminate_backend(\(victim.backendPID))")
    let error = #expect(throws: PostgresError.self) { try victim.query("SELECT 1") }
    #expect(error?.kind == .connectionLost)
  }
}
