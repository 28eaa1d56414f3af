import Postgres

#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// A message the delivery service claimed from the outbox, and what it says.
///
/// The database queued it with everything but its secret (names, devices, times, in `body`);
/// the service makes the secret, and the text is composed here, in the service's process only.
struct OutboxMessage: Sendable {
  enum Kind: String, Sendable {
    case activationLink = "activation_link"
    case phoneCode = "phone_code"
    case resetNotice = "reset_notice"
    case releaseNotice = "release_notice"
  }

  /// What the database filled in when it queued the message (never a secret).
  struct Body: Decodable, Sendable {
    struct Device: Decodable, Sendable {
      var kind: String
      var label: String?
      var phone: String?
    }
    var name: String?
    var deviceLabel: String?
    var expiresAt: String?
    var purpose: String?
    var phone: String?
    var at: String?
    var devices: [Device]?
    var linksRevoked: Int?
    var browsersRevoked: Int?
  }

  var messageID: Int64
  var kind: Kind
  var channel: String
  /// The email of record or the E.164 number, as the database queued it.
  var recipient: String
  var ticket: String
  var bodyJSON: String?
  /// This attempt's number, from 1.
  var attempt: Int
  var queuedAt: Date
  /// When what it carries stops working (links and codes).
  var expiresAt: Date?

  init(_ row: Row) throws {
    messageID = try row.decode("message_id")
    let kindName: String = try row.decode("kind")
    guard let kind = Kind(rawValue: kindName) else {
      throw DeliveryFailure("unknown kind of message \(quoted(kindName))", temporary: false)
    }
    self.kind = kind
    channel = try row.decode("channel")
    recipient = try row.decode("recipient")
    ticket = try row.decode("ticket")
    bodyJSON = try row.decode("body")
    attempt = try row.decode("attempts")
    queuedAt = try row.decode("queued_at")
    expiresAt = try row.decode("expires_at")
  }

  /// The body, decoded once it is needed.
  func body() throws(DeliveryFailure) -> Body {
    do {
      let decoder = JSONDecoder()
      decoder.keyDecodingStrategy = .convertFromSnakeCase
      return try decoder.decode(Body.self, from: Data((bodyJSON ?? "{}").utf8))
    } catch {
      throw DeliveryFailure("the message's body could not be read (\(error))", temporary: false)
    }
  }

  /// The same Message-ID on every attempt, so that a resend after a crash is recognisably the
  /// same message.
  func mailMessageID(domain: String) -> String {
    "<hms2fa.\(messageID).\(Int64(queuedAt.timeIntervalSince1970))@\(domain)>"
  }

  /// The email for this message, with `link` for an activation link.
  func email(from settings: DeliverySettings, link: String? = nil) throws(DeliveryFailure) -> MailMessage {
    let body = try body()
    let name = MailMessage.headerSafe(body.name) ?? ""
    let subject: String
    let text: String
    switch kind {
    case .activationLink:
      guard let link else { throw DeliveryFailure("an activation email without its link", temporary: false) }
      subject = "Your HMS two-factor activation link"
      text = Self.activationEmail(
        name: name, link: link, device: body.deviceLabel, expiresAt: body.expiresAt, ticket: ticket,
        zone: settings.timeZone)
    case .resetNotice:
      subject = "Your HMS two-factor authentication was reset"
      text = Self.resetNotice(name: name, body: body, ticket: ticket, zone: settings.timeZone)
    case .releaseNotice:
      subject = "A phone number was removed from your HMS two-factor authentication"
      text = Self.releaseNotice(name: name, phone: body.phone ?? "", at: body.at, zone: settings.timeZone)
    case .phoneCode:
      throw DeliveryFailure("a code goes by text message or call, not by email", temporary: false)
    }
    var message = MailMessage(
      from: settings.from, to: Mailbox(name: body.name, address: recipient), subject: subject, body: text)
    let domain = settings.from.address.split(separator: "@").last.map(String.init) ?? "localhost"
    message.messageID = mailMessageID(domain: domain)
    return message
  }

