import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// The built binary, end to end: exit codes, --json, messages.

@Suite("accounts import through the tool")
struct AccountsCLITests {
  @Test("accounts import: a batch login imports; a dry run prints the diff; bad rows 65 with line and column; tier1 77")
  func accountsImport() throws {
    let desk = try CLIDesk()
    let batch = try desk.database.createLogin(.batch)
    func feed(_ text: String) throws -> String {
      let path = TestCluster.scratch + "/cli-feed-" + UUID().uuidString.prefix(8) + ".csv"
      try text.write(toFile: path, atomically: true, encoding: .utf8)
      return path
    }
    let path = try feed(
      "account_id,display_name,email,status,high_risk\r\nJD123,Jane Doe,jane_doe@HMS.harvard.edu,active,true\r\n"
        + "new1,\"New, Person\",new1@hms.harvard.edu,active,false\r\n")
    let dry = try desk.run(["accounts", "import", path, "--dry-run"], as: batch)
    #expect(dry.status == 0, "\(dry.stderr)")
    #expect(dry.stdout.contains("~ jd123 (line 2): high_risk false → true"), "\(dry.stdout)")
    #expect(dry.stdout.contains("+ new1 (line 3): New, Person <new1@hms.harvard.edu> active"), "\(dry.stdout)")
    #expect(dry.stdout.contains("would add 1, change 1, disable 0; 0 unchanged; nothing was changed"))
    let out = try desk.run(["accounts", "import", path, "--json"], as: batch)
    #expect(out.status == 0, "\(out.stderr)")
    let result = try jsonObject(out.stdout)
    #expect(result["rows"] as? Int == 2)
    #expect(result["added"] as? Int == 1)
    #expect(result["changed"] as? Int == 1)
    #expect(result["disabled"] as? Int == 0)
    #expect(result["unchanged"] as? Int == 0)
    #expect(result["event_id"] as? Int != nil)
    #expect(result["tries"] as? Int == 1)

    let refused = try desk.run(["accounts", "import", path], as: desk.tier1)
    #expect(refused.status == 77)
    #expect(refused.stderr.contains("hms2fa_batch"))
    let bad = try feed(
      "account_id,display_name,email,status,high_risk\nab1,A B,ab1@hms.harvard.edu,active,no\nzz9,Z,zz9,active,no\n")
    let badOut = try desk.run(["accounts", "import", bad, "--json"], as: batch)
    #expect(badOut.status == 65)
    #expect(badOut.stderr.split(separator: "\n").count == 1)
    #expect(badOut.stderr.contains("line 3, column 3 (email)"), "\(badOut.stderr)")
    #expect((try jsonObject(badOut.stdout)["error"] as? [String: Any])?["exit_code"] as? Int == 65)
    let truncated = try feed(
      "account_id,display_name,email,status,high_risk\nnew1,\"New, Person\",new1@hms.harvard.edu,active,0\n")
    let guardOut = try desk.run(["accounts", "import", truncated, "--disable-missing"], as: batch)
    #expect(guardOut.status == 65)
    #expect(guardOut.stderr.contains("would disable 1 of 2 active accounts"), "\(guardOut.stderr)")
    #expect(try desk.run(["accounts", "import", truncated, "--disable-missing", "--force"], as: batch).status == 64)
    #expect(try desk.run(["accounts", "import", path, "--max-disable-fraction", "2"], as: batch).status == 64)
    #expect(try desk.run(["accounts", "import", path + ".missing"], as: batch).status == 64)
    let forced = try desk.run(
      ["accounts", "import", truncated, "--disable-missing", "--force", "--ticket", "CHG1", "--json"], as: batch)
    #expect(forced.status == 0, "\(forced.stderr)")
    #expect(try jsonObject(forced.stdout)["disabled"] as? Int == 1)
  }

