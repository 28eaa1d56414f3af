import Foundation
import HelpDesk
import Postgres
import TestSupport
import Testing

/// A migrated database with one person, and a tier1 and a tier2 login.
struct CLIDesk {
  let database: TestDatabase
  let tier1: String
  let tier2: String

  init() throws {
    database = try TestDatabase.create()
    let db = try database.connect()
    try Fixtures.account("jd123", name: "Jane Doe", email: "jane_doe@hms.harvard.edu", on: db)
    try Fixtures.device("jd123", isDefault: true, on: db)
    try Fixtures.rememberedBrowser("jd123", expiresInDays: 5, on: db)
    tier1 = try database.createLogin(.tier1)
    tier2 = try database.createLogin(.tier2)
  }

  func run(
    _ arguments: [String], as login: String? = nil, stdin: String? = nil, environment: [String: String] = [:]
  ) throws -> Tool.Outcome {
    try Tool.run(
      arguments + ["--database", try database.conninfo(user: login)], environment: environment, stdin: stdin)
  }
}
