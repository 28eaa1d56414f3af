import Foundation
import Postgres
import TestSupport
import Testing

@testable import HelpDesk

/// The one address rule of the registry, the roster import and the mailer, and mail handed to a
/// real exim with the recipient as an argument.
@Suite("the email address rule")
struct AddressRuleTests {
  typealias Registry = RosterImportTests.Registry

  /// The longest address: 64 + 1 + 2 × 64 + 61 = 254 bytes.
  static let longest =
    String(repeating: "a", count: 64) + "@" + String(repeating: String(repeating: "b", count: 63) + ".", count: 2)
    + String(repeating: "c", count: 61)

  /// Texts and whether each is an address under the rule. None starts or ends with a space or a
  /// line break, which `EmailAddress(parsing:)` and the roster import trim away (`surrounded` has those).
  static let verdicts: [(text: String, isAddress: Bool)] = [
    ("jd123@hms.harvard.edu", true),
    ("Jane.Doe@HMS.Harvard.EDU", true),
    ("a+tag@sub.example.org", true),
    ("o'brien@x.edu", true),
    ("!#$%&'*+/=?^_`{|}~-@x-y.edu", true),
    ("a@b.cd", true),
    ("x@a1.b2.c3", true),
    ("u@xn--bcher-kva.example", true),
    ("1@2.3", true),
    (longest, true),
    (longest + "c", false),
    ("attacker>,<x@hms.harvard.edu", false),
    ("x@hms.harvard.edu, y@evil.example", false),
    ("x@hms.harvard.edu,y@evil.example", false),
    ("\"a b\"@x.edu", false),
    ("\"ab\"@x.edu", false),
    ("Jane <j@x.edu>", false),
    ("<j@x.edu>", false),
    ("Jane<j@x.edu>", false),
    ("j@x.edu (Jane)", false),
    ("a@b", false),
    ("a@localhost", false),
    ("a..b@x.edu", false),
    (".a@x.edu", false),
    ("a.@x.edu", false),
    ("a@x..edu", false),
    ("a@.x.edu", false),
    ("a@x.edu.", false),
    ("a@-x.edu", false),
    ("a@x-.edu", false),
    ("a@x.-edu", false),
    ("a@x.edu-", false),
    ("a@x_y.edu", false),
    ("a@[127.0.0.1]", false),
    ("a@@x.edu", false),
    ("a@b@x.edu", false),
    ("@x.edu", false),
    ("a@", false),
    ("jd123", false),
    ("", false),
    ("a b@x.edu", false),
    ("a\t@x.edu", false),
    ("a\n@x.edu", false),
    ("j@x.edu\r\nBcc: e@evil.example", false),
    ("a\u{7F}@x.edu", false),
    ("a\u{1B}[2J@x.edu", false),
    ("a\u{85}@x.edu", false),
    ("jé@x.edu", false),
    ("j@bücher.example", false),
    ("\u{FF41}@x.edu", false),  // fullwidth a
    ("a@x.edu\u{200B}", false),
    ("a;b@x.edu", false),
    ("a:b@x.edu", false),
    ("a\\b@x.edu", false),
    ("a[b]@x.edu", false),
    ("a%b@x.edu;c@evil.example", false),
  ]

  /// Texts the rule refuses but a typed address and an email of record take, once trimmed.
  static let surrounded = [" jd@hms.harvard.edu", "jd@hms.harvard.edu\n", "\tjd@hms.harvard.edu\r\n"]

  /// The domain in lowercase, the local part as it is.
  static func normalised(_ text: String) -> String {
    guard let at = text.lastIndex(of: "@") else { return text }
    return String(text[...at]) + text[text.index(after: at)...].lowercased()
  }

