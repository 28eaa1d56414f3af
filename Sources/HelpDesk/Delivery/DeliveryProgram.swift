#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// Why a message could not be handed over. Its description never contains the message.
public struct DeliveryFailure: Error, CustomStringConvertible, Sendable {
  public var reason: String
  /// Worth trying again later (a full disk, a gateway that timed out or said EX_TEMPFAIL), as
  /// opposed to a refusal that the same message would meet again.
  public var temporary: Bool
  public init(_ reason: String, temporary: Bool = true) {
    self.reason = reason
    self.temporary = temporary
  }
  public var description: String { reason }
}

/// Runs a delivery program (sendmail, an SMS gateway client) with the message on its stdin, and
/// kills it, with everything it started, when it outlives the timeout.
enum DeliveryProgram {
  /// - Parameter secrets: blanked out of what the program printed before any of it is quoted
  ///   (a program may echo its input), and before it is cut short, so no part of one shows.
  /// - Throws: `DeliveryFailure` when it can't start, exits non-zero, or times out.
  static func run(
    _ argv: [String], input: [UInt8], timeout: Double, secrets: [String] = []
  ) throws(DeliveryFailure) {
    guard let program = argv.first else { throw DeliveryFailure("no delivery program configured") }
    // A program that exits without reading its input must not kill us with SIGPIPE.
    signal(SIGPIPE, SIG_IGN)

    var stdinPipe: [Int32] = [0, 0]
    var stderrPipe: [Int32] = [0, 0]
    guard pipe(&stdinPipe) == 0 else { throw DeliveryFailure("cannot create a pipe: \(errnoText())") }
    guard pipe(&stderrPipe) == 0 else {
      close(stdinPipe[0])
      close(stdinPipe[1])
      throw DeliveryFailure("cannot create a pipe: \(errnoText())")
    }

    #if canImport(Glibc)
      var actions = posix_spawn_file_actions_t()
      var attributes = posix_spawnattr_t()
    #else
      var actions: posix_spawn_file_actions_t?
      var attributes: posix_spawnattr_t?
    #endif
    posix_spawn_file_actions_init(&actions)
    posix_spawnattr_init(&attributes)
    defer {
      posix_spawn_file_actions_destroy(&actions)
      posix_spawnattr_destroy(&attributes)
    }
    posix_spawn_file_actions_adddup2(&actions, stdinPipe[0], 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, stderrPipe[1], 2)
    for fd in [stdinPipe[0], stdinPipe[1], stderrPipe[0], stderrPipe[1]] {
      posix_spawn_file_actions_addclose(&actions, fd)
    }
    // Its own process group, so a timeout kills the whole pipeline it may have started.
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF))
    posix_spawnattr_setpgroup(&attributes, 0)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    sigaddset(&defaults, SIGPIPE)
    sigaddset(&defaults, SIGXFSZ)
    posix_spawnattr_setsigdefault(&attributes, &defaults)

    var pid: pid_t = 0
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    let cEnvironment = childEnvironment() + [nil]
    var spawned = posix_spawn(&pid, program, &actions, &attributes, cArgs, cEnvironment)
    // ETXTBSY: the program file is still open for writing somewhere (being installed, or a
    // descriptor inherited across another thread's fork); it clears within moments.
    for _ in 0..<50 where spawned == ETXTBSY {
      usleep(20_000)
      spawned = posix_spawn(&pid, program, &actions, &attributes, cArgs, cEnvironment)
    }
    close(stdinPipe[0])
    close(stderrPipe[1])
    guard spawned == 0 else {
      close(stdinPipe[1])
      close(stderrPipe[0])
      throw DeliveryFailure("cannot run \(program): \(String(cString: strerror(spawned)))", temporary: false)
    }

    let deadline = monotonicSeconds() + timeout
    var errorOutput: [UInt8] = []
    _ = fcntl(stdinPipe[1], F_SETFL, fcntl(stdinPipe[1], F_GETFL) | O_NONBLOCK)
    _ = fcntl(stderrPipe[0], F_SETFL, fcntl(stderrPipe[0], F_GETFL) | O_NONBLOCK)
    var written = 0
    var stdinOpen = true
    var status: Int32 = 0
    var exited = false
    while true {
      if stdinOpen {
        if written < input.count {
          let n = input.withUnsafeBytes { raw in
            write(stdinPipe[1], raw.baseAddress.map { $0 + written }, input.count - written)
          }
          if n > 0 {
            written += n
          } else if n < 0 && errno != EAGAIN && errno != EINTR {
            close(stdinPipe[1])
            stdinOpen = false  // EPIPE: it stopped reading; its exit status tells the rest
          }
        }
        if stdinOpen && written == input.count {
          close(stdinPipe[1])
          stdinOpen = false
        }
      }
      var buffer = [UInt8](repeating: 0, count: 1024)
      let n = read(stderrPipe[0], &buffer, buffer.count)
      if n > 0 && errorOutput.count < 4096 { errorOutput += buffer[0..<n] }
      let result = waitpid(pid, &status, WNOHANG)
      if result == pid {
        exited = true
        // What it wrote just before exiting is still in the pipe.
        while errorOutput.count < 4096 {
          let rest = read(stderrPipe[0], &buffer, buffer.count)
          guard rest > 0 else { break }
          errorOutput += buffer[0..<rest]
        }
        break
      }
      if monotonicSeconds() >= deadline { break }
      usleep(5_000)
    }
    if stdinOpen { close(stdinPipe[1]) }
    close(stderrPipe[0])
    guard exited else {
      kill(-pid, SIGKILL)
      kill(pid, SIGKILL)
      _ = waitpid(pid, &status, 0)
      throw DeliveryFailure("\(program) did not finish within \(Int(timeout)) s and was stopped")
    }
    let exitCode = (status >> 8) & 0xFF
    let signalled = status & 0x7F
    if signalled != 0 {
      throw DeliveryFailure("\(program) was killed by signal \(signalled)")
    }
    if exitCode != 0 {
      var printed = String(decoding: errorOutput, as: UTF8.self)
      for secret in secrets where !secret.isEmpty { printed = printed.replacing(secret, with: "[redacted]") }
      let firstLine = printed.split(whereSeparator: \.isNewline).first.map { ": " + String($0.prefix(200)) } ?? ""
      // sysexits' EX_TEMPFAIL (75) asks to try again; any other status is a refusal.
      throw DeliveryFailure("\(program) exited with status \(exitCode)\(firstLine)", temporary: exitCode == 75)
    }
  }

  /// The environment variables libpq reads (its documentation's list) and the tool's own
  /// connection string: what opens the registry, which a mail or SMS program has no business
  /// with. Other PG… names (a PGP wrapper's PGPPATH) pass.
  static let connectionVariables: Set<String> = [
    "PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGCHANNELBINDING",
    "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGREQUIRESSL", "PGSSLCOMPRESSION",
    "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI", "PGSSLPASSWORD",
    "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME",
    "PGGSSLIB", "PGGSSDELEGATION", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTARGETSESSIONATTRS",
    "PGLOADBALANCEHOSTS", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR", "PGREQUIREAUTH",
    "PGSSLCERTMODE", "PGSSLNEGOTIATION", "HMS2FA_DATABASE_URL",
  ]

  /// This process's environment without `connectionVariables`, each entry passed as it is (its
  /// bytes untouched, UTF-8 or not).
  static func childEnvironment() -> [UnsafeMutablePointer<CChar>?] {
    var result: [UnsafeMutablePointer<CChar>?] = []
    var entry = environ
    while let pointer = entry.pointee {
      let length = strlen(pointer)
      let bytes = UnsafeRawBufferPointer(start: pointer, count: length)
      let nameLength = bytes.firstIndex(of: UInt8(ascii: "=")) ?? length
      let name = String(decoding: bytes[..<nameLength], as: UTF8.self)
      if !connectionVariables.contains(name) { result.append(pointer) }
      entry += 1
    }
    return result
  }

  static func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
  }
}

