import Postgres

/// What a purge of spent secrets cleared.
public struct SpentSecretsPurge: Sendable {
  /// Hashes of activation links that were used, revoked or expired.
  public var links = 0
  /// Hashes and salts of codes that were used, failed, cancelled, replaced or expired.
  public var codes = 0
  /// Hashes of the codes people tried, a day on.
  public var tries = 0
  /// Texts of messages that ended more than a day ago.
  public var bodies = 0
  public var batches = 0
  /// False when `maxRuntime` ended the run first; the next run carries on.
  public var complete = false
}

/// The nightly clean-up of secrets no one can use any more: the hashes of spent links and codes
/// and the texts of old messages are cleared, in short transactions; the rows stay as history.
public enum SpentSecrets {
  static let action = DeskAction("clearing spent secrets", tier: .batch)

  /// Clears `batchSize` rows of each kind per transaction until none is left, or until
  /// `maxRuntime` seconds have passed.
  ///
  /// - Throws: `DeskError` 77 without hms2fa_batch, 69 when the database is lost (the batches
  ///   done stay done).
  public static func purge(batchSize: Int, maxRuntime: Double?, on db: Connection) throws(DeskError)
    -> SpentSecretsPurge
  {
    var purge = SpentSecretsPurge()
    let start = DeliveryProgram.monotonicSeconds()
    while true {
      let row = try desk(action, on: db) {
        let purge: Query = "SELECT links, codes, tries, bodies FROM hms2fa_api.purge_spent_secrets(\(batchSize))"
        return try db.queryFirst(purge)
      }
      let cleared: [Int]
      do {
        cleared = try ["links", "codes", "tries", "bodies"].map { try row?.decode($0, as: Int.self) ?? 0 }
      } catch {
        throw deskError(error)
      }
      purge.links += cleared[0]
      purge.codes += cleared[1]
      purge.tries += cleared[2]
      purge.bodies += cleared[3]
      purge.batches += 1
      if cleared.allSatisfy({ $0 < batchSize }) {
        purge.complete = true
        return purge
      }
      if let maxRuntime, DeliveryProgram.monotonicSeconds() - start >= maxRuntime { return purge }
    }
  }
}
