import Foundation

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

/// The terminal text output goes to, if any: its width (tables fit it), colour for states, and a
/// pager for output longer than the screen. Piped output, `--json`, `--wide`, `NO_COLOR` and
/// `TERM=dumb` each turn the matching part off.
public enum Screen {
  /// `--wide` on the command line: tables show every cell whole.
  public static var wide: Bool { CommandLine.arguments.dropFirst().contains("--wide") }

  /// The marks around a painted word, in text before it is written: private-use characters no value can
  /// carry (`visible` escapes them), turned into colour or dropped as the output is written.
  static let marks: ClosedRange<UInt32> = 0xE000...0xE003
  static let stop: Character = "\u{E000}"
  static let colours: [(mark: Character, sgr: String, words: Set<String>)] = [
    ("\u{E001}", "32", ["active", "sent", "verified", "used", "approved", "ok", "enrolled"]),
    ("\u{E002}", "33", ["pending", "queued", "sending", "expired", "pending_approval", "not_enrolled"]),
    ("\u{E003}", "31", ["disabled", "retired", "revoked", "failed", "cancelled", "withdrawn", "locked", "superseded"]),
  ]

  /// The terminal's columns, when stdout is one and `--wide` wasn't given.
  public static var width: Int? {
    guard !wide, Console.stdoutIsTerminal else { return nil }
    return size.columns
  }

  /// Whether states are painted: stdout is a terminal, `NO_COLOR` is unset or empty, `TERM` isn't dumb.
  public static var colour: Bool {
    Console.stdoutIsTerminal && (environmentVariable("NO_COLOR") ?? "").isEmpty && environmentVariable("TERM") != "dumb"
  }

  static var size: (columns: Int, rows: Int) {
    var window = winsize()
    if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &window) == 0, window.ws_col > 0 {
      return (Int(window.ws_col), Int(window.ws_row))
    }
    return (Int(environmentVariable("COLUMNS") ?? "") ?? 80, Int(environmentVariable("LINES") ?? "") ?? 24)
  }

  /// `word` marked with its state's colour (none for a word that isn't a state).
  public static func paint(_ word: String) -> String {
    guard let colour = colours.first(where: { $0.words.contains(word.lowercased()) }) else { return word }
    return "\(colour.mark)\(word)\(stop)"
  }

  /// `text` with its marks turned into colour on a terminal, or dropped.
  static func painted(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: { marks.contains($0.value) }) else { return text }
    let on = colour
    var out = ""
    for character in text {
      if character == stop {
        if on { out += "\u{1B}[0m" }
      } else if let colour = colours.first(where: { $0.mark == character }) {
        if on { out += "\u{1B}[\(colour.sgr)m" }
      } else {
        out.append(character)
      }
    }
    return out
  }

  /// Writes `text` and a line end to stdout: through `$PAGER` (else `less -FRX`) when stdout is
  /// a terminal and the text is longer than its height; `PAGER=` empty or `cat` writes it as is.
  static func show(_ text: String) {
    let pager = environmentVariable("PAGER") ?? "less -FRX"
    let lines = text.reduce(1) { $1 == "\n" ? $0 + 1 : $0 }
    guard Console.stdoutIsTerminal, !pager.trimmingASCIISpaces().isEmpty, pager != "cat", lines >= size.rows - 1 else {
      print(text)
      return
    }
    fflush(nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", pager]
    let input = Pipe()
    process.standardInput = input
    do {
      try process.run()
    } catch {
      print(text)
      return
    }
    // A pager that quits early (q) closes the pipe: the rest is not wanted.
    signal(SIGPIPE, SIG_IGN)
    try? input.fileHandleForWriting.write(contentsOf: Data((text + "\n").utf8))
    try? input.fileHandleForWriting.close()
    process.waitUntilExit()
  }
}
