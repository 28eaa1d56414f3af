import ArgumentParser
import HelpDesk
import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// Parses a phone number as people write it; a bad one is exit 65 (78 for a bad default region).
func parsePhone(_ text: String) throws(DeskError) -> PhoneNumber {
  do {
    return try PhoneNumber(parsing: text)
  } catch {
    throw error.deskError
  }
}

/// The code the caller reads out: the argument, or (when it is absent or `-`) a line from stdin,
/// read without echo on a terminal, so it needn't appear in the process list or shell history.
func readCode(_ argument: String?) throws(DeskError) -> String {
  if let argument, argument != "-" { return argument }
  guard let line = Console.readSecretLine(prompt: "code the person received: ") else {
    throw .usage("no code given: pass it as an argument or on stdin")
  }
  return line
}

struct PhoneCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "phone",
    abstract: "Who has a phone number, and proving that a caller owns it.",
    subcommands: [Owner.self, Verify.self, Confirm.self, Release.self]
  )

  struct Owner: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "owner",
      abstract: "Everyone with a device in use on the number, who had it before, and who proved it.",
      discussion: """
        The number may be written as people do: (617) 432-2000, 617.432.2000, +44 20 7946 0000, \
        011 44 20 7946 0000. Without a country code it belongs to HMS2FA_DEFAULT_REGION (default US).

        Example:
          hms2fa-admin phone owner "(617) 555-0188"
        """
    )

    @Argument(help: "The phone number.")
    var phone: String

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let number = try parsePhone(phone)
      let db = try global.connectForLookup()
      let owner = try PhoneVerification.owner(of: number, on: db)
      global.console.emit(.raw(owner.json)) {
        var lines = ["\(owner.phone)  (\(number.international))"]
        lines.append(
          owner.accounts.isEmpty
            ? "\nin use: by nobody"
            : "\nin use:\n"
              + table(
                ["ACCOUNT", "NAME", "DEVICE", "KIND", "LABEL", "STATE", "SINCE", "LAST USED"],
                owner.accounts.map {
                  [
                    $0.accountId, shown($0.displayName), String($0.deviceId), $0.kind, shown($0.label), $0.state,
                    $0.since, $0.lastUsedAt ?? "never",
                  ]
                }, indent: "  "))
        if !owner.history.isEmpty {
          lines.append(
            "\nbefore:\n"
              + table(
                ["ACCOUNT", "DEVICE", "KIND", "SINCE", "RETIRED", "WHY"],
                owner.history.map {
                  [$0.accountId, String($0.deviceId), $0.kind, $0.since, $0.retiredAt, shown($0.retiredReason)]
                }, indent: "  "))
        }
        lines.append(
          owner.verifications.isEmpty
            ? "\nverifications: none"
            : "\nverifications:\n"
              + table(
                ["ID", "ACCOUNT", "PURPOSE", "AT", "VIA", "BY", "RESULT"],
                owner.verifications.map {
                  [String($0.verificationId), $0.accountId, $0.purpose, $0.at, $0.channel, shown($0.actor), $0.state]
                }, indent: "  "))
        return lines.joined(separator: "\n")
      }
    }
  }

  struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "verify",
      abstract: "Send a 6-digit code to a phone the caller says is theirs (tier1).",
      discussion: """
        The code goes by text message (--via sms) or a voice call that reads it out (--via voice). \
        The delivery service makes and sends it; no one else ever sees it. The command waits for \
        it (--wait) and prints delivery: sent. It works for 10 minutes; a new code replaces the \
        old one; at most 3 codes per number per hour. Then ask the caller for it and run phone \
        confirm.

        Example:
          hms2fa-admin phone verify cd222 "617-555-0188" --via sms --ticket INC0012345
        """
    )

    @Argument(help: "HMS Account ID of the caller.")
    var account: String

    @Argument(help: "The phone number.")
    var phone: String

    @Option(help: "sms or voice.")
    var via: PhoneMessage.Channel

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let number = try parsePhone(phone)
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let ticket = try change.parsedTicket
      let sent = try PhoneVerification.verify(id, phone: number, via: via, ticket: ticket, on: db)
      try emitSent(
        sent, account: id, channel: via, waiting: waiting, db: db, console: global.console,
        next: "phone confirm \(id) \(sent.phone) --ticket \(ticket)")
    }
  }

  struct Confirm: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "confirm",
      abstract: "Check the code the caller received (tier1; --release needs tier2).",
      discussion: """
        Five tries end the code. When the number is on a device of another account, the result \
        says so; with --release (tier2) those devices are retired ("number reassigned") and each \
        former holder is sent a notice at their email of record, in the same transaction; the \
        command waits for the notices (--wait).

        Leave out CODE (or give -) to type it at a prompt without echo, or pipe it on stdin.

        Example:
          hms2fa-admin phone confirm cd222 "617-555-0188" --ticket INC0012345
          hms2fa-admin phone confirm cd222 +16175550188 --ticket INC0012345 --release
        """
    )

    @Argument(help: "HMS Account ID of the caller.")
    var account: String

    @Argument(help: "The phone number.")
    var phone: String

    @Argument(help: "The 6-digit code (omit or - to read it from stdin).")
    var code: String?

    @Flag(help: "Retire other accounts' devices on this number and notify them (tier2).")
    var release = false

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let number = try parsePhone(phone)
      let codeText = try readCode(code)
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let ticket = try change.parsedTicket
      let result = try PhoneVerification.confirm(
        id, purpose: .ownership, phone: number, code: codeText, ticket: ticket, release: release, on: db)
      let notices = try ReleaseNotices(result.released, waiting: waiting, db: db)
      let others = result.otherHolders.map { "\($0.accountId) (device \($0.deviceId))" }
      global.console.emit(
        .object(
          [
            ("account_id", .string(id.value)), ("phone", .string(result.phone)), ("verified", .bool(true)),
            (
              "other_holders",
              .array(
                result.otherHolders.map {
                  .object([("account_id", .string($0.accountId)), ("device_id", .int($0.deviceId))])
                }
              )
            ),
            ("released_from", .array(result.released.map { .string($0.accountId) })),
          ] + notices.fields)
      ) {
        var text = "verified: \(id) owns \(result.phone)"
        if !result.released.isEmpty {
          text +=
            "\nreleased the number from \(result.released.map(\.accountId).joined(separator: ", ")) "
            + "(devices retired: number reassigned); each is sent a notice" + notices.lines
        } else if !others.isEmpty {
          text +=
            "\nthe number is still on a device of another account: \(others.joined(separator: ", "))"
            + "\na tier-2 agent can release it within 15 minutes, on this proof: hms2fa-admin phone release "
            + "\(id) \(result.phone) --ticket \(ticket)"
        }
        return text
      }
      try notices.finish(console: global.console)
    }
  }

  struct Release: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "release",
      abstract: "Release a number from its other holders, on a proof confirmed in the last 15 minutes (tier2).",
      discussion: """
        Relies on the caller's ownership proof for the number that an agent (tier 1 is enough) \
        confirmed with phone confirm in the last 15 minutes: no second code. Retires the devices \
        of every other account that has the number in use ("number reassigned") and sends each a \
        notice, in one transaction; refused for a high-risk holder (reset that account instead). \
        The proof is spent.

        Example:
          hms2fa-admin phone release cd222 "617-555-0188" --ticket INC0012345
        """
    )

    @Argument(help: "HMS Account ID (or email of record) of the caller who proved the number.")
    var account: String

    @Argument(help: "The phone number.")
    var phone: String

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let number = try parsePhone(phone)
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let result = try PhoneVerification.release(id, phone: number, ticket: try change.parsedTicket, on: db)
      let notices = try ReleaseNotices(result.released, waiting: waiting, db: db)
      global.console.emit(
        .object(
          [
            ("account_id", .string(id.value)), ("phone", .string(number.e164)),
            ("verification_id", .int(result.verificationID)), ("verified_by", .string(result.verifiedBy)),
            ("released_from", .array(result.released.map { .string($0.accountId) })),
          ] + notices.fields)
      ) {
        "released \(number.e164) from \(result.released.map(\.accountId).joined(separator: ", ")) "
          + "(devices retired: number reassigned), on the proof \(result.verificationID) confirmed by "
          + "\(shown(result.verifiedBy)); each is sent a notice" + notices.lines
      }
      try notices.finish(console: global.console)
    }
  }
}

