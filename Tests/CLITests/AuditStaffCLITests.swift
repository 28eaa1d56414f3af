import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("audit, staff and migrations through the tool")
struct AuditStaffCLITests {
  @Test("audit log shows who did what; audit verify exits 65 naming a tampered event")
  func audit() throws {
    let desk = try CLIDesk()
    _ = try desk.run(
      ["remembered", "revoke", "jd123", "--ticket", "INC7", "--reason", "laptop stolen"], as: desk.tier2)
    let log = try desk.run(["audit", "log", "--account", "jd123", "--json"], as: desk.tier1)
    #expect(log.status == 0)
    let events = try #require(try jsonObject(log.stdout)["events"] as? [[String: Any]])
    #expect(events.count == 1)
    #expect(events.first?["actor"] as? String == desk.tier2)
    #expect(events.first?["action"] as? String == "remembered.revoked")
    #expect(events.first?["ticket"] as? String == "INC7")
    #expect(events.first?["reason"] as? String == "laptop stolen")
    #expect((events.first?["details"] as? [String: Any])?["revoked"] as? Int == 1)
    let auditor = try desk.database.createLogin(.auditor)
    // The desk's logins were granted their tiers by hand: reported until an operator records them.
    let unrecorded = try desk.run(["audit", "verify", "--json"], as: auditor)
    #expect(unrecorded.status == 65)
    #expect(try jsonObject(unrecorded.stdout)["chain_ok"] as? Bool == true)
    #expect(unrecorded.stderr.contains("nobody recorded"))
    for (login, role) in [(desk.tier1, "tier1"), (desk.tier2, "tier2"), (auditor, "auditor")] {
      #expect(try desk.run(["staff", "grant", login, "--role", role, "--ticket", "OPS-1"]).status == 0)
    }
    let ok = try desk.run(["audit", "verify", "--json"], as: auditor)
    #expect(ok.status == 0, "\(ok.stderr)")
    #expect(try jsonObject(ok.stdout)["events"] as? Int == 4)
    let notAuditor = try desk.run(["audit", "verify"], as: desk.tier1)
    #expect(notAuditor.status == 77)
    try desk.database.connect().runScript(
      "SET session_replication_role = replica; UPDATE hms2fa.audit_events SET actor = 'someone' WHERE event_id = 1")
    let tampered = try desk.run(["audit", "verify"], as: auditor)
    #expect(tampered.status == 65)
    #expect(tampered.stderr.contains("event 1"))
  }

  @Test("staff grant/revoke/list manage tiers and are audited under the operator's login")
  func staff() throws {
    let desk = try CLIDesk()
    let admin = try desk.database.connect()
    let login = "\(desk.database.name)_newagent"
    try admin.execute(Query(verbatim: "CREATE ROLE \(login) LOGIN"))
    try admin.execute(Query(verbatim: "GRANT CONNECT ON DATABASE \(desk.database.name) TO \(login)"))
    let grant = try desk.run(["staff", "grant", login, "--role", "tier1", "--ticket", "OPS-9"])
    #expect(grant.status == 0)
    let list = try desk.run(["staff", "list", "--json"])
    let staff = try #require(try jsonObject(list.stdout)["staff"] as? [[String: Any]])
    #expect(staff.contains { $0["login"] as? String == login && $0["role"] as? String == "tier1" })
    #expect(try desk.run(["user", "show", "jd123"], as: login).status == 0)
    let byAgent = try desk.run(["staff", "grant", login, "--role", "tier2", "--ticket", "OPS-9"], as: desk.tier2)
    #expect(byAgent.status == 77)
    #expect(try desk.run(["staff", "revoke", login, "--role", "tier1", "--ticket", "OPS-10"]).status == 0)
    #expect(try desk.run(["user", "show", "jd123"], as: login).status == 77)
    #expect(try desk.run(["staff", "grant", "no_such_login", "--role", "tier1", "--ticket", "OPS-9"]).status == 65)
    let events = try AuditLog.events(AuditFilter(), on: admin).filter { $0.action.hasPrefix("staff.") }
    #expect(events.map(\.action) == ["staff.granted", "staff.revoked"])
    #expect(events.allSatisfy { $0.actor == TestCluster.superuser })
  }

  @Test("db migrate and db status through the tool")
  func migrate() throws {
    let database = try TestDatabase.create(migrated: false)
    let first = try Tool.run(["db", "migrate", "--json", "--database", try database.conninfo()])
    #expect(first.status == 0)
    #expect((try jsonObject(first.stdout)["applied"] as? [String])?.count == Migrations.all.count)
    let second = try Tool.run(["db", "migrate", "--database", try database.conninfo()])
    #expect(second.status == 0)
    #expect(second.stdout.contains("up to date"))
    let status = try Tool.run(["db", "status", "--json", "--database", try database.conninfo()])
    #expect(try jsonObject(status.stdout)["pending"] as? Int == 0)
    let fresh = try TestDatabase.create(migrated: false)
    let unmigrated = try Tool.run(["user", "show", "jd123", "--database", try fresh.conninfo()])
    #expect(unmigrated.status == 78)
    #expect(unmigrated.stderr.contains("db migrate"))
  }
}
