import Foundation
import HelpDesk
import Postgres

/// A scratch directory for one test.
public func scratchDirectory(_ label: String) throws -> String {
  let path = TestCluster.scratch + "/\(label)-" + UUID().uuidString.prefix(8)
  try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  return path
}

/// Writes an executable shell script and returns its path.
public func script(_ body: String, in directory: String, name: String = "program") throws -> String {
  let path = directory + "/" + name
  try ("#!/bin/sh\n" + body + "\n").write(toFile: path, atomically: true, encoding: .utf8)
  try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
  return path
}

/// The delivery service as it runs in production: the built `hms2fa-admin delivery run`, a
/// separate process under its own login (a member of hms2fa_delivery), delivering into a maildir
/// and an SMS spool of a scratch directory (or where `environment` says).
public struct DeliveryProcess: Sendable {
  public let database: TestDatabase
  public let login: String
  public let directory: String
  public var environment: [String: String]
  public static let activationURL = "https://my.hms.harvard.edu/2fa/activate"

  public var maildir: String { directory + "/Maildir" }
  public var spool: String { directory + "/sms" }

  /// - Parameter environment: added to (and overriding) the maildir and spool transports.
  public init(_ database: TestDatabase, environment: [String: String] = [:]) throws {
    self.database = database
    login = try database.createLogin(.delivery)
    directory = try scratchDirectory("delivery")
    self.environment = ["HMS2FA_MAILER": "maildir:\(directory)/Maildir", "HMS2FA_SMS": "spool:\(directory)/sms"]
      .merging(environment) { $1 }
  }

  /// `delivery run --once`: sends what is due, then exits.
  @discardableResult
  public func runOnce(_ arguments: [String] = []) throws -> Tool.Outcome {
    try Tool.run(
      ["delivery", "run", "--once", "--database", try database.conninfo(user: login)] + arguments,
      environment: environment)
  }

  /// `delivery run` in the background, until `stop` is called on what it returns.
  public func start(_ arguments: [String] = []) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Tool.binary)
    process.arguments =
      ["delivery", "run", "--idle", "1s", "--database", try database.conninfo(user: login)] + arguments
    var env = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"]
    env.merge(environment) { $1 }
    process.environment = env
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
  }

  /// The emails delivered so far, oldest first.
  public func mails() throws -> [String] {
    try files(in: maildir + "/new")
  }

  /// The text messages and calls handed to the gateway so far, oldest first: their bodies.
  public func phoneMessages() throws -> [(to: String, channel: String, body: String)] {
    try files(in: spool).map { text in
      let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String] ?? [:]
      return (object["to"] ?? "", object["channel"] ?? "", object["body"] ?? "")
    }
  }

  /// The code in the last text message or call.
  public func lastCode() throws -> String? {
    guard let body = try phoneMessages().last?.body else { return nil }
    let digits = body.filter(\.isNumber)
    return digits.count >= 6 ? String(digits.prefix(6)) : nil
  }

  /// The token in an email's link.
  public static func token(in mail: String) -> String? {
    let prefix = activationURL + "/"
    guard let line = mail.components(separatedBy: "\r\n").first(where: { $0.hasPrefix(prefix) }) else { return nil }
    return String(line.dropFirst(prefix.count))
  }

  private func files(in folder: String) throws -> [String] {
    guard FileManager.default.fileExists(atPath: folder) else { return [] }
    return try FileManager.default.contentsOfDirectory(atPath: folder).filter { !$0.hasPrefix(".") }.sorted().map {
      try String(contentsOfFile: folder + "/" + $0, encoding: .utf8)
    }
  }
}

extension Process {
  /// Stops a background service (SIGTERM) and waits for it.
  public func stop() {
    guard isRunning else { return }
    terminate()
    waitUntilExit()
  }
}