  @Test("Swift: the registry's, the import's, the look-up's and the mailer's checks agree on every text")
  func swiftVerdicts() throws {
    for (text, isAddress) in Self.verdicts {
      let label = text.debugDescription
      #expect((EmailAddress.flaw(in: Array(text.utf8)) == nil) == isAddress, "\(label)")
      #expect(Mailbox.isAddress(text) == isAddress, "\(label)")
      if isAddress {
        #expect(try EmailAddress(parsing: text).value == text, "\(label)")
        #expect(Mailbox(parsing: "Desk <\(text)>")?.address == text, "\(label)")
      } else {
        let typed = #expect(throws: DeskError.self, "\(label)") { try EmailAddress(parsing: text) }
        #expect(typed?.status == .usage, "\(label)")
        #expect(typed?.message.contains("\n") == false, "\(label)")
        #expect((typed?.message.count ?? 0) < 200, "\(label)")
      }
    }
    for text in Self.surrounded {
      #expect(EmailAddress.flaw(in: Array(text.utf8)) != nil)
      #expect(try EmailAddress(parsing: text).value == "jd@hms.harvard.edu")
    }
  }

  @Test("the errors say what is wrong, in one line")
  func messages() throws {
    let expected = [
      ("attacker>,<x@hms.harvard.edu", "contains '>': only a bare address is allowed"),
      ("x@hms.harvard.edu, y@evil.example", "contains ','"),
      ("a,b@x.edu", "contains ','"),
      ("\"a b\"@x.edu", "contains '\"'"),
      ("Jane <j@x.edu>", "contains a space or a control character"),
      ("a@b", "has no valid domain (e.g. hms.harvard.edu) after the '@'"),
      ("a..b@x.edu", "has a '.' at the start, or two in a row, before the '@'"),
      ("a.@x.edu", "has a '.' right before the '@'"),
      ("a@b@x.edu", "has more than one '@'"),
      ("jd123.hms.harvard.edu", "is not an email address (no '@')"),
      ("@x.edu", "has nothing before the '@'"),
      ("a@x_y.edu", "has '_' after the '@', where only letters, digits, '-' and '.' may be"),
      ("a@-x.edu", "has a domain label starting with '-'"),
      ("a@x-.edu", "has a domain label ending in '-'"),
      ("jé@x.edu", "is not plain ASCII"),
      ("a\u{1B}[2J@x.edu", "contains a space or a control character"),
      ("", "is empty"),
    ]
    for (text, words) in expected {
      let error = #expect(throws: DeskError.self) { try EmailAddress(parsing: text) }
      #expect(error?.message.contains(words) == true, "\(text.debugDescription): \(error?.message ?? "")")
      #expect(error?.message.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F } == true)
    }
    let typed = #expect(throws: DeskError.self) { try AccountKey(parsing: "Jane <j@x.edu>") }
    #expect(typed?.message == "'Jane <j@x.edu>' contains a space or a control character")
  }

