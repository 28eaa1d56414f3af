import Foundation

/// The built hms2fa-admin, run as a person would.
public enum Tool {
  public struct Outcome: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// Killed by a signal (a trap, a crash) rather than exiting.
    public var crashed = false
  }

  public static var binary: String {
    if let path = ProcessInfo.processInfo.environment["HMS2FA_ADMIN_BIN"] { return path }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/hms2fa-admin").path
  }

  /// Runs the tool (or another `binary`) with `arguments`, `environment` added to a clean
  /// environment, and `stdin`.
  public static func run(
    _ arguments: [String], environment: [String: String] = [:], stdin: String? = nil, limitFileSize: Bool = false,
    binary: String = Tool.binary
  ) throws -> Outcome {
    let process = Process()
    if limitFileSize {
      // As on a full file system: every write to a file fails (RLIMIT_FSIZE 0).
      process.executableURL = URL(fileURLWithPath: "/bin/sh")
      process.arguments = ["-c", "ulimit -f 0 && exec \"$0\" \"$@\"", binary] + arguments
    } else {
      process.executableURL = URL(fileURLWithPath: binary)
      process.arguments = arguments
    }
    var env = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"]
    if let home = ProcessInfo.processInfo.environment["HOME"] { env["HOME"] = home }
    env.merge(environment) { $1 }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    let input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    // Read both pipes to the end before waiting, so a large output can't block the child.
    let group = DispatchGroup()
    nonisolated(unsafe) var errData = Data()
    group.enter()
    DispatchQueue.global().async {
      errData = err.fileHandleForReading.readDataToEndOfFile()
      group.leave()
    }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    process.waitUntilExit()
    return Outcome(
      status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
      stderr: String(decoding: errData, as: UTF8.self), crashed: process.terminationReason == .uncaughtSignal)
  }

  /// Runs the tool with its stdout (and stderr) on a pseudo-terminal of `columns` × `rows`, as
  /// an agent at a terminal would: `script` makes the terminal, `stty` gives it its size. The
  /// output comes back with the terminal's CRLF line ends made LF.
  public static func runInTerminal(
    _ arguments: [String], columns: Int = 80, rows: Int = 24, environment: [String: String] = [:]
  ) throws -> Outcome {
    func quoted(_ word: String) -> String { "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'" }
    let command =
      "stty cols \(columns) rows \(rows); exec " + ([binary] + arguments).map(quoted).joined(separator: " ")
    var outcome = try run(
      ["-qec", command, "/dev/null"], environment: ["TERM": "xterm"].merging(environment) { $1 },
      binary: "/usr/bin/script")
    outcome.stdout = outcome.stdout.replacingOccurrences(of: "\r\n", with: "\n")
    return outcome
  }
}
