import HelpDesk

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif

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
