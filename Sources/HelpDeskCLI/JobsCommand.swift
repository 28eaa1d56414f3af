import ArgumentParser
import HelpDesk

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

struct JobsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "jobs",
    abstract: "The nightly jobs (role hms2fa_batch).",
    subcommands: [ExpireRemembered.self, PurgeSecrets.self]
  )

  struct ExpireRemembered: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "expire-remembered",
      abstract: "Delete remember-me rows whose expires_at has passed, in short transactions.",
      discussion: """
        Counts the table first (in short chunks), refuses when more than --max-fraction of all \
        rows would go (a clock jump, a bad import) unless --force, then deletes the expired rows \
        oldest first, --batch-size rows per transaction, each under a lock timeout, so sign-ins \
        reading the same table are not held up. A run stopped by --max-runtime prints \
        "complete": false and the next run carries on. One run at a time per database: a second \
        one exits 75 at once. Each run writes one job.expire_remembered audit event.

        On a terminal it shows progress (rows, rate, time left); otherwise it logs one line \
        every --log-every batches on stderr.

        Exit status: 0 done (also when stopped by --max-runtime), 65 refused by the guard, 69 \
        database unreachable or connection lost (committed batches are kept), 75 another run \
        holds the lock, 77 this login lacks hms2fa_batch.

        Examples:
          hms2fa-admin jobs expire-remembered --dry-run
          hms2fa-admin jobs expire-remembered --max-runtime 1h \\
            --metrics-file /var/lib/prometheus/node-exporter/hms2fa_expire_remembered.prom
        """
    )

    @Option(help: ArgumentHelp("Rows deleted per transaction (1 to 100000).", valueName: "n"))
    var batchSize = 5_000

    @Option(
      help: ArgumentHelp(
        "Stop cleanly after this long (e.g. 30m, 2h); the next run continues.", valueName: "duration"))
    var maxRuntime: String?

    @Flag(help: "Count what would be deleted, and change nothing.")
    var dryRun = false

    @Option(
      help: ArgumentHelp(
        "Refuse when more than this fraction of all rows would be deleted (0 to 1).", valueName: "fraction"))
    var maxFraction = 0.5

    @Flag(help: "Delete even when more than --max-fraction of the rows have expired.")
    var force = false

    @Option(
      help: ArgumentHelp(
        "Write Prometheus text-format metrics to this file, atomically, after every run but a dry run "
          + "(node_exporter's textfile collector).",
        valueName: "file"))
    var metricsFile: String?

    @Option(help: ArgumentHelp("Off a terminal, log one progress line every n batches.", valueName: "n"))
    var logEvery = 100

    @OptionGroup var global: GlobalOptions

    func validate() throws {
      guard (1...100_000).contains(batchSize) else {
        throw ValidationError("--batch-size must be 1 to 100000 rows")
      }
      guard maxFraction > 0, maxFraction <= 1 else {
        throw ValidationError("--max-fraction must be more than 0 and at most 1")
      }
      guard logEvery >= 1 else { throw ValidationError("--log-every must be at least 1") }
      if let metricsFile, metricsFile.isEmpty { throw ValidationError("--metrics-file can't be empty") }
    }

    func run() throws {
      let budget = try maxRuntime.map { try DeskDuration(parsing: $0) }
      let target = try DatabaseTarget.resolve(commandLine: global.database)
      let plan = ExpiryPlan(
        batchSize: batchSize, maxRuntime: budget, dryRun: dryRun, maxFraction: maxFraction, force: force)
      let console = global.console
      let reporter = ProgressReporter(console: console, logEvery: logEvery)

      var run = ExpiryRun(outcome: .failed)
      var failure: DeskError?
      // SIGTERM (systemd stopping the unit, or its timeout), Ctrl-C or a hang-up: finish the
      // call of batches under way (at most a quarter of a second), record the run, write the
      // metrics, exit 75. A second signal ends the process at once.
      installStopHandlers()
      do {
        let db = try target.connect()
        do {
          run = try RememberedExpiry.run(
            plan, on: db, reconnect: { try target.connect() }, progress: { reporter.report($0) },
            shouldStop: { stopSignal.pointee != 0 })
        } catch {
          run = error.run
          failure = error.error
        }
      } catch {
        failure = error
      }
      reporter.finish()
      if failure == nil, run.interrupted {
        failure = DeskError(
          .tryLater,
          "stopped by \(signalName(stopSignal.pointee)) after deleting \(run.deleted) of \(run.expiredAtStart) expired "
            + "remembered browsers in \(run.batches) batch(es); they stay deleted, and the next run continues")
      }

      if let metricsFile, !dryRun {
        do {
          try ExpiryMetrics.write(run, exitStatus: failure?.status.rawValue ?? 0, to: metricsFile)
        } catch {
          // The run's own failure is what the person needs first.
          if let failure {
            console.note("hms2fa-admin: warning: \(deskError(error).message)")
            throw failure
          }
          throw error
        }
      }
      if let failure, !run.interrupted { throw failure }

      var fields: [(String, JSONValue)] = [
        ("deleted", .int(run.deleted)), ("batches", .int(run.batches)),
        ("duration_seconds", .double((run.durationSeconds * 1000).rounded() / 1000)),
        ("longest_batch_ms", .double((run.longestBatchSeconds * 1_000_000).rounded() / 1000)),
        ("complete", .bool(run.complete)), ("outcome", .string(run.outcome.rawValue)),
        ("dry_run", .bool(dryRun)), ("expired_at_start", .int(run.expiredAtStart)),
        ("rows_at_start", .int(run.rowsAtStart)), ("cutoff", .string(run.cutoff)),
      ]
      if dryRun { fields.append(("would_delete", .int(run.expiredAtStart))) }
      console.emit(.object(fields)) {
        let seconds = "\((run.durationSeconds * 10).rounded() / 10) s"
        switch run.outcome {
        case .dryRun:
          return "dry run: \(run.expiredAtStart) of \(run.rowsAtStart) remembered browsers "
            + "(\(percent(run.expiredFraction))) have expired and would be deleted; nothing was changed"
        case .stopped:
          if run.interrupted { return "" }
          return "stopped at --max-runtime after deleting \(run.deleted) of \(run.expiredAtStart) expired "
            + "remembered browsers in \(run.batches) batch(es) (\(seconds)); complete: false, the next run continues"
        default:
          return "deleted \(run.deleted) expired remembered browser(s) in \(run.batches) batch(es) (\(seconds)); "
            + "complete"
        }
      }
      // Interrupted: the result above (with --json), then the reason on stderr and exit 75.
      if let failure { throw failure }
    }
  }
}

