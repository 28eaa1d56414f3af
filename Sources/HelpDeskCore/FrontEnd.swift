import Postgres

#if canImport(Glibc)
  @preconcurrency import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The `hms2fa-admin` process. It answers `user show` in its plain forms itself and hands every
/// other command line, unchanged, to `hms2fa-admin-full` in the same directory (execv: the same
/// process, arguments, environment and open files).
///
/// `user show` is the desk's most frequent command, run while a person waits on the phone. This
/// module and the front end are built without Foundation, the argument parser, the crypto and CSV
/// packages and libphonenumber: at every start the dynamic loader relocates, and the kernel
/// copies, the pages of whatever a binary links, used or not, which made a look-up cost about a
/// fifth more than psql's (README, Benchmarks).
public enum FrontEnd {
  /// The name of the binary that runs every command, beside this one.
  public static let commandsBinary = "hms2fa-admin-full"

  public static func main() -> Never {
    let arguments = Array(CommandLine.arguments.dropFirst())
    guard let show = quickUserShow(arguments) else { runCommands(arguments) }
    prepareProcess()
    let console = Console(json: arguments.contains("--json"))
    do {
      try ShowCard.run(account: show.account, from: show.target, console: console)
      finishProcess(0)
    } catch {
      finishProcess(console.report(error))
    }
  }

  /// `user show` in its plain forms, read without the argument parser (whose reflection alone
  /// cost more at start-up than the look-up, and which the front end doesn't link). Taken only:
  /// `user show` then, in any order, one ACCOUNT not starting with "-", and at most once each
  /// `--json`, `--read-only`, `--database VALUE` or `--database=VALUE` (a non-empty value not
  /// starting with "-"). Anything else (`--help`, `--`, an unknown or repeated option, no
  /// account, two accounts, an account spelled `help`) returns nil and goes to
  /// `hms2fa-admin-full`'s parser, which owns every message about a command line.
  public static func quickUserShow(_ arguments: [String]) -> (account: String, target: LookupTarget)? {
    guard arguments.count >= 3, arguments[0] == "user", arguments[1] == "show" else { return nil }
    var account: String?
    var database: String?
    var json = false
    var readOnly = false
    var rest = arguments.dropFirst(2)
    while let argument = rest.popFirst() {
      switch argument {
      case "--json":
        if json { return nil }
        json = true
      case "--read-only":
        if readOnly { return nil }
        readOnly = true
      case "--database":
        guard database == nil, let value = rest.popFirst(), !value.isEmpty, !value.hasPrefix("-") else { return nil }
        database = value
      case _ where argument.hasPrefix("--database="):
        let value = String(argument.dropFirst("--database=".count))
        guard database == nil, !value.isEmpty, !value.hasPrefix("-") else { return nil }
        database = value
      case _ where argument.hasPrefix("-") || argument == "help" || account != nil:
        return nil
      default:
        account = argument
      }
    }
    guard let account else { return nil }
    return (account, LookupTarget(database: database, readOnly: readOnly))
  }

  /// Replaces this process with `hms2fa-admin-full` from this binary's directory, with the same
  /// arguments (the first included, so messages and `ps` still say `hms2fa-admin`). Nothing of
  /// the process has been changed yet: signal dispositions and open files pass as they came.
  /// Never a bare name: that would run whatever `hms2fa-admin-full` the current directory
  /// holds.
  static func runCommands(_ arguments: [String]) -> Never {
    let message: String
    if var path = executableDirectory() {
      path += Array("/\(commandsBinary)".utf8)
      path.append(0)
      execv(path.map { CChar(bitPattern: $0) }, CommandLine.unsafeArgv)
      let reason = String(cString: strerror(errno))
      let shown = String(decoding: path.dropLast(), as: UTF8.self)
      message = "cannot run \(shown) (\(reason)); install \(commandsBinary) in the same directory as hms2fa-admin"
    } else {
      message =
        "cannot find the directory hms2fa-admin was run from (/proc/self/exe unreadable), so not "
        + "\(commandsBinary) either; run \(commandsBinary) itself, by its full path"
    }
    prepareProcess()
    Console(json: arguments.contains("--json")).fail(DeskError(.configuration, message))
    finishProcess(ExitStatus.configuration.rawValue)
  }

  /// The directory of the running binary, symbolic links resolved, as bytes (a path needn't be
  /// UTF-8).
  private static func executableDirectory() -> [UInt8]? {
    #if os(Linux)
      var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
      let length = readlink("/proc/self/exe", &buffer, buffer.count)
      // A path that filled the buffer may have been cut short.
      guard length > 0, length < buffer.count else { return nil }
      let path = buffer[..<length].map { UInt8(bitPattern: $0) }
    #else
      guard let first = CommandLine.arguments.first, first.contains("/") else { return nil }
      let path = Array(first.utf8)
    #endif
    guard let slash = path.lastIndex(of: UInt8(ascii: "/")) else { return nil }
    return slash == 0 ? [UInt8(ascii: "/")] : Array(path[..<slash])
  }
}

/// Sets up the process before any command runs (both binaries).
public func prepareProcess() {
  // A closed pipe (`| head`) ends output quietly instead of killing the process mid-write.
  signal(SIGPIPE, SIG_IGN)
  // A full file system or a file-size limit makes write() fail (a delivery failure) instead
  // of killing the process half-way.
  signal(SIGXFSZ, SIG_IGN)
  // Started with stdin, stdout or stderr closed, the first file opened (the database's socket)
  // would take its number and receive what is printed.
  for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] where fcntl(fd, F_GETFD) == -1 {
    _ = open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY)
  }
}

/// Flushes the output and exits with `status`. Output that could not be written (a full disk,
/// a closed pipe, /dev/full) is a failure, not a success with nothing printed. A reader that
/// stopped early (`| head`) gets no message, as with any tool ended by SIGPIPE.
public func finishProcess(_ status: Int32) -> Never {
  var status = status
  errno = 0
  if fflush(stdout) != 0 || ferror(stdout) != 0 {
    let reason = errno
    if status == 0 { status = ExitStatus.ioError.rawValue }
    if reason != EPIPE {
      let why = reason == 0 ? "" : " (\(String(cString: strerror(reason))))"
      let message = "hms2fa-admin: the output could not be written\(why); what the command did stands\n"
      _ = message.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }
  }
  exit(status)
}
