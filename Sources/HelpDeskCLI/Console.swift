import HelpDesk

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// Where output goes: a readable text on stdout, or with `--json` exactly one JSON document on
/// stdout; messages and errors on stderr.
struct Console {
  var json: Bool

  init(json: Bool) {
    self.json = json
  }

  static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }
  static var stdinIsTerminal: Bool { isatty(STDIN_FILENO) == 1 }

  /// Prints the result: `document` with --json, else `text()`.
  func emit(_ document: JSONValue, text: () -> String) {
    if json {
      print(document.text)
    } else {
      let body = text()
      if !body.isEmpty { print(body) }
    }
  }

  /// A progress or information line for a person: stderr, never mixed into JSON.
  func note(_ line: String) {
    writeStderr(line + "\n")
  }

  func fail(_ error: DeskError) {
    writeStderr("hms2fa-admin: \(Console.oneLine(error.message))\n")
    if json {
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

  func writeStderrPublic(_ text: String) { writeStderr(text) }

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

/// Lays out rows in aligned columns.
func table(_ header: [String], _ rows: [[String]], indent: String = "") -> String {
  var widths = header.map(\.count)
  for row in rows {
    for (i, cell) in row.enumerated() where i < widths.count {
      widths[i] = max(widths[i], cell.count)
    }
  }
  func line(_ cells: [String]) -> String {
    var out = indent
    for (i, cell) in cells.enumerated() {
      let isLast = i == cells.count - 1
      out += isLast ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 2)
    }
    return out
  }
  return ([line(header)] + rows.map(line)).joined(separator: "\n")
}

/// Shows a value for a person: control and invisible characters made visible.
func shown(_ text: String?) -> String {
  guard let text else { return "-" }
  var out = ""
  for scalar in text.unicodeScalars {
    let invisible =
      scalar.value < 0x20 || scalar.value == 0x7F || (0x200B...0x200F).contains(scalar.value)
      || (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
    out += invisible ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar)
  }
  return out
}

extension Console {
  /// One line from stdin; on a terminal, after a prompt on stderr and without echo.
  static func readSecretLine(prompt: String) -> String? {
    let terminal = isatty(STDIN_FILENO) == 1
    var saved = termios()
    if terminal {
      Console(json: false).writeStderrPublic(prompt)
      tcgetattr(STDIN_FILENO, &saved)
      var quiet = saved
      quiet.c_lflag &= ~tcflag_t(ECHO)
      tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
    }
    defer {
      if terminal {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
        Console(json: false).writeStderrPublic("\n")
      }
    }
    var bytes: [UInt8] = []
    var byte: UInt8 = 0
    while bytes.count < 256, read(STDIN_FILENO, &byte, 1) == 1 {
      if byte == 0x0A { break }
      bytes.append(byte)
    }
    if bytes.last == 0x0D { bytes.removeLast() }
    return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
  }
}

extension Console {
  /// One line from stdin after a prompt on stderr (with echo); nil at end of input.
  static func readLine(prompt: String) -> String? {
    Console(json: false).writeStderrPublic(prompt)
    return Swift.readLine(strippingNewline: true)
  }
}

extension Console {
  /// A message as one readable line of bounded length, whatever input it quotes: control and
  /// invisible characters made visible, at most `limit` characters.
  static func oneLine(_ message: String, limit: Int = 400) -> String {
    let visible = shown(message)
    guard visible.count > limit else { return visible }
    return String(visible.prefix(limit)) + "…"
  }
}
