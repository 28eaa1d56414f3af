import ArgumentParser
import HelpDesk

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

struct ActivationCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "activation",
    abstract: "Email activation links for a phone whose camera can't scan the QR code.",
    subcommands: [Send.self, List.self, Revoke.self]
  )

  struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "send",
      abstract: "Email a single-use activation link for the pending mobile device (tier1).",
      discussion: """
        The link goes to the email of record only, and is never shown: the person opens the \
        email on the phone being set up. A new link replaces the device's older ones. At most \
        five links per person per 24 hours.

        The delivery service (hms2fa-admin delivery run) makes the link and sends it; no one \
        else ever sees it. The command waits for it (--wait, default 15s) and prints \
        delivery: sent. If the email fails for good, the link is revoked and the command exits \
        69; if it is still queued when the wait ends, it says so and exits 0 (the service keeps \
        trying).

        Example:
          hms2fa-admin activation send jd123 --ticket INC0012345
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Option(help: "The device to activate, when the person has several waiting (see user show).")
    var device: Int64?

    @Option(help: ArgumentHelp("How long the link works (5m to 7d).", valueName: "duration"))
    var validFor: String = "24h"

    @OptionGroup var change: ChangeOptions
    @OptionGroup var waiting: DeliveryWaitOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let validity = try DeskDuration(parsing: validFor)
      guard validity.seconds >= 300, validity.seconds <= ActivationLinks.maximumValidity.seconds else {
        throw DeskError.usage("--valid-for must be between 5m and 7d, not \(validity)")
      }
      if let device, device <= 0 { throw DeskError.usage("--device must be a device id from user show") }
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let link = try ActivationLinks.send(
        to: id, device: device, validFor: validity, ticket: try change.parsedTicket, on: db)
      let delivery = try FollowedMessage(link.messageID, options: waiting, on: db)
      global.console.emit(
        .object(
          [
            ("account_id", .string(id.value)), ("link_id", .int(link.linkID)), ("device_id", .int(link.deviceID)),
            ("expires_at", .string(link.expiresAt.iso8601UTC())), ("sent_to", .string(link.sentTo)),
            ("superseded", .int(link.superseded)),
          ] + delivery.fields)
      ) {
        let replaced = link.superseded > 0 ? "; \(link.superseded) older link(s) no longer work" : ""
        return "activation link \(link.linkID) for device \(link.deviceID) (\(shown(link.deviceLabel))) "
          + "to \(link.sentTo), the email of record; it works once, until \(DeskTime.shown(link.expiresAt))"
          + replaced + "\n" + delivery.line
      }
      try delivery.finish(
        failed: "link \(link.linkID) was revoked; send a new one once mail works", console: global.console)
    }
  }

  struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "list",
      abstract: "List a person's activation links: outstanding, used, revoked, expired.",
      discussion: """
        Example:
          hms2fa-admin activation list jd123
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let db = try global.connectForLookup()
      let id = try key.accountID(on: db)
      let links = try ActivationLinks.list(for: id, on: db)
      global.console.emit(
        .object([
          ("account_id", .string(id.value)),
          (
            "links",
            .array(
              links.map { l in
                .object([
                  ("link_id", .int(l.linkID)), ("device_id", .int(l.deviceID)), ("state", .string(l.state)),
                  ("sent_at", .string(l.sentAt.iso8601UTC())), ("sent_by", .string(l.sentBy)),
                  ("ticket", .string(l.ticket)), ("expires_at", .string(l.expiresAt.iso8601UTC())),
                  ("used_at", .string(l.usedAt?.iso8601UTC())), ("revoked_at", .string(l.revokedAt?.iso8601UTC())),
                  ("revoked_reason", .string(l.revokedReason)),
                ])
              })
          ),
        ])
      ) {
        links.isEmpty
          ? "no activation link was ever sent to \(id)"
          : table(
            ["LINK", "DEVICE", "STATE", "SENT", "BY", "TICKET", "EXPIRES", "NOTE"],
            links.map {
              [
                String($0.linkID), String($0.deviceID), $0.state, DeskTime.cell($0.sentAt), shown($0.sentBy),
                shown($0.ticket), DeskTime.cell($0.expiresAt),
                $0.usedAt.map { "used \(DeskTime.cell($0))" }
                  ?? $0.revokedReason.map { shown($0) } ?? "",
              ]
            })
      }
    }
  }

  struct Revoke: ParsableCommand {
    static let configuration = CommandConfiguration(
      commandName: "revoke",
      abstract: "Revoke a person's outstanding activation links (tier1).",
      discussion: """
        Use it when a link went to a mailbox the person no longer controls, or they ask to stop.

        Example:
          hms2fa-admin activation revoke jd123 --ticket INC0012345 --reason "sent by mistake"
        """
    )

    @Argument(help: "HMS Account ID.")
    var account: String

    @Option(help: "Revoke only this link (see activation list).")
    var link: Int64?

    @Option(help: "Why, for the audit log.")
    var reason: String?

    @OptionGroup var change: ChangeOptions
    @OptionGroup var global: GlobalOptions

    func run() throws {
      let key = try AccountKey(parsing: account)
      let reason = try reason.map { try Reason(parsing: $0).value }
      if let link, link <= 0 { throw DeskError.usage("--link must be a link id from activation list") }
      let db = try global.connect()
      let id = try key.accountID(on: db)
      let revoked = try ActivationLinks.revoke(
        for: id, ticket: try change.parsedTicket, reason: reason, linkID: link, on: db)
      global.console.emit(.object([("account_id", .string(id.value)), ("revoked", .int(revoked))])) {
        revoked == 0
          ? "\(id) had no outstanding activation link\(link.map { " with id \($0)" } ?? ""): nothing to revoke"
          : "revoked \(revoked) activation link(s) of \(id); they no longer work"
      }
    }
  }
}