  @Test("accounts import: a malformed record is one line naming its place, never its text; no copy of the roster")
  func accountsImportMalformed() throws {
    let desk = try CLIDesk()
    let batch = try desk.database.createLogin(.batch)
    let path = TestCluster.scratch + "/cli-bad-feed-" + UUID().uuidString.prefix(8) + ".csv"
    let text =
      "account_id,display_name,email,status,high_risk\r\njd123,Jane Doe,jd123@hms.harvard.edu,active,false\r\n"
      + "zz9,Private Person,private.person@partners.org,active,false,extra\r\n"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    let bad = try desk.run(["accounts", "import", path], as: batch)
    #expect(bad.status == 65)
    #expect(
      bad.stderr
        == "hms2fa-admin: line 3, column 6: one field too many; the header has 5 (a comma in an unquoted value?); "
        + "nothing was imported\n")
    #expect(!bad.stderr.contains("private.person") && !bad.stderr.contains("Private Person"))
    let events = try desk.database.connect().queryFirst(
      "SELECT count(*) AS n FROM hms2fa.audit_events WHERE action = 'accounts.imported'")
    #expect(try events?.decode("n", as: Int.self) == 0)
    // The copy of the roster kept on the batch host is gone, option and all.
    let copy = try desk.run(["accounts", "import", path, "--roster-copy", TestCluster.scratch], as: batch)
    #expect(copy.status == 64)
    #expect(copy.stderr.contains("--roster-copy"), "\(copy.stderr)")
  }

  @Test("accounts import --metrics-file: the last run's figures; a refused or missing feed keeps the last success")
  func accountsImportMetrics() throws {
    let desk = try CLIDesk()
    let batch = try desk.database.createLogin(.batch)
    let feed = TestCluster.scratch + "/metrics-feed-" + UUID().uuidString.prefix(8) + ".csv"
    try "account_id,display_name,email,status,high_risk\nnw1,New Person,nw1@hms.harvard.edu,active,false\n"
      .write(toFile: feed, atomically: true, encoding: .utf8)
    let path = TestCluster.scratch + "/roster-metrics-" + UUID().uuidString.prefix(8) + ".prom"
    let prefix = "hms2fa_roster_import_"
    func metrics() throws -> [String: String] {
      var values: [String: String] = [:]
      for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
      where line.hasPrefix(prefix) {
        let parts = line.dropFirst(prefix.count).split(separator: " ")
        values[String(parts[0])] = String(parts[1])
      }
      return values
    }
    let dry = try desk.run(["accounts", "import", feed, "--dry-run", "--metrics-file", path], as: batch)
    #expect(dry.status == 0, "\(dry.stderr)")
    #expect(!FileManager.default.fileExists(atPath: path))

    let ok = try desk.run(["accounts", "import", feed, "--metrics-file", path], as: batch)
    #expect(ok.status == 0, "\(ok.stderr)")
    let first = try metrics()
    #expect(first["exit_status"] == "0")
    #expect(first["rows"] == "1" && first["added_accounts"] == "1" && first["tries"] == "1")
    let success = try #require(first["last_success_timestamp_seconds"])
    #expect(success != "0")

    let bad = TestCluster.scratch + "/metrics-bad-" + UUID().uuidString.prefix(8) + ".csv"
    try "account_id,display_name,email,status,high_risk\nnw2,X,not-an-email,active,false\n"
      .write(toFile: bad, atomically: true, encoding: .utf8)
    let refused = try desk.run(["accounts", "import", bad, "--metrics-file", path], as: batch)
    #expect(refused.status == 65)
    #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
    let second = try metrics()
    #expect(second["exit_status"] == "65")
    #expect(second["last_success_timestamp_seconds"] == success)
    #expect(second["rows"] == "0")
    let missing = try desk.run(["accounts", "import", bad + ".gone", "--metrics-file", path], as: batch)
    #expect(missing.status == 64)
    #expect(try metrics()["exit_status"] == "64")

    // A file it can't write: the import is done, and the tool says so with 78.
    let unwritable = try desk.run(["accounts", "import", feed, "--metrics-file", "/nonexistent-dir/x.prom"], as: batch)
    #expect(unwritable.status == 78)
    #expect(unwritable.stderr.contains("/nonexistent-dir/x.prom"))
  }
}