  @Test("SQL: hms2fa.is_email_address gives the same verdicts; accounts and the roster import hold to it")
  func sqlVerdicts() throws {
    let registry = try Registry(accounts: [])
    let admin = registry.admin
    for (number, (text, isAddress)) in Self.verdicts.enumerated() {
      let label = text.debugDescription
      let verdict = try admin.queryFirst("SELECT hms2fa.is_email_address(\(text)) AS ok")
      #expect(try verdict?.decode("ok", as: Bool.self) == isAddress, "\(label)")
      // As the superuser, who passes every grant: only the constraint stands in the way.
      let id = "r\(number)"
      var refusal: PostgresError?
      do {
        _ = try admin.execute(
          "INSERT INTO hms2fa.accounts (account_id, display_name, email) VALUES (\(id), 'Person', \(text))")
      } catch {
        refusal = error
      }
      #expect(refusal?.sqlState == (isAddress ? nil : SQLState.checkViolation), "\(label)")
      #expect(refusal.map { $0.constraint == "email_format" } ?? true, "\(label)")
      // The roster import takes it as an email of record, the domain lowercased, or refuses it.
      let quoted = "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
      let imported = Result { try registry.importing(["i\(number),Person,\(quoted),active,false"]) }
      if isAddress {
        #expect(try imported.get().added == 1, "\(label)")
        #expect(try registry.account("i\(number)")?.decode("email", as: String.self) == Self.normalised(text))
      } else {
        let error = #expect(throws: DeskError.self, "\(label)") { try imported.get() }
        #expect(error?.message.hasPrefix("line 2, column 3 (email)") == true, "\(label): \(error?.message ?? "")")
      }
    }
    // Changing an email to one that breaks the rule is refused too.
    try Fixtures.account("jd123", on: admin)
    let update = #expect(throws: PostgresError.self) {
      try admin.execute(
        "UPDATE hms2fa.accounts SET email = 'attacker>,<x@hms.harvard.edu' WHERE account_id = 'jd123'")
    }
    #expect(update?.sqlState == SQLState.checkViolation)
    // Nobody but the owner may call it.
    let grants = try admin.queryFirst(
      """
      SELECT has_function_privilege('public', 'hms2fa.is_email_address(text)', 'EXECUTE')
             OR has_function_privilege('hms2fa_batch', 'hms2fa.is_email_address(text)', 'EXECUTE') AS public,
             p.provolatile = 'i' AS immutable, p.proowner = 'hms2fa_owner'::regrole AS owned,
             p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'] AS pinned
        FROM pg_proc p WHERE p.oid = 'hms2fa.is_email_address(text)'::regprocedure
      """)
    #expect(try grants?.decode("public", as: Bool.self) == false)
    #expect(try grants?.decode("immutable", as: Bool.self) == true)
    #expect(try grants?.decode("owned", as: Bool.self) == true)
    #expect(try grants?.decode("pinned", as: Bool.self) == true)
  }

  @Test("the roster import refuses a row whose email breaks the rule (65) and changes nothing")
  func rosterImport() throws {
    let registry = try Registry()
    let before = try registry.snapshot()
    for email in ["\"attacker>,<x@hms.harvard.edu\"", "\"Jane <j@x.edu>\"", "a1@b", "a..1@hms.harvard.edu", "jé@x.edu"]
    {
      let rows = ["a0,Ann,a0@hms.harvard.edu,active,false", "a1,Ann,\(email),active,false"]
      let error = #expect(throws: DeskError.self, "\(email)") { try registry.importing(rows) }
      #expect(error?.status == .dataError, "\(email)")
      #expect(error?.message.hasPrefix("line 3, column 3 (email): ") == true, "\(error?.message ?? "")")
      #expect(try registry.snapshot() == before, "\(email)")
    }
    // The command exits 65 with one line.
    let path = try registry.file(
      RosterImportTests.header + "\nj1,Jay,\"attacker>,<x@hms.harvard.edu\",active,false\n")
    let out = try Tool.run([
      "accounts", "import", path, "--database", try registry.database.conninfo(user: registry.batch),
    ])
    #expect(out.status == 65, "\(out.stderr)")
    #expect(
      out.stderr == "hms2fa-admin: line 2, column 3 (email): 'attacker>,<x@hms.harvard.edu' is not a single email "
        + "address (e.g. jd123@hms.harvard.edu: no name, comma, angle bracket, quote or space); nothing was "
        + "imported; correct the export and run the import again\n")
    #expect(try registry.snapshot() == before)
  }

  @Test("a bounce address: HMS2FA_MAIL_BOUNCE, the From address by default, under the rule (78 otherwise)")
  func bounceSetting() throws {
    #expect(try DeliverySettings.fromEnvironment([:]).bounce == "itservicedesk@hms.harvard.edu")
    let from = ["HMS2FA_MAIL_FROM": "Desk <desk@hms.harvard.edu>"]
    #expect(try DeliverySettings.fromEnvironment(from).bounce == "desk@hms.harvard.edu")
    let set = try DeliverySettings.fromEnvironment(
      from.merging(["HMS2FA_MAIL_BOUNCE": "bounces@hms.harvard.edu"]) { $1 })
    #expect(set.bounce == "bounces@hms.harvard.edu")
    for bad in ["", "Desk <bounces@hms.harvard.edu>", "bounces@hms", "a@b.cd,c@evil.example", "-oQ/tmp@x.edu "] {
      let error = #expect(throws: DeskError.self) { try DeliverySettings.fromEnvironment(["HMS2FA_MAIL_BOUNCE": bad]) }
      #expect(error?.status == .configuration, "\(bad)")
      #expect(error?.message.hasPrefix("HMS2FA_MAIL_BOUNCE=") == true, "\(error?.message ?? "")")
    }
    let from2 = #expect(throws: DeskError.self) {
      try DeliverySettings.fromEnvironment(["HMS2FA_MAIL_FROM": "Desk <desk@hms.harvard.edu>, x@evil.example"])
    }
    #expect(from2?.status == .configuration)
  }

  @Test("a recipient or bounce address that breaks the rule is refused before any program runs or file is written")
  func refusedBeforeDelivery() throws {
    let dir = try scratchDirectory("refused")
    let program = try script("touch \(dir)/ran; cat > /dev/null", in: dir)
    let from = Mailbox(name: "Desk", address: "desk@hms.harvard.edu")
    for mailer in [Mailer.sendmail(program: program), .maildir(directory: dir + "/Maildir")] {
      for bad in ["attacker>,<x@hms.harvard.edu", "x@hms.harvard.edu -oQ/tmp", "-bd@x.edu x@y.edu", "a@b"] {
        let message = MailMessage(from: from, to: Mailbox(name: "Jane", address: bad), subject: "s", body: "b")
        let error = #expect(throws: DeliveryFailure.self) {
          try mailer.deliver(message, bounce: "desk@hms.harvard.edu", timeout: 5)
        }
        #expect(error?.reason.hasPrefix("the recipient '") == true, "\(error?.reason ?? "")")
        #expect(error?.reason.hasSuffix("; nothing was sent") == true, "\(error?.reason ?? "")")
      }
    }
    let message = MailMessage(from: from, to: Mailbox(address: "jd@hms.harvard.edu"), subject: "s", body: "b")
    let bounce = #expect(throws: DeliveryFailure.self) {
      try Mailer.sendmail(program: program).deliver(message, bounce: "x@y.edu -t", timeout: 5)
    }
    #expect(bounce?.reason.hasPrefix("the bounce address 'x@y.edu -t' contains a space") == true)
    #expect(!FileManager.default.fileExists(atPath: dir + "/ran"))
    #expect(!FileManager.default.fileExists(atPath: dir + "/Maildir"))
  }

  @Test(
    "exim, through its sendmail interface, delivers to the recipient alone, with the bounce address as the envelope sender",
    .enabled(if: PrivateExim.usable, "exim can't deliver for a user who isn't root on this machine (-C refused)"))
  func exim() throws {
    let exim = try PrivateExim()
    let mailer = Mailer.sendmail(program: exim.sendmail)
    // Whatever the headers say, only the argument is a recipient: a display name full of
    // addresses reaches nobody.
    let message = MailMessage(
      from: Mailbox(name: "HMS IT Service Desk", address: "itservicedesk@hms.harvard.edu"),
      to: Mailbox(name: "Eve <eve@evil.example>, mallory@evil.example", address: "jane_doe@hms.harvard.edu"),
      subject: "Your activation link", body: "Hello Jane")
    try mailer.deliver(message, bounce: "bounces@hms.harvard.edu", timeout: 20)
    let delivered = try exim.mailbox()
    #expect(delivered.count == 1, "\(delivered)")
    let mail = try #require(delivered.first)
    #expect(mail["envelope_to"] as? String == "jane_doe@hms.harvard.edu")
    #expect(mail["return_path"] as? String == "<bounces@hms.harvard.edu>")
    #expect(mail["to"] as? [String] == ["jane_doe@hms.harvard.edu"])
    #expect(mail["subject"] as? String == "Your activation link")

    // The address of the report: refused before exim runs at all.
    try FileManager.default.removeItem(atPath: exim.ran)
    let attack = MailMessage(
      from: message.from, to: Mailbox(name: "Jane", address: "attacker@evil.example>,<x@hms.harvard.edu"),
      subject: "Your activation link", body: "Hello")
    let error = #expect(throws: DeliveryFailure.self) {
      try mailer.deliver(attack, bounce: "bounces@hms.harvard.edu", timeout: 20)
    }
    #expect(error?.reason.contains("nothing was sent") == true)
    #expect(!FileManager.default.fileExists(atPath: exim.ran))
    #expect(try exim.mailbox().count == 1)
  }
}

