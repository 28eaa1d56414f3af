import Postgres

/// Everything the desk sees about one person, as the database composed it.
public struct AccountCard: Sendable {
  /// The card as JSON, with the contract's field names: what `user show --json` prints.
  public let json: String
  public let account: Account

  public struct Account: Sendable {
    public var accountId: String
    public var displayName: String
    public var email: String
    public var status: String
    public var highRisk: Bool
    public var loginAction: String
    public var createdAt: String
    public var enrollment: Enrollment
    public var startSetupVisible: Bool
    public var devices: [Device]
    public var rememberedBrowsers: RememberedBrowsers
    public var activationLinks: [ActivationLink]?
    public var recentAudit: [AuditEntry]
  }

  public struct Device: Sendable {
    public var deviceId: Int64
    public var kind: String
    public var platform: String?
    public var phone: String?
    public var label: String?
    public var state: String
    public var isDefault: Bool
    public var activatedAt: String?
    public var createdAt: String
    public var lastUsedAt: String?
    public var retiredAt: String?
    public var retiredReason: String?
  }

  public struct RememberedBrowsers: Sendable {
    public var active: Int
    public var expired: Int
    public var revoked: Int
  }

  public struct ActivationLink: Sendable {
    public var linkId: Int64
    public var deviceId: Int64
    public var sentAt: String
    public var expiresAt: String
  }

  public struct AuditEntry: Sendable {
    public var eventId: Int64
    public var at: String
    public var actor: String
    public var action: String
    public var ticket: String?
    public var reason: String?
  }
}

extension AccountCard.Account {
  init(_ card: JSONFields) throws {
    accountId = try card.string("account_id")
    displayName = try card.string("display_name")
    email = try card.string("email")
    status = try card.string("status")
    highRisk = try card.bool("high_risk")
    loginAction = try card.string("login_action")
    createdAt = try card.string("created_at")
    let enrollmentName = try card.string("enrollment")
    guard let enrollment = Enrollment(rawValue: enrollmentName) else {
      throw JSONFields.Mismatch(description: "card.enrollment \(quoted(enrollmentName)) is not a known state")
    }
    self.enrollment = enrollment
    startSetupVisible = try card.bool("start_setup_visible")
    devices = try card.array("devices").map { d in
      AccountCard.Device(
        deviceId: try d.int("device_id"), kind: try d.string("kind"), platform: try d.optionalString("platform"),
        phone: try d.optionalString("phone"), label: try d.optionalString("label"), state: try d.string("state"),
        isDefault: try d.bool("is_default"), activatedAt: try d.optionalString("activated_at"),
        createdAt: try d.string("created_at"), lastUsedAt: try d.optionalString("last_used_at"),
        retiredAt: try d.optionalString("retired_at"), retiredReason: try d.optionalString("retired_reason"))
    }
    let browsers = try card.object("remembered_browsers")
    rememberedBrowsers = AccountCard.RememberedBrowsers(
      active: Int(try browsers.int("active")), expired: Int(try browsers.int("expired")),
      revoked: Int(try browsers.int("revoked")))
    activationLinks = try card.optionalArray("activation_links")?.map { l in
      AccountCard.ActivationLink(
        linkId: try l.int("link_id"), deviceId: try l.int("device_id"), sentAt: try l.string("sent_at"),
        expiresAt: try l.string("expires_at"))
    }
    recentAudit = try card.array("recent_audit").map { e in
      AccountCard.AuditEntry(
        eventId: try e.int("event_id"), at: try e.string("at"), actor: try e.string("actor"),
        action: try e.string("action"), ticket: try e.optionalString("ticket"), reason: try e.optionalString("reason"))
    }
  }
}

/// One line of `user find`.
public struct AccountSummary: Sendable {
  public var accountId: String
  public var displayName: String
  public var email: String
  public var status: String
  public var enrollment: Enrollment
}

/// An account's enrollment, derived by the database from its devices (CONTRACT §1).
public enum Enrollment: String, Sendable, PostgresTextState {
  case enrolled, pending
  case notEnrolled = "not_enrolled"
}

/// Looking people up: `user show` and `user find`.
public enum Lookup {
  /// The card of the person with this account id or email of record.
  ///
  /// - Throws: `DeskError` 67 when nobody has it, 65 when an email is on several accounts,
  ///   77 when the login has no tier, 69 when the database is unreachable.
  public static func card(for key: AccountKey, on db: Connection) throws(DeskError) -> AccountCard {
    let json = try desk(.lookup, on: db) {
      let card: Query = "SELECT hms2fa_api.account_card(\(key.text))::text AS card"
      return try db.queryFirst(card)?.decode("card", as: String?.self)
    }
    guard let json else { throw NoSuchAccount.error(key.text, on: db) }
    do {
      return AccountCard(json: json, account: try AccountCard.Account(try JSONFields(json, named: "card")))
    } catch {
      throw DeskError(.software, "internal error: the account card did not decode: \(error)")
    }
  }