extension JobsCommand {
  struct PurgeSecrets: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "purge-secrets",
      abstract: "Clear the hashes of spent links and codes, and the texts of old messages.",
      discussion: """
        Links that were used, revoked or expired and codes that ended lose their hashes; the \
        codes people tried lose theirs a day on; messages that ended more than a day ago lose \
        their text. The rows stay as history. --batch-size rows of each kind per transaction. \
        The nightly timer runs it after expire-remembered.

        Example:
          hms2fa-admin jobs purge-secrets --max-runtime 10m
        """
    )

    @Option(help: ArgumentHelp("Rows of each kind cleared per transaction (1 to 100000).", valueName: "n"))
    var batchSize = 5_000

    @Option(
      help: ArgumentHelp("Stop after this long (e.g. 10m); the next run continues.", valueName: "duration"))
    var maxRuntime: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
      guard (1...100_000).contains(batchSize) else { throw ValidationError("--batch-size must be 1 to 100000 rows") }
    }

    func run() throws {
      let budget = try maxRuntime.map { Double(try DeskDuration(parsing: $0).seconds) }
      let db = try global.connect()
      let purge = try SpentSecrets.purge(batchSize: batchSize, maxRuntime: budget, on: db)
      global.console.emit(
        .object([
          ("links", .int(purge.links)), ("codes", .int(purge.codes)), ("tries", .int(purge.tries)),
          ("bodies", .int(purge.bodies)), ("batches", .int(purge.batches)), ("complete", .bool(purge.complete)),
        ])
      ) {
        "cleared the hashes of \(purge.links) link(s), \(purge.codes) code(s) and \(purge.tries) tried code(s), "
          + "and the text of \(purge.bodies) message(s), in \(purge.batches) batch(es)"
          + (purge.complete ? "; complete" : "; stopped at --max-runtime, the next run continues")
      }
    }
  }
}

