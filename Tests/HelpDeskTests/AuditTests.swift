import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

@Suite("the hash-chained audit log")
struct AuditTests {
  private func seeded(_ events: Int) throws -> TestDatabase {
    try Fixtures.auditLog(events: events)
  }

  @Test("8 concurrent writers × 200 events leave a gapless chain that verifies")
  func concurrentWriters() throws {
    let database = try TestDatabase.create()
    let auditor = try database.connect(as: try database.createLogin(.auditor))
    let failures = ErrorBox()
    DispatchQueue.concurrentPerform(iterations: 8) { writer in
      do {
        let db = try database.connect()
        for i in 0..<200 {
          try db.transaction {
            try db.execute("SELECT hms2fa.audit('test.event', NULL, \("W\(writer)-\(i)"), NULL, '{}')")
          }
        }
      } catch {
        failures.add(error)
      }
    }
    #expect(failures.isEmpty, "\(failures.description)")
    let result = try AuditLog.verify(on: auditor)
    #expect(result.ok)
    #expect(result.events == 1_600)
    let ids = try database.connect().queryFirst(
      "SELECT min(event_id) AS lo, max(event_id) AS hi, count(DISTINCT event_id) AS n FROM hms2fa.audit_events")
    #expect(try ids?.decode("lo", as: Int.self) == 1)
    #expect(try ids?.decode("hi", as: Int.self) == 1_600)
    #expect(try ids?.decode("n", as: Int.self) == 1_600)
  }

  @Test("a rolled-back change leaves no event and no gap")
  func rollback() throws {
    let database = try seeded(2)
    let db = try database.connect()
    struct Abort: Error {}
    #expect(throws: Abort.self) {
      try db.transaction {
        try db.execute("SELECT hms2fa.audit('test.event', NULL, 'T', NULL, '{}')")
        throw Abort()
      }
    }
    try db.execute("SELECT hms2fa.audit('test.event', NULL, 'T3', NULL, '{}')")
    let result = try AuditLog.verify(on: db)
    #expect(result.ok)
    #expect(result.events == 3)
  }

  @Test("a superuser's UPDATE of one event is caught, naming it")
  func alteredEvent() throws {
    let database = try seeded(5)
    let admin = try database.connect()
    try admin.execute("SET session_replication_role = replica")
    try admin.execute("UPDATE hms2fa.audit_events SET ticket = 'FORGED' WHERE event_id = 3")
    let result = try AuditLog.verify(on: try database.connect(as: try database.createLogin(.auditor)))
    #expect(!result.ok)
    #expect(result.firstBadEvent == 3)
    #expect(result.events == 2)
  }

  @Test("a deleted event is caught, in the middle or at the end")
  func deletedEvents() throws {
    let middle = try seeded(5)
    try middle.connect().runScript(
      "SET session_replication_role = replica; DELETE FROM hms2fa.audit_events WHERE event_id = 2")
    let m = try AuditLog.verify(on: try middle.connect())
    #expect(!m.ok)
    #expect(m.firstBadEvent == 2)

    let last = try seeded(5)
    try last.connect().runScript(
      "SET session_replication_role = replica; DELETE FROM hms2fa.audit_events WHERE event_id = 5")
    let l = try AuditLog.verify(on: try last.connect())
    #expect(!l.ok)
    #expect(l.firstBadEvent == 5)
  }

  @Test("an event inserted out of band, bypassing the chain, is caught")
  func insertedEvent() throws {
    let database = try seeded(3)
    try database.connect().runScript(
      """
      SET session_replication_role = replica;
      INSERT INTO hms2fa.audit_events (event_id, at, actor, action, details, prev_hash, hash)
      SELECT 4, now(), 'agent_bob', 'enrollment.reset', '{}', hash, sha256('forged')
        FROM hms2fa.audit_events WHERE event_id = 3;
      """)
    let result = try AuditLog.verify(on: try database.connect())
    #expect(!result.ok)
    #expect(result.firstBadEvent == 4)
  }

  @Test("the log filters by account, actor and time, oldest first, most recent N")
  func filters() throws {
    let database = try seeded(6)
    let admin = try database.connect()
    try admin.execute("SELECT hms2fa.audit('test.other', 'mk456', 'T7', 'why', '{}')")
    let reader = try database.connect(as: try database.createLogin(.tier1))
    let mk = try AuditLog.events(AuditFilter(account: try AccountID(parsing: "mk456")), on: reader)
    #expect(mk.map(\.eventId) == [7])
    #expect(mk.first?.reason == "why")
    let lastThree = try AuditLog.events(AuditFilter(limit: 3), on: reader)
    #expect(lastThree.map(\.eventId) == [5, 6, 7])
    #expect(try AuditLog.events(AuditFilter(actor: "someone_else"), on: reader).isEmpty)
    #expect(try AuditLog.events(AuditFilter(actor: TestCluster.superuser), on: reader).count == 7)
    #expect(try AuditLog.events(AuditFilter(since: Date().addingTimeInterval(3_600)), on: reader).isEmpty)
    #expect(throws: DeskError.self) { try AuditLog.events(AuditFilter(limit: 0), on: reader) }
  }
}

final class ErrorBox: @unchecked Sendable, CustomStringConvertible {
  private let lock = NSLock()
  private var errors: [Error] = []
  func add(_ error: Error) {
    lock.lock()
    errors.append(error)
    lock.unlock()
  }
  var isEmpty: Bool {
    lock.lock()
    defer { lock.unlock() }
    return errors.isEmpty
  }
  var description: String {
    lock.lock()
    defer { lock.unlock() }
    return errors.map { "\($0)" }.joined(separator: "; ")
  }
}
