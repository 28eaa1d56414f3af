#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Where output goes: a readable text on stdout, or with `--json` exactly one JSON document on
/// stdout; messages and errors on stderr.
public struct Console {
  public var json: Bool

  public init(json: Bool) {
    self.json = json
  }

  public static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
  public static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }

  /// Whether stdout already carries the one JSON document of this process.
  nonisolated(unsafe) private static var documentPrinted = false

  /// Prints the result: `document` with --json, else `text()`, its lines made safe for a
  /// terminal (values from the database or a child process may hold escape sequences).
  public func emit(_ document: JSONValue, text: () -> String) {
    if json {
      print(document.text)
      Console.documentPrinted = true
    } else {
      let body = text()
      if !body.isEmpty { Screen.show(Screen.painted(Console.visibleLines(body))) }
    }
  }

  /// A progress or information line for a person: stderr, never mixed into JSON.
  public func note(_ line: String) {
    writeStderr(Console.visibleLines(line) + "\n")
  }

  /// The failure on stderr; with --json also as the document on stdout, unless the command had
  /// already printed its result (`audit verify` finding tampering): one document, never two.
  public func fail(_ error: DeskError) {
    writeStderr("hms2fa-admin: \(Console.oneLine(error.message))\n")
    if json && !Console.documentPrinted {
      Console.documentPrinted = true
      print(
        JSONValue.object([
          (
            "error",
            .object([
              ("exit_code", .int(Int64(error.status.rawValue))), ("message", .string(Console.oneLine(error.message))),
            ])
          )
        ]).text)
    }
  }

  /// Reports a failed command (a desk error, or a database error as the desk reads it) and
  /// returns the exit status the contract gives it.
  public func report(_ error: any Error) -> Int32 {
    let desk = deskError(error)
    fail(desk)
    return desk.status.rawValue
  }

  public func writeStderrPublic(_ text: String) { writeStderr(text) }

  private func writeStderr(_ text: String) {
    fflush(nil)
    var bytes = Array(text.utf8)
    bytes.withUnsafeMutableBytes { raw in
      var offset = 0
      while offset < raw.count {
        let written = write(STDERR_FILENO, raw.baseAddress.map { $0 + offset }, raw.count - offset)
        if written <= 0 { break }
        offset += written
      }
    }
  }
}

/// Lays out rows in aligned columns. On a terminal the table fits its width (the widest columns
/// are cut, ending in "…") unless `--wide`; the STATE and STATUS columns are painted.
public func table(_ header: [String], _ rows: [[String]], indent: String = "") -> String {
  var header = header
  // A cell longer than a screen's share is cut in the text layout (never in --json).
  var rows = rows.map { row in
    row.map { cell in cell.count > maximumCellWidth ? String(cell.prefix(maximumCellWidth - 1)) + "…" : cell }
  }
  var widths = header.map(\.count)
  for row in rows {
    for (i, cell) in row.enumerated() where i < widths.count {
      widths[i] = max(widths[i], cell.count)
    }
  }
  if let screen = Screen.width {
    // Narrow the widest column of text a character at a time, down to 5, until it fits (its
    // header cut too); ids, numbers, states and times are never cut.
    let floor = header.indices.map { i in cuttableColumns.contains(header[i]) ? 5 : widths[i] }
    while indent.count + widths.reduce(0, +) + 2 * (widths.count - 1) > screen,
      let widest = widths.indices.filter({ widths[$0] > floor[$0] }).max(by: { widths[$0] < widths[$1] })
    {
      widths[widest] -= 1
    }
    rows = rows.map { row in
      row.enumerated().map { i, cell in
        i < widths.count && cell.count > widths[i] ? String(cell.prefix(widths[i] - 1)) + "…" : cell
      }
    }
    header = header.enumerated().map { i, cell in
      cell.count > widths[i] ? String(cell.prefix(widths[i] - 1)) + "…" : cell
    }
  }
  let painted = Set(header.indices.filter { ["STATE", "STATUS", "ENROLLMENT"].contains(header[$0]) })
  func line(_ cells: [String]) -> String {
    var out = indent
    for (i, cell) in cells.enumerated() {
      let isLast = i == cells.count - 1
      let text = painted.contains(i) && cells != header ? Screen.paint(cell) : cell
      out +=
        isLast || i >= widths.count ? text : text + String(repeating: " ", count: max(widths[i] - cell.count, 0) + 2)
    }
    return out
  }
  return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// The columns a table may cut to fit a terminal: free text, never ids, numbers, states or times.
let cuttableColumns: Set<String> = [
  "LABEL", "NAME", "EMAIL", "REASON", "DETAILS", "RETIRED", "BROWSER", "LAST ERROR", "ERROR", "ACTOR",
  "TICKET", "KIND", "PLATFORM", "SENT BY", "REQUESTED BY", "RECIPIENT", "APPROVAL NEEDED",
]

/// The widest a table cell is shown in text; longer ones end in "…".
public let maximumCellWidth = 60

/// A titled list for a text view: `title: none` (or `empty`) without rows, else `title:` with
/// the table under it, indented two spaces further.
public func titledTable(
  _ title: String, _ header: [String], _ rows: [[String]], indent: String = "", empty: String = "none"
) -> String {
  rows.isEmpty ? "\(indent)\(title): \(empty)" : "\(indent)\(title):\n" + table(header, rows, indent: indent + "  ")
}

/// Shows a value for a person: control and invisible characters made visible.
public func shown(_ text: String?) -> String {
  guard let text else { return "-" }
  return visible(text, keepingLineBreaks: false)
}

/// `text` with every character a terminal would act on, or a reader could not see, written as
/// `\u{…}`: C0 and C1 controls (ESC, CSI), DEL, line and paragraph separators, zero-width and
/// direction marks, the byte order mark. Line feeds (and tabs) stay when `keepingLineBreaks`.
public func visible(_ text: String, keepingLineBreaks: Bool, keepingPaint: Bool = false) -> String {
  func hidden(_ value: UInt32) -> Bool {
    if keepingLineBreaks && (value == 0x0A || value == 0x09) { return false }
    // The marks of `Screen.paint`: no value may carry them, only the tool's own output.
    if Screen.marks.contains(value) { return !keepingPaint }
    return value < 0x20 || (0x7F...0x9F).contains(value) || (0x200B...0x200F).contains(value)
      || (0x2028...0x202E).contains(value) || (0x2066...0x2069).contains(value) || value == 0xFEFF
  }
  guard text.unicodeScalars.contains(where: { hidden($0.value) }) else { return text }
  var out = ""
  for scalar in text.unicodeScalars {
    out += hidden(scalar.value) ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar)
  }
  return out
}

extension Console {
  /// Text of several lines for a terminal: each line as `shown` would write it.
  public static func visibleLines(_ text: String) -> String {
    visible(text, keepingLineBreaks: true, keepingPaint: true)
  }

  /// A message as one readable line of bounded length, whatever input it quotes: control and
  /// invisible characters made visible, at most `limit` characters.
  public static func oneLine(_ message: String, limit: Int = 400) -> String {
    let visible = shown(message)
    guard visible.count > limit else { return visible }
    return String(visible.prefix(limit)) + "…"
  }
}