/// The signal that asked the job to stop, 0 while none has: a plain C int the handler stores
/// into, allocated before any handler is installed (the handler touches nothing else).
nonisolated(unsafe) let stopSignal: UnsafeMutablePointer<Int32> = {
  let flag = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
  flag.initialize(to: 0)
  return flag
}()

func requestStop(_ signalNumber: Int32) {
  stopSignal.pointee = signalNumber
}

/// Catches SIGTERM, SIGINT and SIGHUP once each: the first asks the job to stop (it checks
/// between calls), the next one of the same kind gets the default action. A signal the parent
/// set to be ignored (`nohup`, `trap '' HUP`) stays ignored.
func installStopHandlers() {
  _ = stopSignal.pointee
  // A parent may have started the job with them blocked (the mask survives exec); the job
  // handles them now, so it takes them.
  var unblock = sigset_t()
  sigemptyset(&unblock)
  for signalNumber in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&unblock, signalNumber) }
  sigprocmask(SIG_UNBLOCK, &unblock, nil)
  for signalNumber in [SIGTERM, SIGINT, SIGHUP] {
    _ = catchOnce(signalNumber, with: requestStop, flags: Int32(truncatingIfNeeded: SA_RESTART))
  }
}

func signalName(_ signalNumber: Int32) -> String {
  switch signalNumber {
  case SIGTERM: "SIGTERM"
  case SIGINT: "SIGINT (Ctrl-C)"
  case SIGHUP: "SIGHUP"
  default: "signal \(signalNumber)"
  }
}

private func percent(_ fraction: Double) -> String {
  "\((fraction * 1000).rounded() / 10)%"
}

/// Shows how a run is going: a line redrawn in place on a terminal, else one log line per N
/// batches.
final class ProgressReporter {
  let console: Console
  let logEvery: Int
  let terminal = isatty(STDERR_FILENO) == 1
  private var lastDrawn = -1.0
  private var deletingSince: Double?
  private var drewLine = false

  init(console: Console, logEvery: Int) {
    self.console = console
    self.logEvery = logEvery
  }

  func report(_ progress: ExpiryProgress) {
    switch progress.phase {
    case .counting:
      deletingSince = progress.elapsed
      guard terminal, progress.elapsed - lastDrawn >= 0.2 else { return }
      draw("counting: \(progress.rows) rows, \(progress.expected) expired")
    case .deleting:
      let since = deletingSince ?? 0
      let rate = progress.elapsed > since ? Double(progress.rows) / (progress.elapsed - since) : 0
      let left = max(progress.expected - progress.rows, 0)
      let estimate = rate > 0 ? " · about \(duration(Double(left) / rate)) left" : ""
      let share = progress.expected > 0 ? " (\(percent(Double(progress.rows) / Double(progress.expected))))" : ""
      let line =
        "deleted \(progress.rows) of \(progress.expected)\(share) in \(progress.batches) batches · "
        + "\(Int(rate.rounded())) rows/s\(estimate)"
      if terminal {
        guard progress.elapsed - lastDrawn >= 0.2 else { return }
        draw(line)
      } else if progress.batches % logEvery == 0 {
        console.note("expire-remembered: \(line)")
      }
    }
    lastDrawn = progress.elapsed
  }

  /// Ends the redrawn line, so what follows starts on a line of its own.
  func finish() {
    if drewLine { console.writeStderrPublic("\r\u{1B}[K") }
    drewLine = false
  }

  private func draw(_ line: String) {
    console.writeStderrPublic("\r\u{1B}[K" + line)
    drewLine = true
  }

  private func duration(_ seconds: Double) -> String {
    let whole = Int64(seconds.rounded(.up))
    return whole < 1 ? "1s" : DeskDuration(seconds: whole).description
  }
}
