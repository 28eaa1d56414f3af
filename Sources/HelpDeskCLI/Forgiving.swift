import ArgumentParser
import HelpDesk

/// Choices typed in any case (`--via SMS`, `--verified-via In-Person`); an unknown one is
/// refused with the list of choices (CaseIterable).
public protocol CaseInsensitiveChoice: ExpressibleByArgument, CaseIterable, RawRepresentable where RawValue == String {}

extension CaseInsensitiveChoice {
  public init?(argument: String) {
    self.init(rawValue: argument.lowercased())
  }
}

extension IdentityVerification: CaseInsensitiveChoice {}
extension PhoneMessage.Channel: CaseInsensitiveChoice {}
extension Tier: CaseInsensitiveChoice {}

/// A command line whose command words name no command, and the closest that does: `user shwo`
/// gets "did you mean 'show'?" rather than "2 unexpected arguments".
enum CommandSuggestion {
  /// The one line to refuse `arguments` with, or nil when their command words are all commands
  /// (what follows is left to the parser).
  static func problem(in arguments: [String], root: ParsableCommand.Type = AdminCommand.self) -> String? {
    var command = root
    var path = [root._commandName]
    for word in arguments {
      let subcommands = command.configuration.subcommands
      guard !word.hasPrefix("-"), !subcommands.isEmpty, command.configuration.defaultSubcommand == nil,
        word != "help"
      else { return nil }
      if let next = subcommands.first(where: { $0._commandName == word || $0.configuration.aliases.contains(word) }) {
        command = next
        path.append(word)
        continue
      }
      let names = subcommands.map { $0._commandName }
      let close = names.map { ($0, editDistance(word.lowercased(), $0)) }.filter { $0.1 <= 2 }.min { $0.1 < $1.1 }
      let shown = String(word.unicodeScalars.prefix(40).filter { $0.value >= 0x20 && $0.value < 0x7F })
      let guess = close.map { "; did you mean '\($0.0)'?" } ?? ""
      return "'\(shown)' is not a command of \(path.joined(separator: " "))\(guess) (commands: "
        + names.joined(separator: ", ") + ")"
    }
    return nil
  }
}
