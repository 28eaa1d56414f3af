import ArgumentParser
import Foundation
import HelpDesk

struct AccountsCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "accounts",
    abstract: "The accounts registry and the identity feed that fills it.",
    subcommands: [Import.self]
  )

  struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "import",
      abstract: "Load the identity system's export of accounts (batch tier or operator).",
      discussion: """
        FILE is CSV (RFC 4180 quoting, UTF-8, CRLF or LF) whose header names the columns \
        account_id, display_name, email, status (active or disabled) and high_risk (true/false, \
        t/f, yes/no, y/n or 1/0), in any order. Account ids are trimmed and lowercased, emails \
        lowercased in the domain part. New accounts are added, accounts whose name, email, \
        status or high-risk flag differ are updated (the feed's status is authoritative: a \
        disabled account listed as active is enabled again), and with --disable-missing active \
        accounts the feed doesn't list are disabled. All in one transaction, with one \
        accounts.imported audit event.

        The whole feed is refused (exit 65, nothing changed) at the first malformed row (named by \
        line and column), a repeated account id, an invalid email, status or flag, and when it \
        would disable more than --max-disable-fraction of the active accounts: a truncated \
        export must not lock out the school. --force overrides that limit and needs --ticket.

        The file goes to the database as it is: PostgreSQL's CSV parser reads it into a staging \
        table of the import's transaction, where SQL checks and applies it. Nothing about \
        accounts is kept outside the database.

        Examples:
          hms2fa-admin accounts import /srv/feeds/accounts.csv --disable-missing
          hms2fa-admin accounts import accounts.csv --disable-missing --dry-run
          hms2fa-admin accounts import accounts.csv --disable-missing --force --ticket CHG0042
          hms2fa-admin accounts import /srv/feeds/accounts.csv --disable-missing \\
            --metrics-file /var/lib/prometheus/node-exporter/hms2fa_roster_import.prom
        """
    )

    @Argument(
      help: ArgumentHelp(
        "The feed: CSV with the header account_id,display_name,email,status,high_risk.", valueName: "file.csv"),
      completion: .file(extensions: ["csv"]))
    var file: String

    @Flag(help: "Check the feed and print what would change; change nothing.")
    var dryRun = false

    @Flag(help: "Disable active accounts the feed doesn't list.")
    var disableMissing = false

    @Option(
      help: ArgumentHelp(
        "Refuse a feed that would disable more than this fraction of the active accounts.", valueName: "fraction"))
    var maxDisableFraction = 0.05

    @Flag(help: "Apply a feed over --max-disable-fraction all the same (needs --ticket).")
    var force = false

    @Option(
      help: ArgumentHelp(
        "A change ticket recorded with the import (required with --force).", valueName: "ticket"))
    var ticket: String?

    @Option(
      help: ArgumentHelp("With --dry-run, list at most this many changes (counts are always complete).", valueName: "n")
    )
    var diffLimit = 1000

    @Option(
      help: ArgumentHelp(
        "After the import (not a dry run), write its figures here in Prometheus text format.", valueName: "file"))
    var metricsFile: String?

    @OptionGroup var global: GlobalOptions

    func validate() throws {
      if let metricsFile, metricsFile.isEmpty { throw ValidationError("--metrics-file can't be empty") }
      guard (0...1).contains(maxDisableFraction) else {
        throw ValidationError("--max-disable-fraction must be between 0 and 1, e.g. 0.05")
      }
      guard (0...Int(Int32.max)).contains(diffLimit) else {
        throw ValidationError("--diff-limit must be between 0 and \(Int32.max)")
      }
      if ticket != nil || force {
        do {
          _ = try Ticket(desk: ticket)
        } catch {
          // A setting that is wrong (78) is said when the command runs, with its own exit status.
          guard error.status == .usage else { return }
          throw ValidationError(error.message)
        }
      }
      if force && ticket == nil && environmentVariable("HMS2FA_TICKET") == nil && !dryRun {
        throw ValidationError("--force overrides the disable limit and needs --ticket")
      }
    }

    func run() throws {
      var options = RosterImportOptions()
      options.disableMissing = disableMissing
      options.maxDisableFraction = maxDisableFraction
      options.force = force
      options.dryRun = dryRun
      options.ticket = ticket != nil || force ? try Ticket(desk: ticket) : nil
      options.diffLimit = diffLimit
      let started = Date()
      var result: RosterImportResult?
      var failure: Error?
      do {
        // A missing or unreadable file is said before connecting.
        let feed = try RosterFile(path: file)
        let db = try global.connect()
        result = try RosterImport.run(feed, options: options, on: db)
      } catch {
        failure = error
      }
      if let metricsFile, !dryRun {
        do {
          try RosterImportMetrics.write(
            result, exitStatus: failure.map { deskError($0).status.rawValue } ?? 0,
            durationSeconds: Date().timeIntervalSince(started), to: metricsFile)
        } catch {
          // The import's own failure is what the person needs first.
          if let failure {
            global.console.note("hms2fa-admin: warning: \(error.message)")
            throw failure
          }
          throw error
        }
      }
      if let failure { throw failure }
      guard let result else { return }
      global.console.emit(document(result)) { text(result) }
    }

    private func document(_ result: RosterImportResult) -> JSONValue {
      var members: [(String, JSONValue)] = [
        ("source", .string(result.source)), ("dry_run", .bool(result.dryRun)), ("rows", .int(result.rows)),
        ("added", .int(result.added)), ("changed", .int(result.changed)), ("disabled", .int(result.disabled)),
        ("unchanged", .int(result.unchanged)), ("active_before", .int(result.activeBefore)),
        ("would_disable", .int(result.wouldDisable)), ("over_limit", .bool(result.overLimit)),
        ("event_id", result.eventID.map { .int($0) } ?? .null), ("tries", .int(result.tries)),
      ]
      if result.dryRun {
        members.append(("changes", .array(result.changes.map(changeDocument))))
      }
      return .object(members)
    }

    private func changeDocument(_ change: RosterChange) -> JSONValue {
      func fields(_ f: RosterChange.Fields) -> JSONValue {
        var members: [(String, JSONValue)] = []
        if let v = f.displayName { members.append(("display_name", .string(v))) }
        if let v = f.email { members.append(("email", .string(v))) }
        if let v = f.status { members.append(("status", .string(v))) }
        if let v = f.highRisk { members.append(("high_risk", .bool(v))) }
        return .object(members)
      }
      return .object([
        ("change", .string(change.kind.rawValue)), ("account_id", .string(change.accountID)),
        ("line", .int(change.line)), ("before", change.kind == .added ? .null : fields(change.before)),
        ("after", fields(change.after)),
      ])
    }

    private func text(_ result: RosterImportResult) -> String {
      var lines: [String] = []
      if result.dryRun {
        lines += result.changes.map(changeLine)
        let listed = result.changes.count
        let total = result.added + result.changed + result.disabled
        if listed < total {
          lines.append("… and \(total - listed) more (--diff-limit \(total) lists them all)")
        }
        lines.append(
          "dry run of \(shown(result.source)): \(result.rows) rows; would add \(result.added), change "
            + "\(result.changed), disable \(result.disabled); \(result.unchanged) unchanged; nothing was changed")
        if result.overLimit {
          lines.append(
            "a real run would be refused: it would disable \(result.wouldDisable) of \(result.activeBefore) "
              + "active accounts, more than --max-disable-fraction \(maxDisableFraction)")
        }
      } else {
        lines.append(
          "imported \(shown(result.source)): \(result.rows) rows; added \(result.added), changed "
            + "\(result.changed), disabled \(result.disabled), unchanged \(result.unchanged)"
            + (result.eventID.map { " (audit event \($0))" } ?? ""))
      }
      if result.tries > 1 {
        lines.append(
          "(it took \(result.tries) tries: another session's change stopped it, and it started "
            + "again)")
      }
      return lines.joined(separator: "\n")
    }

    private func changeLine(_ change: RosterChange) -> String {
      let at = change.line.map { " (line \($0))" } ?? ""
      switch change.kind {
      case .added:
        let a = change.after
        return "+ \(change.accountID)\(at): \(shown(a.displayName)) <\(shown(a.email))> \(a.status ?? "-")"
          + (a.highRisk == true ? ", high risk" : "")
      case .disabled:
        return "- \(change.accountID): active → disabled (not in the feed)"
      case .changed:
        var parts: [String] = []
        let (b, a) = (change.before, change.after)
        if let new = a.displayName { parts.append("display_name \(quotedName(b.displayName)) → \(quotedName(new))") }
        if let new = a.email { parts.append("email \(shown(b.email)) → \(shown(new))") }
        if let new = a.status { parts.append("status \(b.status ?? "-") → \(new)") }
        if let new = a.highRisk { parts.append("high_risk \(b.highRisk.map(String.init) ?? "-") → \(new)") }
        return "~ \(change.accountID)\(at): " + parts.joined(separator: "; ")
      }
    }

    private func quotedName(_ name: String?) -> String {
      "'\(shown(name))'"
    }
  }
}