  static func activationEmail(
    name: String, link: String, device: String?, expiresAt: String?, ticket: String, zone: TimeZone
  ) -> String {
    let deviceLine = device.map { " for \"\(MailMessage.headerSafe($0) ?? "")\"" } ?? ""
    return """
      Hello \(name),

      You asked the HMS IT Service Desk (ticket \(ticket)) to email you an activation link for \
      Duo Mobile\(deviceLine), because the QR code could not be scanned.

      On the phone you are setting up, open this link and follow the steps:

      \(link)

      The link works once, until \(readable(expiresAt, in: zone)). A newer link replaces this one.

      If you did not ask for this, do not open the link: call the HMS IT Service Desk at \
      617-432-2000.

      HMS IT Service Desk
      """
  }

  static func resetNotice(name: String, body: Body, ticket: String, zone: TimeZone) -> String {
    let what = (body.devices ?? []).map { d in
      "  - \(d.kind)\(d.label.map { " \"\(MailMessage.headerSafe($0) ?? "")\"" } ?? "")"
        + (d.phone.map { " (\($0))" } ?? "")
    }
    let links = body.linksRevoked ?? 0
    let browsers = body.browsersRevoked ?? 0
    let extras = [
      links > 0 ? "  - \(links) unused activation link(s)" : nil,
      browsers > 0 ? "  - \(browsers) browser(s) remembered for 30 days" : nil,
    ].compactMap { $0 }
    let removed = what + extras
    return """
      Hello \(name),

      The HMS IT Service Desk reset your HMS two-factor authentication on \(readable(body.at, in: zone)) \
      (ticket \(ticket)). \(removed.isEmpty ? "Nothing was in use." : "These were removed:")

      \(removed.joined(separator: "\n"))

      The next time you sign in you will see "Start setup": set up your phone again then.

      If you did not ask for this, someone may be trying to take over your account: call the \
      HMS IT Service Desk at 617-432-2000 right away.

      HMS IT Service Desk
      """
  }

  static func releaseNotice(name: String, phone: String, at: String?, zone: TimeZone) -> String {
    """
    Hello \(name),

    The phone number \(phone) was removed from your HMS two-factor authentication on \
    \(readable(at, in: zone)), because its new owner proved to the HMS IT Service Desk that it is now \
    theirs.

    If that number is still yours, or you did not expect this, call the HMS IT Service Desk \
    at 617-432-2000. To add a new phone, sign in and choose "Add another device".

    HMS IT Service Desk
    """
  }

  /// The text message or call that carries `code`.
  func phoneMessage(code: SecretCode) throws(DeliveryFailure) -> PhoneMessage {
    guard kind == .phoneCode, let channel = PhoneMessage.Channel(rawValue: channel) else {
      throw DeliveryFailure("only a code goes by text message or call", temporary: false)
    }
    return PhoneMessage(to: recipient, channel: channel, body: Self.codeText(code, channel))
  }

  static func codeText(_ code: SecretCode, _ channel: PhoneMessage.Channel) -> String {
    switch channel {
    case .sms:
      return "HMS IT Service Desk: your verification code is \(code.digits). It expires in 10 minutes. "
        + "Read it only to the agent you are talking to."
    case .voice:
      return "This is the Harvard Medical School IT Service Desk. Your verification code is \(spoken(code)). "
        + "Again: \(spoken(code))."
    }
  }

  /// The code as a voice call reads it: "1, 2, 3, 4, 5, 6".
  static func spoken(_ code: SecretCode) -> String {
    code.digits.map(String.init).joined(separator: ", ")
  }

  /// `2026-11-30T19:52:07Z` as the desk's zone reads it, `2026-11-30 14:52 EST`; "today" when the
  /// time is missing.
  static func readable(_ iso: String?, in zone: TimeZone) -> String {
    guard let iso, let date = try? PointInTime(parsing: iso).date, iso.contains("T") else { return "today" }
    return DeskTime.local(date, in: zone)
  }
}
