/// The columns of a result: names and type OIDs, shared by its rows.
public struct ColumnSet: Sendable {
  public let names: [String]
  public let types: [UInt32]

  init(names: [String], types: [UInt32]) {
    self.names = names
    self.types = types
  }

  /// The first column with this name. A linear search: results have a handful of columns, and a
  /// dictionary here was the first `[String: Int]` of every process, whose type metadata the
  /// Swift runtime builds at run time, a measurable part of `user show`'s start-up.
  func index(of name: String) -> Int? { names.firstIndex(of: name) }
}

/// One row of a result, its values still in PostgreSQL's binary format.
public struct Row: Sendable {
  public let columns: ColumnSet
  let values: [[UInt8]?]

  init(columns: ColumnSet, values: [[UInt8]?]) {
    self.columns = columns
    self.values = values
  }

  /// Decodes the named column.
  ///
  /// Throws a `.decoding` error naming the column, the Swift type and the PostgreSQL type when
  /// the column is missing, NULL for a non-optional type, or of an incompatible type.
  public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws(PostgresError) -> T {
    guard let index = columns.index(of: column) else {
      throw PostgresError(.decoding, message: "the result has no column \"\(column)\"")
    }
    return try decode(at: index, as: type)
  }

  /// Decodes the column at `index` (0-based).
  public func decode<T: PostgresDecodable>(at index: Int, as type: T.Type = T.self) throws(PostgresError) -> T {
    guard values.indices.contains(index) else {
      throw PostgresError(.decoding, message: "the result has no column number \(index + 1)")
    }
    do {
      if let bytes = values[index] {
        return try T.decode(bytes[...], type: columns.types[index])
      }
      return try T.decodeNull()
    } catch {
      throw PostgresError(
        .decoding,
        message: "column \"\(columns.names[index])\" (\(PostgresType.name(of: columns.types[index]))) "
          + "cannot be read as \(T.self): \(error.reason)")
    }
  }

  /// True when the named column is SQL NULL.
  public func isNull(_ column: String) -> Bool {
    guard let index = columns.index(of: column) else { return true }
    return values[index] == nil
  }
}
