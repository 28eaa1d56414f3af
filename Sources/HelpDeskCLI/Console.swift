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

  /// Whether stdout already carries the one JSON document of this process.
  nonisolated(unsafe) private static var documentPrinted = false

  /// Prints the result: `document` with --json, else `text()`, its lines made safe for a
  /// terminal (values from the database or a child process may hold escape sequences).
  func emit(_ document: JSONValue, text: () -> String) {
    if json {
      print(document.text)
      Console.documentPrinted = true
    } else {
      let body = text()
      if !body.isEmpty { print(Console.visibleLines(body)) }
    }
  }

  /// A progress or information line for a person: stderr, never mixed into JSON.
  func note(_ line: String) {
    writeStderr(Console.visibleLines(line) + "\n")
  }

  /// The failure on stderr; with --json also as the document on stdout, unless the command had
  /// already printed its result (`audit verify` finding tampering): one document, never two.
  func fail(_ error: DeskError) {
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

/// A titled list for a text view: `title: none` (or `empty`) without rows, else `title:` with
/// the table under it, indented two spaces further.
func titledTable(
  _ title: String, _ header: [String], _ rows: [[String]], indent: String = "", empty: String = "none"
) -> String {
  rows.isEmpty ? "\(indent)\(title): \(empty)" : "\(indent)\(title):\n" + table(header, rows, indent: indent + "  ")
}

/// Shows a value for a person: control and invisible characters made visible.
func shown(_ text: String?) -> String {
  guard let text else { return "-" }
  return visible(text, keepingLineBreaks: false)
}

/// `text` with every character a terminal would act on, or a reader could not see, written as
/// `\u{…}`: C0 and C1 controls (ESC, CSI), DEL, line and paragraph separators, zero-width and
/// direction marks, the byte order mark. Line feeds (and tabs) stay when `keepingLineBreaks`.
func visible(_ text: String, keepingLineBreaks: Bool) -> String {
  func hidden(_ value: UInt32) -> Bool {
    if keepingLineBreaks && (value == 0x0A || value == 0x09) { return false }
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
  /// One line from stdin; on a terminal, after a prompt on stderr and without echo. Ctrl-C (or
  /// a hang-up, a kill) while it waits puts echo back before the process ends.
  static func readSecretLine(prompt: String) -> String? {
    let terminal = isatty(STDIN_FILENO) == 1
    var saved = termios()
    var previous: [(Int32, sigaction)] = []
    if terminal {
      Console(json: false).writeStderrPublic(prompt)
      tcgetattr(STDIN_FILENO, &saved)
      savedTerminal.pointee = saved
      for signalNumber in [SIGINT, SIGTERM, SIGHUP, SIGQUIT] {
        if let old = catchOnce(signalNumber, with: restoreTerminalAndDie) { previous.append((signalNumber, old)) }
      }
      var quiet = saved
      quiet.c_lflag &= ~tcflag_t(ECHO)
      tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
    }
    defer {
      if terminal {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved)
        for (signalNumber, old) in previous {
          var old = old
          sigaction(signalNumber, &old, nil)
        }
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

/// The terminal's settings before the secret prompt turned echo off, for the signal handler:
/// plain memory, allocated (on first use, before any handler is installed) so that the handler
/// reads it without Swift's runtime.
nonisolated(unsafe) private let savedTerminal: UnsafeMutablePointer<termios> = {
  let settings = UnsafeMutablePointer<termios>.allocate(capacity: 1)
  settings.initialize(to: termios())
  return settings
}()

/// Restores the terminal, then lets the signal do what it would have done: the handler was
/// installed with SA_RESETHAND, so raising it again ends the process as the signal's default
/// action does. Only async-signal-safe calls (tcsetattr, write, raise) on plain memory.
private func restoreTerminalAndDie(_ signalNumber: Int32) {
  tcsetattr(STDIN_FILENO, TCSANOW, savedTerminal)
  var newline = UInt8(ascii: "\n")
  _ = write(STDERR_FILENO, &newline, 1)
  raise(signalNumber)
}

extension Console {
  /// One line from stdin after a prompt on stderr (with echo); nil at end of input.
  static func readLine(prompt: String) -> String? {
    Console(json: false).writeStderrPublic(prompt)
    return Swift.readLine(strippingNewline: true)
  }
}

extension Console {
  /// Text of several lines for a terminal: each line as `shown` would write it.
  static func visibleLines(_ text: String) -> String {
    visible(text, keepingLineBreaks: true)
  }

  /// A message as one readable line of bounded length, whatever input it quotes: control and
  /// invisible characters made visible, at most `limit` characters.
  static func oneLine(_ message: String, limit: Int = 400) -> String {
    let visible = shown(message)
    guard visible.count > limit else { return visible }
    return String(visible.prefix(limit)) + "…"
  }
}
