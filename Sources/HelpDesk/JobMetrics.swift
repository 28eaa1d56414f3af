#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// A batch job's figures in Prometheus text format, for node_exporter's textfile collector: the
/// nightly expiry's (`ExpiryMetrics`) and the roster import's (`RosterImportMetrics`).
public enum JobMetrics {
  /// The file's text after a run that ended with `exitStatus`: when it ended, when the last
  /// successful run ended (carried over from `previous`, the file as it was, when this run
  /// failed), the exit status (`exitStatuses` says what they mean), then the job's `figures`
  /// (name, help, value), each a gauge named `prefix` + name.
  static func text(
    prefix: String, exitStatus: Int32, finishedAt: Date, previous: String?, exitStatuses: String,
    figures: [(String, String, Double)]
  ) -> String {
    let now = finishedAt.timeIntervalSince1970
    let lastSuccess =
      exitStatus == 0 ? now : previousValue("last_success_timestamp_seconds", prefix: prefix, in: previous) ?? 0
    let metrics: [(String, String, Double)] =
      [
        ("last_run_timestamp_seconds", "When the last run ended (Unix time).", now),
        ("last_success_timestamp_seconds", "When the last run that exited 0 ended (Unix time; 0: never).", lastSuccess),
        ("exit_status", "The last run's exit status (\(exitStatuses)).", Double(exitStatus)),
      ] + figures
    var text = ""
    for (name, help, value) in metrics {
      text += "# HELP \(prefix)\(name) \(help)\n# TYPE \(prefix)\(name) gauge\n\(prefix)\(name) \(number(value))\n"
    }
    return text
  }

  static func number(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }

  static func previousValue(_ name: String, prefix: String, in text: String?) -> Double? {
    guard let text else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(prefix + name + " ") {
      return Double(String(line.dropFirst(prefix.count + name.count + 1)).trimmingASCIISpaces())
    }
    return nil
  }

  /// Writes the text `make` gives (from the file as it was, if any) to `path` atomically: a
  /// temporary file in the same folder, flushed to disk, then renamed over the old one, so the
  /// collector never reads half a file.
  ///
  /// - Throws: a configuration `DeskError` naming the file when it can't be written.
  static func write(to path: String, _ make: (String?) -> String) throws(DeskError) {
    let previous = (try? Data(contentsOf: URL(fileURLWithPath: path))).map { String(decoding: $0, as: UTF8.self) }
    let text = make(previous)
    func failure(_ doing: String) -> DeskError {
      let reason = String(cString: strerror(errno))
      return DeskError(.configuration, "cannot \(doing) the metrics file \(quoted(path, limit: 200)): \(reason)")
    }
    // A new file of an unguessable name (mkstemp: O_EXCL, never through a symlink planted in a
    // shared folder), readable by the collector once complete.
    var template = Array("\(path).XXXXXX".utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
    guard fd >= 0 else { throw failure("write") }
    let temporary = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    let ok = fchmod(fd, 0o644) == 0 && Array(text.utf8).withUnsafeBytes { writeAll(fd, $0) } && fsync(fd) == 0
    let error = ok ? nil : failure("write")
    close(fd)
    if let error {
      unlink(temporary)
      throw error
    }
    guard rename(temporary, path) == 0 else {
      let error = failure("replace")
      unlink(temporary)
      throw error
    }
  }
}

/// Writes every byte to `fd`, retrying short writes and interruptions; false (with `errno` set)
/// when a write fails.
func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
  guard let base = bytes.baseAddress else { return true }
  var offset = 0
  while offset < bytes.count {
    let written = write(fd, base + offset, bytes.count - offset)
    if written < 0 {
      if errno == EINTR { continue }
      return false
    }
    offset += written
  }
  return true
}

/// The roster import's figures, for node_exporter's textfile collector: a night without an
/// import leaves leavers enabled, so alert on the last success's age.
public enum RosterImportMetrics {
  static let prefix = "hms2fa_roster_import_"

  /// The file's text after an import that ended with `exitStatus` (its `result` when it ran to
  /// the end), `durationSeconds` after it started.
  public static func text(
    for result: RosterImportResult?, exitStatus: Int32, durationSeconds: Double, finishedAt: Date, previous: String?
  ) -> String {
    JobMetrics.text(
      prefix: prefix, exitStatus: exitStatus, finishedAt: finishedAt, previous: previous,
      exitStatuses: "0 ok, 64 no feed or bad options, 65 feed refused, 69 database lost, 75 another import or busy",
      figures: [
        ("rows", "Rows in the last run's feed (0 when it failed).", Double(result?.rows ?? 0)),
        ("added_accounts", "Accounts the last run added.", Double(result?.added ?? 0)),
        ("changed_accounts", "Accounts the last run changed.", Double(result?.changed ?? 0)),
        (
          "disabled_accounts", "Accounts the last run disabled because the feed left them out.",
          Double(result?.disabled ?? 0)
        ),
        ("unchanged_accounts", "Accounts the last run's feed listed as they were.", Double(result?.unchanged ?? 0)),
        ("tries", "Tries the last run took (others changed accounts under it).", Double(result?.tries ?? 0)),
        ("duration_seconds", "How long the last run took.", (durationSeconds * 1000).rounded() / 1000),
      ])
  }

  /// Writes the metrics for an import to `path` atomically (`JobMetrics.write`).
  ///
  /// - Throws: a configuration `DeskError` naming the file when it can't be written.
  public static func write(
    _ result: RosterImportResult?, exitStatus: Int32, durationSeconds: Double, to path: String,
    finishedAt: Date = Date()
  ) throws(DeskError) {
    try JobMetrics.write(to: path) { previous in
      text(
        for: result, exitStatus: exitStatus, durationSeconds: durationSeconds, finishedAt: finishedAt,
        previous: previous)
    }
  }
}
