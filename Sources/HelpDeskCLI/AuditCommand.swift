import ArgumentParser
import HelpDesk

struct AuditCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "audit",
    abstract: "Read and verify the audit log.",
    subcommands: [Log.self, Verify.self, Anchor.self]
  )

  struct Log: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "log",
      abstract: "Show audit events, oldest first (the most recent --limit of them).",
      discussion: """
        The actor is the database login that made the change.

        Examples:
          hms2fa-admin audit log --account jd123
          hms2fa-admin audit log --actor agent_bob --since 24h --json
          hms2fa-admin audit log --since 2026-11-01 --limit 500
        """
    )

    @Option(help: "Only events about this account.")
    var account: String?

    @Option(help: "Only events made by this database login.")
    var actor: String?

    @Option(help: "Only events since then: a duration back from now (24h, 7d) or a date (2026-11-01).")
    var since: String?

    @Option(help: "At most this many events (1–10000).")
    var limit = 50

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try account.map { try AccountKey(parsing: $0) }
      let since = try since.map { try PointInTime(parsing: $0).date }
      let db = try global.connectForLookup()
      let filter = AuditFilter(account: try key?.accountID(on: db), actor: actor, since: since, limit: limit)
      let events = try AuditLog.events(filter, on: db)
      global.console.emit(
        .object([
          (
            "events",
            .array(
              events.map { e in
                .object([
                  ("event_id", .int(e.eventId)), ("at", .string(e.at.iso8601UTC(fractionalDigits: 3))),
                  ("actor", .string(e.actor)), ("action", .string(e.action)),
                  ("account_id", .string(e.accountId)), ("ticket", .string(e.ticket)),
                  ("reason", .string(e.reason)), ("details", .raw(e.details)),
                ])
              })
          )
        ])
      ) {
        events.isEmpty
          ? "no audit events match"
          : table(
            ["EVENT", "AT", "ACTOR", "ACTION", "ACCOUNT", "TICKET", "REASON", "DETAILS"],
            events.map { e in
              [
                String(e.eventId), DeskTime.cell(e.at), shown(e.actor), e.action, shown(e.accountId),
                shown(e.ticket), shown(e.reason), shown(AuditDetails.short(e.details)),
              ]
            })
      }
    }
  }

  struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "verify",
      abstract: "Check the audit log: its hash chain, the anchored heads, and tier memberships (auditor).",
      discussion: """
        Each event carries the hash of its predecessor and of its own content, so an event \
        altered, deleted or inserted out of band breaks the chain. Someone able to recompute \
        every hash (an owner of the schema) could rewrite the whole chain consistently: the heads \
        that audit anchor wrote outside the database catch that, since an anchored event's hash \
        would change (--anchors, else HMS2FA_AUDIT_ANCHORS). It only reads the anchor file.

        It also lists every membership of a tier role that no recorded staff grant accounts for \
        (a GRANT made outside hms2fa-admin staff grant), and every recorded grant whose member is \
        gone. Any of these exits 65.

        Example:
          hms2fa-admin audit verify --anchors /var/lib/hms2fa-audit/anchors --json
        """
    )

    @Option(help: ArgumentHelp("The anchor file audit anchor appends to.", valueName: "file"))
    var anchors: String?

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let anchorFile = anchors ?? environmentVariable("HMS2FA_AUDIT_ANCHORS").flatMap { $0.isEmpty ? nil : $0 }
      let anchored = try anchorFile.map { try AuditLog.readAnchors($0) } ?? []
      let db = try global.connectForLookup()
      let result = try AuditLog.verify(on: db)
      let mismatch = try AuditLog.check(anchored, on: db)
      let memberships = try AuditLog.unrecordedMemberships(on: db)
      let ok = result.ok && mismatch == nil && memberships.isEmpty
      global.console.emit(
        .object([
          ("events", .int(result.events)), ("ok", .bool(ok)), ("chain_ok", .bool(result.ok)),
          ("first_bad_event", result.firstBadEvent.map { .int($0) } ?? .null),
          ("problem", .string(result.problem)), ("head_hash", .string(result.headHash)),
          ("anchors_checked", .int(anchored.count)),
          (
            "anchor_mismatch",
            mismatch.map { m in
              .object([
                ("event_id", .int(m.anchor.eventID)), ("anchored_at", .string(m.anchor.at)),
                ("anchored_hash", .string(m.anchor.hash)), ("hash_now", .string(m.hashNow)),
                ("last_holding_event_id", m.lastHolding.map { .int($0.eventID) } ?? .null),
              ])
            } ?? .null
          ),
          (
            "unrecorded_memberships",
            .array(
              memberships.map {
                .object([("login", .string($0.login)), ("role", .string($0.role)), ("problem", .string($0.problem))])
              })
          ),
        ])
      ) {
        var lines: [String] = []
        if result.ok {
          lines.append("chain ok: \(result.events) events verified; head \(result.headHash ?? "-")")
        }
        if anchorFile != nil {
          lines.append(
            mismatch == nil
              ? "anchors ok: \(anchored.count) anchored head(s) still on the chain"
              : "anchors: the head anchored at event \(mismatch?.anchor.eventID ?? 0) is no longer on the chain")
        }
        if !memberships.isEmpty {
          lines.append(
            "tier memberships nobody recorded:\n"
              + table(
                ["LOGIN", "ROLE", "PROBLEM"], memberships.map { [shown($0.login), $0.role, $0.problem] }, indent: "  "))
        }
        return lines.joined(separator: "\n")
      }
      if !result.ok {
        throw DeskError(
          .dataError,
          "audit log tampering found: \(result.problem ?? "the chain is broken") "
            + "(\(result.events) events verified before it)")
      }
      if let mismatch {
        let now =
          mismatch.hashNow.map { "its hash is now \($0.prefix(16))…, not \(mismatch.anchor.hash.prefix(16))…" }
          ?? "it is gone"
        let after =
          mismatch.lastHolding.map { "after event \($0.eventID) (anchored \($0.at), which still holds)" }
          ?? "at or before it"
        throw DeskError(
          .dataError,
          "audit log rewritten: event \(mismatch.anchor.eventID), anchored \(mismatch.anchor.at), differs (\(now)); "
            + "the record was changed \(after), and the chain recomputed")
      }
      if !memberships.isEmpty {
        throw DeskError(
          .dataError,
          "\(memberships.count) tier membership(s) nobody recorded (listed above); check each, then record it "
            + "with hms2fa-admin staff grant, or remove it with staff revoke")
      }
    }
  }

  struct Anchor: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "anchor",
      abstract: "Write the audit chain's head outside the database (batch; the nightly timer runs it).",
      discussion: """
        Checks the chain from its first event, then appends one line (time, event id, hash, \
        database) to the anchor file (--anchor-file, else HMS2FA_AUDIT_ANCHORS), opened for \
        appending only and flushed to disk, and one line to syslog (authpriv). Keep the file \
        where the database's operators can't change it (another host, or chattr +a). Then it \
        checks the tier memberships, as audit verify does: any nobody recorded exits 65, after \
        the anchor is written.

        Example:
          hms2fa-admin audit anchor --anchor-file /var/lib/hms2fa-audit/anchors
        """
    )

    @Option(help: ArgumentHelp("The file to append the head to.", valueName: "file"))
    var anchorFile: String?

    @OptionGroup var global: GlobalOptions

    func run() throws {
      guard let file = anchorFile ?? environmentVariable("HMS2FA_AUDIT_ANCHORS"), !file.isEmpty else {
        throw DeskError.usage("name the anchor file: --anchor-file FILE or HMS2FA_AUDIT_ANCHORS")
      }
      let db = try global.connect()
      let anchor = try AuditLog.anchor(to: file, on: db)
      let memberships = try AuditLog.unrecordedMemberships(on: db)
      global.console.emit(
        .object([
          ("event_id", .int(anchor.eventID)), ("hash", .string(anchor.hash)), ("at", .string(anchor.at)),
          ("anchor_file", .string(file)), ("unrecorded_memberships", .int(memberships.count)),
        ])
      ) { "anchored event \(anchor.eventID) (hash \(anchor.hash.prefix(16))…) in \(file)" }
      if !memberships.isEmpty {
        throw DeskError(
          .dataError,
          "\(memberships.count) tier membership(s) nobody recorded: "
            + memberships.prefix(5).map { "\($0.login) in \($0.role)" }.joined(separator: ", ")
            + "; see hms2fa-admin audit verify")
      }
    }
  }
}

/// An event's details as a person reads them: `key=value` pairs (`role=hms2fa_tier1 granted=true`),
/// a value with spaces quoted, a list or object as compact JSON.
enum AuditDetails {
  static func short(_ json: String) -> String {
    guard case .object(let members)? = try? JSONValue.parse(json) else { return json }
    return members.sorted { $0.0 < $1.0 }.map { key, value in "\(key)=\(text(value))" }.joined(separator: " ")
  }

  private static func text(_ value: JSONValue) -> String {
    switch value {
    case .null: return "-"
    case .bool(let flag): return flag ? "true" : "false"
    case .int(let number): return String(number)
    case .double(let number): return String(number)
    case .string(let text):
      return text.isEmpty || text.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) ? "\"\(text)\"" : text
    default: return value.text
    }
  }
}