func errnoText() -> String { String(cString: strerror(errno)) }

/// Creates `path` (mode 0700) unless it exists as a directory.
func ensureDirectory(_ path: String) throws(DeliveryFailure) {
  var info = stat()
  if stat(path, &info) == 0 {
    guard (info.st_mode & S_IFMT) == S_IFDIR else { throw DeliveryFailure("\(path) is not a directory") }
    return
  }
  guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
    throw DeliveryFailure("cannot create \(path): \(errnoText())")
  }
}

/// Writes `bytes` to `finalPath` atomically: into `stagedPath` first (same file system), flushed
/// to disk, then renamed into place, so a reader never sees half a message.
func writeAtomically(_ bytes: [UInt8], stagedPath: String, finalPath: String) throws(DeliveryFailure) {
  let fd = open(stagedPath, O_WRONLY | O_CREAT | O_EXCL, 0o600)
  guard fd >= 0 else { throw DeliveryFailure("cannot create \(stagedPath): \(errnoText())") }
  var offset = 0
  while offset < bytes.count {
    let n = bytes.withUnsafeBytes { raw in write(fd, raw.baseAddress.map { $0 + offset }, bytes.count - offset) }
    if n < 0 {
      if errno == EINTR { continue }
      let reason = errnoText()
      close(fd)
      unlink(stagedPath)
      throw DeliveryFailure("cannot write \(stagedPath): \(reason)")
    }
    offset += n
  }
  let synced = fsync(fd) == 0
  let syncError = errnoText()
  let closed = close(fd) == 0
  guard synced, closed else {
    unlink(stagedPath)
    throw DeliveryFailure("cannot write \(stagedPath): \(syncError)")
  }
  guard rename(stagedPath, finalPath) == 0 else {
    let reason = errnoText()
    unlink(stagedPath)
    throw DeliveryFailure("cannot move the message to \(finalPath): \(reason)")
  }
}

/// A file name no other writer will choose: time, process, random part, host (the maildir
/// convention).
func uniqueFileName() -> String {
  var host = [CChar](repeating: 0, count: 256)
  gethostname(&host, host.count - 1)
  let hostName = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    .map { $0 == "/" || $0 == ":" ? "_" : $0 }
  let random = Secrets.hex(Secrets.randomBytes(8))
  var now = timespec()
  clock_gettime(CLOCK_REALTIME, &now)
  let micros = String(now.tv_nsec / 1_000)
  let paddedMicros = String(repeating: "0", count: max(0, 6 - micros.count)) + micros
  // Names sort in the order they were made (within one host), which readers of a spool rely on.
  return "\(now.tv_sec).M\(paddedMicros)P\(getpid())R\(random).\(hostName.isEmpty ? "localhost" : String(hostName))"
}
