import ArgumentParser
import HelpDesk
import Postgres

#if canImport(Glibc)
  @preconcurrency import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The process entry point: parses, runs, and turns every failure into one line on stderr and
/// the contract's exit status.
public enum CLI {
  /// Runs the tool with the process's arguments and exits.
  public static func main() -> Never {
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
    var status = run(Array(CommandLine.arguments.dropFirst()))
    // Output that could not be written (a full disk, a closed pipe, /dev/full) is a failure, not
    // a success with nothing printed.
    // A reader that stopped early (`| head`) gets no message, as with any tool ended by SIGPIPE.
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

  /// Runs one command line and returns its exit status.
  public static func run(_ arguments: [String]) -> Int32 {
    let console = Console(json: arguments.contains("--json"))
    do {
      if let show = quickUserShow(arguments) {
        try ShowCard.run(account: show.account, from: show.target, console: console)
        return 0
      }
      var command = try AdminCommand.parseAsRoot(arguments)
      try command.run()
      return 0
    } catch let error as DeskError {
      console.fail(error)
      return error.status.rawValue
    } catch let error as PostgresError {
      let desk = deskError(error)
      console.fail(desk)
      return desk.status.rawValue
    } catch {
      let code = AdminCommand.exitCode(for: error)
      if code == .success {
        print(AdminCommand.fullMessage(for: error))
        return 0
      }
      let message =
        AdminCommand.message(for: error)
        .split(whereSeparator: \.isNewline).first.map(String.init) ?? "invalid command line"
      let status: ExitStatus = code.rawValue == ExitStatus.usage.rawValue ? .usage : .software
      let hint = status == .usage ? " (run with --help for usage)" : ""
      console.fail(DeskError(status, message + hint))
      return status.rawValue
    }
  }
}

extension CLI {
  /// `user show` in its plain forms, read without the argument parser: the desk's most frequent
  /// command, run while a person waits on the phone, and the parser's reflection costs more at
  /// start-up than the look-up itself (README, Benchmarks). Taken only: `user show` then, in any
  /// order, one ACCOUNT not starting with "-", and at most once each `--json`, `--read-only`,
  /// `--database VALUE` or `--database=VALUE` (a non-empty value not starting with "-").
  /// Anything else (`--help`, `--`, an unknown or repeated option, no account, two accounts, an
  /// account spelled `help`) returns nil and goes to the parser, which owns every message about
  /// a command line.
  static func quickUserShow(_ arguments: [String]) -> (account: String, target: LookupTarget)? {
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
}

/// Installs `handler` for the next `signalNumber` only (SA_RESETHAND: the one after gets the
/// default action), unless the parent had it ignored (`nohup`, `trap '' HUP`), which stays so.
///
/// - Returns: the disposition it replaced, to put back later; nil when it installed nothing.
func catchOnce(
  _ signalNumber: Int32, with handler: @convention(c) (Int32) -> Void, flags: Int32 = 0
) -> sigaction? {
  var previous = sigaction()
  sigaction(signalNumber, nil, &previous)
  #if canImport(Glibc)
    let current = previous.__sigaction_handler.sa_handler
  #else
    let current = previous.__sigaction_u.__sa_handler
  #endif
  if unsafeBitCast(current, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) { return nil }
  var action = sigaction()
  #if canImport(Glibc)
    action.__sigaction_handler.sa_handler = handler
  #else
    action.__sigaction_u.__sa_handler = handler
  #endif
  sigemptyset(&action.sa_mask)
  action.sa_flags = Int32(truncatingIfNeeded: SA_RESETHAND) | flags
  sigaction(signalNumber, &action, nil)
  return previous
}