/// exim with a configuration of its own (`-C`): spool, log and one mbox in a scratch folder, every
/// address accepted and appended there with Return-Path and Envelope-to. `sendmail` is a wrapper
/// that adds `-C` and `-odi` (deliver before returning) to what the Mailer passes.
///
/// exim gives up root for a `-C` file outside its trusted list, so for a user who isn't root it
/// runs as that user, who must then be its `exim_user`. As root it keeps root, but never
/// delivers as root: the folder then belongs to the Debian-exim user, its `exim_user`.
struct PrivateExim {
  static let binary = "/usr/sbin/exim4"

  let directory: String
  let sendmail: String
  /// Touched by the wrapper, so a test can tell whether exim was run at all.
  var ran: String { directory + "/ran" }
  var mbox: String { directory + "/mbox" }

  init() throws {
    guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
      throw TestSetupError("\(Self.binary) is missing: install exim4-daemon-light (ops/test does)")
    }
    directory = try scratchDirectory("exim")
    var user = (uid: getuid(), gid: getgid())
    if user.uid == 0 {
      guard let entry = getpwnam("Debian-exim") else { throw TestSetupError("no Debian-exim user") }
      user = (entry.pointee.pw_uid, entry.pointee.pw_gid)
      guard chown(directory, user.uid, user.gid) == 0 else { throw TestSetupError("chown \(directory) failed") }
    }
    let configuration = """
      exim_user = \(user.uid)
      exim_group = \(user.gid)
      primary_hostname = desk.test
      qualify_domain = desk.test
      spool_directory = \(directory)/spool
      log_file_path = \(directory)/%slog
      keep_environment =
      untrusted_set_sender = *
      local_from_check = false

      begin routers
      everyone:
        driver = accept
        transport = mbox

      begin transports
      mbox:
        driver = appendfile
        file = \(directory)/mbox
        return_path_add
        envelope_to_add

      """
    try configuration.write(toFile: directory + "/exim.conf", atomically: true, encoding: .utf8)
    sendmail = try script(
      "touch '\(directory)/ran'\nexec \(Self.binary) -C '\(directory)/exim.conf' -odi \"$@\"", in: directory,
      name: "sendmail")
  }

  /// What Python's email parser reads in the mbox: one object per message.
  func mailbox() throws -> [[String: Any]] {
    guard FileManager.default.fileExists(atPath: mbox) else { return [] }
    let reader = """
      import email, email.policy, json, mailbox, sys
      box = mailbox.mbox(sys.argv[1], factory=lambda f: email.message_from_binary_file(f, policy=email.policy.default))
      print(json.dumps([{
          "return_path": m["Return-path"], "envelope_to": m["Envelope-to"], "subject": m["Subject"],
          "to": [a.addr_spec for a in m["To"].addresses]} for m in box]))
      """
    let out = try Tool.run(["python3", "-c", reader, mbox], binary: "/usr/bin/env")
    guard out.status == 0 else { throw TestSetupError("python3 could not read the mbox: \(out.stderr)") }
    return try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [[String: Any]] ?? []
  }

  /// As root, always (CI runs as root, and it must work there); otherwise when a message sent
  /// through the wrapper arrives.
  static var usable: Bool {
    guard getuid() != 0 else { return true }
    guard let exim = try? PrivateExim(),
      let out = try? Tool.run(
        ["-oi", "-f", "probe@desk.test", "--", "probe@desk.test"], stdin: "Subject: probe\n\nprobe\n",
        binary: exim.sendmail),
      out.status == 0
    else { return false }
    return (try? exim.mailbox().count) == 1
  }
}
