import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// How mail leaves the desk (`HMS2FA_MAILER`).
public enum Mailer: Sendable, Equatable {
  /// A sendmail-compatible program, run as `PROGRAM -oi -f BOUNCE -- RECIPIENT` with the message
  /// on stdin: the recipient is the argument, never read from the headers (`-t`).
  case sendmail(program: String)
  /// One file per message under `DIR/new/`, written in `DIR/tmp/` first.
  case maildir(directory: String)

  public static let defaultSendmail = "/usr/sbin/sendmail"

  /// Reads `HMS2FA_MAILER`: `sendmail` (default), `sendmail:PROGRAM` or `maildir:DIR`.
  ///
  /// - Throws: a configuration `DeskError` (78) for anything else, or a program that can't run.
  public static func fromEnvironment(_ environment: [String: String]) throws(DeskError) -> Mailer {
    let setting = environment["HMS2FA_MAILER"] ?? "sendmail"
    let mailer: Mailer
    if setting == "sendmail" {
      mailer = .sendmail(program: defaultSendmail)
    } else if setting.hasPrefix("sendmail:"), setting.count > 9 {
      mailer = .sendmail(program: String(setting.dropFirst(9)))
    } else if setting.hasPrefix("maildir:"), setting.count > 8 {
      mailer = .maildir(directory: String(setting.dropFirst(8)))
    } else {
      throw DeskError(
        .configuration,
        "HMS2FA_MAILER=\(quoted(setting)) is not a mail transport: use sendmail, sendmail:/path/to/program "
          + "or maildir:/path/to/dir")
    }
    if case .sendmail(let program) = mailer {
      guard program.hasPrefix("/"), access(program, X_OK) == 0 else {
        throw DeskError(
          .configuration,
          "the mail program \(quoted(program)) is not an executable file (HMS2FA_MAILER); install a sendmail "
            + "or set HMS2FA_MAILER=sendmail:/path/to/program or maildir:/path/to/dir")
      }
    }
    return mailer
  }

  /// Hands the message over to `message.to.address` alone; returns once the transport has
  /// accepted it. `bounce` is the envelope sender, where a mail server returns what it can't
  /// deliver (a maildir has no envelope and ignores it).
  ///
  /// - Throws: `DeliveryFailure` when the recipient or the bounce address is not an address
  ///   under the one rule (`EmailAddress.flaw(in:)`; nothing is run or written then), the
  ///   program fails or hangs past `timeout` seconds, or the maildir can't be written.
  /// `secrets` (a link's token) are blanked out of anything the program printed that ends up in
  /// the failure's reason.
  public func deliver(
    _ message: MailMessage, bounce: String, timeout: Double, secrets: [String] = []
  ) throws(DeliveryFailure) {
    // The database and the roster import hold emails of record to the rule already; this is the
    // last stop before a mail program, which would read a comma or angle brackets as more
    // recipients.
    let recipient = message.to.address
    if let flaw = Mailbox.addressFlaw(recipient) {
      throw DeliveryFailure("the recipient \(quoted(recipient)) \(flaw); nothing was sent")
    }
    switch self {
    case .sendmail(let program):
      if let flaw = Mailbox.addressFlaw(bounce) {
        throw DeliveryFailure("the bounce address \(quoted(bounce)) \(flaw); nothing was sent")
      }
      try DeliveryProgram.run(
        [program, "-oi", "-f", bounce, "--", recipient], input: message.rendered(), timeout: timeout, secrets: secrets)
    case .maildir(let directory):
      for sub in ["", "/tmp", "/new", "/cur"] { try ensureDirectory(directory + sub) }
      let name = uniqueFileName()
      try writeAtomically(
        message.rendered(), stagedPath: "\(directory)/tmp/\(name)", finalPath: "\(directory)/new/\(name)")
    }
  }

  public var description: String {
    switch self {
    case .sendmail(let program): "sendmail (\(program))"
    case .maildir(let directory): "maildir \(directory)"
    }
  }
}

/// A text message or a voice call for a phone.
public struct PhoneMessage: Sendable {
  public enum Channel: String, Sendable, CaseIterable {
    case sms
    case voice
  }

  /// E.164 number.
  public var to: String
  public var channel: Channel
  public var body: String

  public init(to: String, channel: Channel, body: String) {
    self.to = to
    self.channel = channel
    self.body = body
  }

  /// `{"to":…,"channel":…,"body":…}` and a newline.
  func json() -> [UInt8] {
    let document = JSONValue.object([
      ("to", .string(to)), ("channel", .string(channel.rawValue)), ("body", .string(body)),
    ])
    return Array((document.text + "\n").utf8)
  }
}

/// How text messages and voice calls leave the desk (`HMS2FA_SMS`).
public enum SMSGateway: Sendable, Equatable {
  /// A program given one JSON object on stdin; exit 0 means the gateway accepted it.
  case command(program: String)
  /// One JSON file per message in the directory (written as a dot-file first, then renamed).
  case spool(directory: String)

