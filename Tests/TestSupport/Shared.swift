import Foundation
import Testing

/// A value shared between the threads of a test.
public final class Locked<Value>: @unchecked Sendable {
  private let lock = NSLock()
  private var stored: Value
  public init(_ value: Value) { stored = value }
  public var value: Value { lock.withLock { stored } }
  public func update(_ change: (inout Value) -> Void) { lock.withLock { change(&stored) } }
}

/// The JSON object a command printed with `--json`.
public func jsonObject(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
  try #require(
    try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], sourceLocation: sourceLocation)
}