  /// People whose account id, email or name starts with `text` (case-insensitive), whose name
  /// has it as a word (a surname), or, for a phone number, with a device in use on it.
  ///
  /// - Throws: `DeskError` 64 for empty or over-long text, 67 when nobody matches.
  public static func find(_ text: String, limit: Int = 50, on db: Connection) throws(DeskError) -> [AccountSummary] {
    let trimmed = text.trimmingASCIISpaces()
    guard !trimmed.isEmpty else { throw .usage("say what to search for: the start of an account id, email or name") }
    guard trimmed.unicodeScalars.count <= 254 else {
      throw .usage("the search text is too long (at most 254 characters)")
    }
    guard !trimmed.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
      throw .usage("the search text contains control characters")
    }
    guard (1...1000).contains(limit) else { throw .usage("--limit must be between 1 and 1000") }
    // A phone number, however it is written, is searched for as the E.164 of a device in use.
    let number = PhoneNumber.looksLikeOne(trimmed) ? (try? PhoneNumber(parsing: trimmed))?.e164 : nil
    let search = number ?? trimmed
    let matches = try desk(.lookup, on: db) {
      try db.query(
        """
        SELECT account_id, display_name, email, status, enrollment
          FROM hms2fa_api.find_accounts(\(search), \(limit))
        """
      ).map { row in
        AccountSummary(
          accountId: try row.decode("account_id"), displayName: try row.decode("display_name"),
          email: try row.decode("email"), status: try row.decode("status"),
          enrollment: try row.decode("enrollment"))
      }
    }
    guard !matches.isEmpty else {
      if number != nil {
        throw .noSuchAccount(
          "no device in use has the number \(search); hms2fa-admin phone owner \(search) says who had it")
      }
      throw .noSuchAccount(
        "nobody's account id, email or name starts with \(quoted(trimmed)), and no name has it as a word")
    }
    return matches
  }
}

/// The one "no such account" message of every command: the id or email asked for and, when the
/// login may look people up, up to three ids close to it (one or two letters off), to read back
/// to the caller.
public enum NoSuchAccount {
  public static func error(_ key: String, on db: Connection?) -> DeskError {
    let close = db.map { closeIDs(to: key, on: $0) } ?? []
    let shown = quoted(key)
    let what = key.contains("@") ? "email of record" : "HMS Account ID"
    if close.isEmpty {
      return .noSuchAccount("no account has the \(what) \(shown); look for them with hms2fa-admin user find")
    }
    return .noSuchAccount(
      "no account has the \(what) \(shown); close: \(close.joined(separator: ", ")) "
        + "(hms2fa-admin user show \(close[0]))")
  }

  /// Up to three account ids within two edits of `key` (its local part, for an email), among
  /// those sharing its first two characters; none when the login may not look people up.
  static func closeIDs(to key: String, on db: Connection) -> [String] {
    let wanted = (key.split(separator: "@").first.map(String.init) ?? key).lowercased()
    guard wanted.unicodeScalars.count >= 2, wanted.unicodeScalars.count <= 64 else { return [] }
    let prefix = String(wanted.prefix(2))
    let near: Query = "SELECT account_id FROM hms2fa_api.find_accounts(\(prefix), 1000)"
    let rows = try? db.query(near)
    let ids = (rows ?? []).compactMap { try? $0.decode("account_id", as: String.self) }
    return
      ids
      .map { ($0, editDistance(wanted, $0)) }
      .filter { $0.1 <= 2 && $0.0 != wanted }
      .sorted { ($0.1, $0.0) < ($1.1, $1.0) }
      .prefix(3).map(\.0)
  }
}

/// The edit distance between two short words: insertions, deletions, substitutions, and
/// swapping two neighbours (the commonest typo).
package func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a.unicodeScalars.prefix(64))
  let b = Array(b.unicodeScalars.prefix(64))
  guard !a.isEmpty else { return b.count }
  guard !b.isEmpty else { return a.count }
  var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
  for i in 0...a.count { table[i][0] = i }
  for j in 0...b.count { table[0][j] = j }
  for i in 1...a.count {
    for j in 1...b.count {
      let cost = a[i - 1] == b[j - 1] ? 0 : 1
      var best = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
      if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
        best = min(best, table[i - 2][j - 2] + 1)
      }
      table[i][j] = best
    }
  }
  return table[a.count][b.count]
}