/// Waits for a code's message, then prints what was queued and how its delivery went.
func emitSent(
  _ sent: SentCode, account: AccountID, channel: PhoneMessage.Channel, waiting: DeliveryWaitOptions, db: Connection,
  console: Console, next: String
) throws {
  let delivery = try FollowedMessage(sent.messageID, options: waiting, on: db)
  console.emit(
    .object(
      [
        ("account_id", .string(account.value)), ("verification_id", .int(sent.verificationID)),
        ("phone", .string(sent.phone)), ("channel", .string(channel.rawValue)),
        ("device_id", sent.deviceID.map { .int($0) } ?? .null),
        ("expires_at", .string(sent.expiresAt.iso8601UTC())), ("replaced", .int(sent.replaced)),
      ] + delivery.fields)
  ) {
    "a code by \(channel == .sms ? "text message" : "voice call") to \(sent.phone) "
      + "(verification \(sent.verificationID), works until \(DeskTime.shown(sent.expiresAt))"
      + (sent.replaced > 0 ? "; the earlier code no longer works" : "") + ")\n" + delivery.line
      + (delivery.outcome == DeliveryOutcome.sent
        ? "\nask the person to read it to you, then: hms2fa-admin \(next)   (it asks for the code)" : "")
  }
  try delivery.finish(failed: "the code was cancelled; send a new one once the gateway works", console: console)
}

