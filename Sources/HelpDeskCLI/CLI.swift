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
    prepareProcess()
    finishProcess(run(Array(CommandLine.arguments.dropFirst())))
  }

  /// Runs one command line and returns its exit status.
  public static func run(_ arguments: [String]) -> Int32 {
    let console = Console(json: arguments.contains("--json"))
    if let problem = CommandSuggestion.problem(in: arguments) {
      console.fail(DeskError(.usage, problem))
      return ExitStatus.usage.rawValue
    }
    do {
      var command = try AdminCommand.parseAsRoot(arguments)
      try command.run()
      return 0
    } catch let error as DeskError {
      // The library maps every database failure to a DeskError; anything else is a bug (70).
      return console.report(error)
    } catch {
      let code = AdminCommand.exitCode(for: error)
      if code == .success {
        print(AdminCommand.fullMessage(for: error))
        return 0
      }
      let lines = AdminCommand.message(for: error).split(whereSeparator: \.isNewline).map(String.init)
      var message = lines.first ?? "invalid command line"
      // A long list of choices comes one a line ("- tier1"): said on the one line instead.
      if message.hasSuffix("one of the following:") {
        let choices = lines.dropFirst().map { $0.trimmingASCIISpaces() }.filter { $0.hasPrefix("- ") }
        message =
          message.replacingOccurrences(of: "one of the following:", with: "one of ")
          + choices.map { "'\($0.dropFirst(2))'" }.joined(separator: ", ") + "."
      }
      let status: ExitStatus = code.rawValue == ExitStatus.usage.rawValue ? .usage : .software
      let hint = status == .usage ? " (run with --help for usage)" : ""
      console.fail(DeskError(status, message + hint))
      return status.rawValue
    }
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

/// Sets up the process before any command runs.
func prepareProcess() {
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
func finishProcess(_ status: Int32) -> Never {
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
