import ArgumentParser
import HelpDesk
import Postgres

#if canImport(Glibc)
  import Glibc
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
    let status = run(Array(CommandLine.arguments.dropFirst()))
    fflush(nil)
    exit(status)
  }

  /// Runs one command line and returns its exit status.
  public static func run(_ arguments: [String]) -> Int32 {
    let console = Console(json: arguments.contains("--json"))
    do {
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