struct IdentityCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "identity",
    abstract: "Check a caller's identity with a code sent to a phone already on file.",
    discussion: """
      The proof lasts 15 minutes; enrollment reset --verified-via code-on-file needs it.
      """,
    subcommands: [Check.self, Confirm.self]
  )

  struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "check",
      abstract: "Send a code to the account's default phone, or to one of its phones by --device (tier1).",
      discussion: """
        Never to a number the caller gives: only to a phone on file for the account.

        Example:
          hms2fa-admin identity check jd123 --via voice --ticket INC0012345
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Option(help: "A phone of the account's, by device id (see user show); default: its default device.")
    var device: Int64?

    @Option(help: "sms or voice.")
    var via: PhoneMessage.Channel

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      if let device, device <= 0 { throw DeskError.usage("--device must be a device id from user show") }
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let ticket = try change.parsedTicket
      let sent = try PhoneVerification.identityCheck(id, device: device, via: via, ticket: ticket, on: db)
      try emitSent(
        sent, account: id, channel: via, waiting: waiting, db: db, console: global.console,
        next: "identity confirm \(id) --ticket \(ticket)")
    }
  }

  struct Confirm: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "confirm",
      abstract: "Check the code; a right one is an identity proof for 15 minutes (tier1).",
      discussion: """
        Leave out CODE (or give -) to type it at a prompt without echo, or pipe it on stdin.

        Example:
          hms2fa-admin identity confirm jd123 --ticket INC0012345
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Argument(help: "The 6-digit code (omit or - to read it from stdin).")
    var code: String?

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let codeText = try readCode(code)
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let result = try PhoneVerification.confirm(
        id, purpose: .identity, phone: nil, code: codeText, ticket: try change.parsedTicket, on: db)
      global.console.emit(
        .object([
          ("account_id", .string(id.value)), ("phone", .string(result.phone)), ("verified", .bool(true)),
          ("proof_valid_until", .string(result.proofValidUntil.iso8601UTC())),
        ])
      ) {
        "verified: the caller received the code sent to \(result.phone), on file for \(id); "
          + "the proof lasts 15 minutes (enrollment reset --verified-via code-on-file)"
      }
    }
  }
}

/// The notices a release queued to the numbers' former holders, followed with one wait.
struct ReleaseNotices {
  var followed: [(holder: ReleasedHolder, notice: FollowedMessage)]

  init(_ released: [ReleasedHolder], waiting: DeliveryWaitOptions, db: Connection) throws {
    let deadline = Date().addingTimeInterval(try waiting.seconds)
    followed = try released.map { holder in
      (holder, try FollowedMessage(holder.messageID, wait: max(0, deadline.timeIntervalSinceNow), on: db))
    }
  }

  /// `notices` and `notices_failed`, for the JSON document.
  var fields: [(String, JSONValue)] {
    let failed = followed.filter { if case .failed = $0.notice.outcome { true } else { false } }
    return [
      ("notices", .array(followed.map { .object([("account_id", .string($0.holder.accountId))] + $0.notice.fields) })),
      ("notices_failed", .int(failed.count)),
    ]
  }

  /// A line a notice, each starting with a line break.
  var lines: String {
    followed.map { "\nnotice to \($0.holder.accountId): \($0.notice.line)" }.joined()
  }

  /// A warning for a notice still queued, exit 69 for one that failed (the release stands).
  func finish(console: Console) throws {
    for (_, notice) in followed {
      try notice.finish(failed: "the release stands: tell the former holder yourself", console: console)
    }
  }
}
