import ArgumentParser
import HelpDesk
import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

struct EnrollmentCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "enrollment",
    abstract: "Reset a stale enrollment so that \"Start setup\" shows again (tier2).",
    subcommands: [Reset.self, Approve.self, Withdraw.self, Requests.self]
  )

  struct Reset: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "reset",
      abstract: "Retire every device, revoke links, remembered browsers and codes, in one transaction.",
      discussion: """
        The riskiest thing the desk does: a wrong reset hands someone's account to whoever is on \
        the phone. Verify the caller first and say how with --verified-via:
          code-on-file  a code sent to a phone on file (identity check / identity confirm) in the
                        last 15 minutes; the database checks it
          callback      you called back a number on file
          in-person     they are at the desk with an ID
          video         a video call with an ID
          manager       their manager vouched for them

        The plan is shown first; on a terminal you confirm by typing the account id; without a \
        terminal, --yes is required. A high-risk account, a second reset within 30 days, or an \
        attested reset (callback/video/manager) of an account with a device used in the last \
        24 hours becomes a request that a different tier-2 agent approves. A notice to the email \
        of record is queued in the reset's own transaction; the command waits for the delivery \
        service to send it (--wait).

        A tier-1 agent shows the plan (--dry-run) and hands the reset on with --request: a \
        pending request with the plan, the reason and the identity proof, which any tier-2 agent \
        approves (enrollment approve).

        Examples:
          hms2fa-admin enrollment reset jd123 --ticket INC0012345 --verified-via code-on-file --dry-run
          hms2fa-admin enrollment reset jd123 --ticket INC0012345 --verified-via code-on-file
          hms2fa-admin enrollment reset jd123 --ticket INC0012345 --verified-via in-person --request
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Option(help: "How the caller's identity was verified: code-on-file, callback, in-person, video, manager.")
    var verifiedVia: IdentityVerification

    @Option(help: "Why, for the audit log and the notice.")
    var reason: String?

    @Flag(help: "Show the plan; change nothing.")
    var dryRun = false

    @Flag(help: "Don't ask for confirmation (required when stdin is not a terminal).")
    var yes = false

    @Flag(help: "File the reset as a request a tier-2 agent approves (tier1 may).")
    var request = false

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let reason = try reason.map { try Reason(parsing: $0).value }
      let ticket = try change.parsedTicket
      let console = global.console
      if !dryRun && !yes && !Console.stdinIsTerminal {
        throw DeskError.usage("stdin is not a terminal: add --yes to reset without the typed confirmation")
      }
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let plan = try EnrollmentReset.reset(
        id, ticket: ticket, verifiedVia: verifiedVia, reason: reason, dryRun: true, on: db)
      if plan.status == .nothingToReset {
        console.emit(outcomeJSON(plan)) {
          "nothing to reset: \(id) has no device in use, no outstanding link, remembered browser or code; "
            + "\"Start setup\" already shows"
        }
        return
      }
      if dryRun {
        console.emit(outcomeJSON(plan)) { planText(plan) + "\n(dry run: nothing was changed)" }
        return
      }
      if let pending = plan.pendingRequestID {
        throw DeskError(
          .tryLater,
          "reset request \(pending) for \(id) is pending; nothing was changed; a different tier-2 agent approves it "
            + "(hms2fa-admin enrollment approve \(pending) --ticket \(ticket.value)), or it is withdrawn "
            + "(hms2fa-admin enrollment withdraw \(pending) --ticket \(ticket.value))")
      }
      // A tier-1 agent hears they hand this on before typing a confirmation that can't be used.
      if !request, try !EnrollmentReset.mayReset(on: db) {
        throw deskError(
          PostgresError(.server, message: "no tier 2", sqlState: SQLState.insufficientPrivilege),
          doing: EnrollmentReset.resetAction, on: db)
      }
      // The plan is a message, so it goes to stderr: stdout holds only the result.
      console.note(planText(plan))
      if !yes { try confirmByTyping(id, to: request ? "request its reset" : "reset it") }
      if request {
        guard let fingerprint = plan.planFingerprint else {
          throw DeskError(.software, "internal error: the plan has no fingerprint")
        }
        let filed = try EnrollmentReset.request(
          id, ticket: ticket, verifiedVia: verifiedVia, reason: reason, expectedPlan: fingerprint, on: db)
        try report(filed, ticket: ticket, waiting: waiting, db: db, console: console)
        return
      }
      // The plan confirmed is the plan carried out: the database refuses (75) if it changed.
      let outcome = try EnrollmentReset.reset(
        id, ticket: ticket, verifiedVia: verifiedVia, reason: reason, dryRun: false,
        expectedPlan: plan.planFingerprint, on: db)
      try report(outcome, ticket: ticket, waiting: waiting, db: db, console: console)
    }
  }

  struct Approve: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "approve",
      abstract: "Carry out a reset request made by another tier-2 agent.",
      discussion: """
        Shows the request (account, requester, when, ticket, reason, how the caller was \
        verified) and the plan as it is now; on a terminal you confirm by typing the account id; \
        without a terminal, --yes is required. Call the person back yourself before approving. \
        You can't approve your own request.

        Example:
          hms2fa-admin enrollment approve 17 --ticket INC0012345
        """
    )

    @Argument(help: "The request id (see enrollment requests).")
    var requestID: Int64

    @Flag(help: "Don't ask for confirmation (required when stdin is not a terminal).")
    var yes = false

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      guard requestID > 0 else { throw DeskError.usage("a request id is a positive number (see enrollment requests)") }
      let ticket = try change.parsedTicket
      if !yes && !Console.stdinIsTerminal {
        throw DeskError.usage("stdin is not a terminal: add --yes to approve without the typed confirmation")
      }
      let db = try global.connect()
      let request = try EnrollmentReset.request(requestID, on: db)
      guard request.state == .pending else {
        throw DeskError.badData(
          "reset request \(requestID) is \(request.state)"
            + (request.approvedBy.map { " (by \($0))" } ?? request.withdrawnBy.map { " (by \($0))" } ?? "")
            + "; nothing to approve")
      }
      let account = try AccountID(parsing: request.accountID)
      // The plan as it is now, whatever verified the caller then (the request's proof is spent).
      let plan = try EnrollmentReset.reset(
        account, ticket: ticket, verifiedVia: .inPerson, reason: nil, dryRun: true, on: db)
      let console = global.console
      console.note(requestText(request) + "\n" + planText(plan, showingApproval: false))
      if !yes { try confirmByTyping(account, to: "approve the reset") }
      let outcome = try EnrollmentReset.approve(requestID, ticket: ticket, on: db)
      try report(outcome, ticket: ticket, waiting: waiting, db: db, console: console)
    }
  }

  struct Withdraw: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "withdraw",
      abstract: "Withdraw a pending reset request (its requester, or any tier-2 agent).",
      discussion: """
        While a request is pending, the account can't be reset directly; withdraw it when the \
        caller turned out not to be the person, or the request was a mistake.

        Example:
          hms2fa-admin enrollment withdraw 17 --ticket INC0012345 --reason "caller hung up"
        """
    )

    @Argument(help: "The request id (see enrollment requests).")
    var requestID: Int64

    @Option(help: "Why, for the audit log.")
    var reason: String?

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      guard requestID > 0 else { throw DeskError.usage("a request id is a positive number (see enrollment requests)") }
      let reason = try reason.map { try Reason(parsing: $0).value }
      let db = try global.connect()
      try EnrollmentReset.withdraw(requestID, ticket: try change.parsedTicket, reason: reason, on: db)
      global.console.emit(.object([("request_id", .int(requestID)), ("state", .string("withdrawn"))])) {
        "withdrew reset request \(requestID)"
      }
    }
  }

  struct Requests: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "requests",
      abstract: "List reset requests waiting for a second agent.",
      discussion: """
        Example:
          hms2fa-admin enrollment requests
        """
    )

    @Flag(help: "Every request of the last 30 days, approved and expired ones too.")
    var all = false

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let db = try global.connectForLookup()
      let requests = try EnrollmentReset.requests(all: all, on: db)
      global.console.emit(
        .object([
          (
            "requests",
            .array(
              requests.map { r in
                .object([
                  ("request_id", .int(r.requestID)), ("account_id", .string(r.accountID)),
                  ("requested_by", .string(r.requestedBy)), ("ticket", .string(r.ticket)),
                  ("verified_via", .string(r.verifiedVia)), ("reason", .string(r.reason)),
                  ("approval_needed", .array(r.approvalNeeded.map { .string($0) })),
                  ("created_at", .string(r.createdAt.iso8601UTC())), ("expires_at", .string(r.expiresAt.iso8601UTC())),
                  ("state", .string(r.state.rawValue)), ("approved_by", .string(r.approvedBy)),
                  ("withdrawn_by", .string(r.withdrawnBy)),
                ])
              })
          )
        ])
      ) {
        requests.isEmpty
          ? (all ? "no reset request in the last 30 days" : "no reset request is waiting for approval")
          : table(
            ["REQUEST", "ACCOUNT", "BY", "TICKET", "VERIFIED VIA", "WHY APPROVAL", "EXPIRES", "STATE"],
            requests.map {
              [
                String($0.requestID), $0.accountID, shown($0.requestedBy), shown($0.ticket), $0.verifiedVia,
                $0.approvalNeeded.joined(separator: ", "), DeskTime.cell($0.expiresAt),
                $0.state.rawValue + ($0.approvedBy.map { " by \($0)" } ?? $0.withdrawnBy.map { " by \($0)" } ?? ""),
              ]
            })
      }
    }
  }
}

/// Asks the agent at the terminal to type `account` before a change goes ahead.
///
/// - Throws: a usage `DeskError` (64) for anything else typed; nothing was changed.
func confirmByTyping(_ account: AccountID, to what: String) throws {
  guard let typed = Console.readLine(prompt: "type \(account) to \(what), anything else to stop: "),
    (try? AccountID(parsing: typed)) == account
  else {
    throw DeskError.usage("not confirmed: nothing was changed")
  }
}

/// A request as its approver reads it.
func requestText(_ r: ResetRequest) -> String {
  [
    "reset request \(r.requestID) for \(r.accountID):",
    "  requested by \(shown(r.requestedBy)) at \(DeskTime.shown(r.createdAt)), ticket \(shown(r.ticket))",
    "  caller verified by: \(r.verifiedVia)",
    "  reason: \(shown(r.reason))",
    "  approval needed because: \(r.approvalNeeded.joined(separator: ", ")); expires \(DeskTime.shown(r.expiresAt))",
  ].joined(separator: "\n")
}

/// The plan as an agent reads it.
func planText(_ plan: ResetOutcome, showingApproval: Bool = true) -> String {
  var lines = [
    "reset plan for \(plan.accountID), \(shown(plan.displayName)) <\(plan.email)>\(plan.highRisk ? " (HIGH RISK)" : ""):"
  ]
  lines.append(
    titledTable(
      "devices to retire", ["ID", "KIND", "LABEL", "PHONE", "STATE", "DEFAULT", "LAST USED"],
      plan.devices.map {
        [
          String($0.deviceId), $0.kind + ($0.platform.map { "/\($0)" } ?? ""), shown($0.label), $0.phone ?? "-",
          $0.state, $0.isDefault ? "yes" : "", $0.lastUsedAt.map { DeskTime.cell(iso: $0) } ?? "never",
        ]
      }, indent: "  "))
  lines.append("  activation links to revoke: \(plan.links)")
  lines.append("  remembered browsers to revoke: \(plan.browsers)")
  lines.append("  verification codes to cancel: \(plan.codes)")
  if let pending = plan.pendingRequestID {
    lines.append("  reset request \(pending) is pending for this account: it is approved or withdrawn first")
  } else if showingApproval, !plan.approvalNeeded.isEmpty {
    lines.append(
      "  a second tier-2 agent must approve (\(plan.approvalNeeded.joined(separator: ", "))): "
        + "this will make a request, not reset yet")
  }
  return lines.joined(separator: "\n")
}

func outcomeJSON(_ o: ResetOutcome) -> JSONValue {
  var members: [(String, JSONValue)] = [
    ("status", .string(o.status.rawValue)), ("account_id", .string(o.accountID)),
  ]
  switch o.status {
  case .pendingApproval:
    members += [
      ("request_id", o.requestID.map { .int($0) } ?? .null),
      ("approval_needed", .array(o.approvalNeeded.map { .string($0) })),
      ("expires_at", .string(o.requestExpiresAt)),
    ]
  case .reset:
    members += [
      ("devices_retired", .int(o.devicesRetired)), ("links_revoked", .int(o.linksRevoked)),
      ("browsers_revoked", .int(o.browsersRevoked)), ("codes_cancelled", .int(o.codesCancelled)),
      ("enrollment", .string(o.enrollment?.rawValue)),
      ("start_setup_visible", o.startSetupVisible.map { .bool($0) } ?? .null),
      ("verified_via", .string(o.verifiedVia)), ("event_id", o.eventID.map { .int($0) } ?? .null),
    ]
  case .nothingToReset:
    members += [("enrollment", .string("not_enrolled")), ("start_setup_visible", .bool(true))]
  case .dryRun:
    members += [
      (
        "devices",
        .array(
          o.devices.map { d in
            .object([
              ("device_id", .int(d.deviceId)), ("kind", .string(d.kind)), ("platform", .string(d.platform)),
              ("phone", .string(d.phone)), ("label", .string(d.label)), ("state", .string(d.state)),
              ("is_default", .bool(d.isDefault)), ("last_used_at", .string(d.lastUsedAt)),
            ])
          })
      ),
      ("links", .int(o.links)), ("browsers", .int(o.browsers)),
      ("codes", .int(o.codes)), ("approval_needed", .array(o.approvalNeeded.map { .string($0) })),
      ("pending_request_id", o.pendingRequestID.map { .int($0) } ?? .null),
    ]
  }
  return .object(members)
}

/// Prints the result of a reset or request; after a reset, waits for its notice.
func report(
  _ outcome: ResetOutcome, ticket: Ticket, waiting: DeliveryWaitOptions, db: Connection, console: Console
) throws {
  if outcome.status == .pendingApproval {
    console.emit(outcomeJSON(outcome)) {
      "not reset yet: request \(outcome.requestID.map(String.init) ?? "?") needs a different tier-2 agent's approval "
        + "(\(outcome.approvalNeeded.joined(separator: ", "))), within 24 hours:\n"
        + "  hms2fa-admin enrollment approve \(outcome.requestID.map(String.init) ?? "?") --ticket \(ticket.value)"
    }
    return
  }
  let notice = try outcome.messageID.map { try FollowedMessage($0, options: waiting, on: db) }
  var json = outcomeJSON(outcome)
  if case .object(var members) = json, let notice {
    members += notice.fields
    members.append(("notice_sent", .bool(notice.outcome == .sent)))
    json = .object(members)
  }
  console.emit(json) {
    "reset \(outcome.accountID): \(outcome.devicesRetired) device(s) retired, \(outcome.linksRevoked) link(s) and "
      + "\(outcome.browsersRevoked) remembered browser(s) revoked, \(outcome.codesCancelled) code(s) cancelled\n"
      + "enrollment: \(outcome.enrollment?.rawValue ?? "?"); \"Start setup\" \(outcome.startSetupVisible == true ? "now shows" : "is still hidden")"
      + (notice.map { "\nnotice to \(outcome.email): " + $0.line } ?? "")
  }
  try notice?.finish(failed: "the reset stands: tell the person yourself", console: console)
}