  /// Reads `HMS2FA_SMS`: `command:PROGRAM` or `spool:DIR`.
  ///
  /// - Throws: a configuration `DeskError` (78) when unset or not one of those.
  public static func fromEnvironment(_ environment: [String: String]) throws(DeskError) -> SMSGateway {
    guard let setting = environment["HMS2FA_SMS"], !setting.isEmpty else {
      throw DeskError(
        .configuration,
        "no SMS or voice gateway is configured: set HMS2FA_SMS=command:/path/to/program or spool:/path/to/dir")
    }
    if setting.hasPrefix("command:"), setting.count > 8 {
      let program = String(setting.dropFirst(8))
      guard program.hasPrefix("/"), access(program, X_OK) == 0 else {
        throw DeskError(
          .configuration, "the SMS program \(quoted(program)) is not an executable file (HMS2FA_SMS)")
      }
      return .command(program: program)
    }
    if setting.hasPrefix("spool:"), setting.count > 6 {
      return .spool(directory: String(setting.dropFirst(6)))
    }
    throw DeskError(
      .configuration,
      "HMS2FA_SMS=\(quoted(setting)) is not a gateway: use command:/path/to/program or spool:/path/to/dir")
  }

  /// - Throws: `DeliveryFailure` when the gateway refuses, hangs past `timeout`, or the spool
  ///   can't be written.
  /// `secrets` (the code, in every form the message spells it) are blanked out of anything the
  /// gateway printed that ends up in the failure's reason.
  public func deliver(_ message: PhoneMessage, timeout: Double, secrets: [String] = []) throws(DeliveryFailure) {
    switch self {
    case .command(let program):
      try DeliveryProgram.run([program], input: message.json(), timeout: timeout, secrets: secrets)
    case .spool(let directory):
      try ensureDirectory(directory)
      let name = uniqueFileName()
      try writeAtomically(
        message.json(), stagedPath: "\(directory)/.\(name).tmp", finalPath: "\(directory)/\(name).json")
    }
  }
}

/// Settings of outgoing messages, from the environment.
public struct DeliverySettings: Sendable {
  /// The sender of every email (`HMS2FA_MAIL_FROM`).
  public var from: Mailbox
  /// Base of activation links, without a trailing slash (`HMS2FA_ACTIVATION_URL`).
  public var activationURL: String
  /// Seconds a delivery program may take (`HMS2FA_DELIVERY_TIMEOUT`, default 30s).
  public var timeout: Double
  /// The envelope sender of every email, where bounces go (`HMS2FA_MAIL_BOUNCE`, default the
  /// From address).
  public var bounce: String
  /// The zone of the times in notices (`HMS2FA_TIMEZONE`, default America/New_York).
  public var timeZone: TimeZone

  public static let defaultFrom = "HMS IT Service Desk <itservicedesk@hms.harvard.edu>"
  public static let defaultActivationURL = "https://my.hms.harvard.edu/2fa/activate"

  /// `bounce` nil: the From address.
  public init(
    from: Mailbox, activationURL: String, timeout: Double, bounce: String? = nil,
    timeZone: TimeZone = TimeZone(identifier: "America/New_York") ?? .gmt
  ) {
    self.from = from
    self.activationURL = activationURL
    self.timeout = timeout
    self.bounce = bounce ?? from.address
    self.timeZone = timeZone
  }

  /// - Throws: a configuration `DeskError` (78) for a setting that can't be used.
  public static func fromEnvironment(_ environment: [String: String]) throws(DeskError) -> DeliverySettings {
    let fromText = environment["HMS2FA_MAIL_FROM"] ?? defaultFrom
    guard let from = Mailbox(parsing: fromText) else {
      throw DeskError(
        .configuration, "HMS2FA_MAIL_FROM=\(quoted(fromText)) is not a mailbox: write e.g. \(defaultFrom)")
    }
    let bounce = environment["HMS2FA_MAIL_BOUNCE"] ?? from.address
    if let flaw = Mailbox.addressFlaw(bounce) {
      throw DeskError(
        .configuration, "HMS2FA_MAIL_BOUNCE=\(quoted(bounce)) \(flaw); write a bare address, e.g. \(from.address)")
    }
    var url = environment["HMS2FA_ACTIVATION_URL"] ?? defaultActivationURL
    while url.hasSuffix("/") { url.removeLast() }
    let isLoopback = url.hasPrefix("http://localhost") || url.hasPrefix("http://127.0.0.1")
    guard url.hasPrefix("https://") || isLoopback, url.count > 8,
      url.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
    else {
      throw DeskError(
        .configuration,
        "HMS2FA_ACTIVATION_URL=\(quoted(url)) is not an https URL; links must not travel in clear text")
    }
    var timeout = 30.0
    if let text = environment["HMS2FA_DELIVERY_TIMEOUT"] {
      guard let duration = try? DeskDuration(parsing: text), duration.seconds <= 3_600 else {
        throw DeskError(
          .configuration, "HMS2FA_DELIVERY_TIMEOUT=\(quoted(text)) is not a duration of at most 1h (e.g. 30s)")
      }
      timeout = Double(duration.seconds)
    }
    let zone = try DeskTime.notices(environment: { environment[$0] })
    return DeliverySettings(from: from, activationURL: url, timeout: timeout, bounce: bounce, timeZone: zone)
  }
}
